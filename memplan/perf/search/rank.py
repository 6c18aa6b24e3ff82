"""Ranking layouts, and saying why one beats another in terms of the step's parts.

The key is step time (`--by time`) or GPU-seconds per step (`--by cost`, which differs when GPU counts differ).
Exact ties prefer the larger micro-batch, then fewer moving parts (no offload, lower ZeRO stage, less
recomputation, no interleaving).  `compare(a, b)` names the parts of the step where b loses most to a.
"""
from __future__ import annotations

from memplan.perf.search.enumerate import RECOMPUTE_ORDER
from memplan.perf.step import StepResult
from memplan.spec.layout import Layout

PARTS = {
    "compute (GEMMs, attention, memory-bound ops)": lambda r: r.gemm + r.attention + r.memory,
    "exposed tensor-parallel communication": lambda r: r.tp_exposed,
    "pipeline bubble": lambda r: r.bubble,
    "pipeline sends": lambda r: r.p2p,
    "exposed data-parallel/ZeRO communication": lambda r: r.dp_exposed,
    "exposed context-parallel exchange": lambda r: r.cp_exposed,
    "exposed expert all-to-all": lambda r: r.ep_exposed,
    "optimizer step": lambda r: r.optimizer,
    "offload traffic": lambda r: r.offload_exposed,
}


def sort_key(step: float, L: Layout, by: str) -> tuple:
    key = step * L.gpus if by == "cost" else step
    moving = (L.offload_optimizer != "none") + (L.offload_params != "none")
    return (key, -L.micro_batch, moving, L.zero, RECOMPUTE_ORDER.index(L.recompute), L.virtual_stages)


def compare(a: StepResult, b: StepResult, top: int = 2) -> str:
    """'bubble +1.234 s, exposed tensor-parallel communication +0.456 s' (b minus a, largest first)."""
    diffs = sorted(((fn(b) - fn(a), name) for name, fn in PARTS.items()), key=lambda x: -abs(x[0]))
    shown = [f"{name} {d:+.3f} s" for d, name in diffs[:top] if abs(d) >= 5e-4]
    return ", ".join(shown) if shown else "the same parts within a millisecond"


def gap(a: float, b: float) -> str:
    return f"{b / a - 1:+.1%}" if a else "-"
