"""The table `memplan plan` prints (and a PlanResult's `.table()` and notebook view)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from memplan.spec.units import format_bytes, format_count

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.plan import Candidate, PlanResult


def _row(c: Candidate, label) -> list:
    L = c.layout
    off = "+".join(x for x, on in (("opt", L.offload_optimizer != "none"), ("params", L.offload_params != "none"))
                   if on) or "-"
    return [label, L.gpus, L.dp, L.tp, L.pp, L.virtual_stages, L.cp, L.ep, "y" if L.sequence_parallel else "-",
            L.zero, off, L.micro_batch, L.grad_accum, L.recompute, format_bytes(c.memory_required_bytes),
            format_bytes(c.cpu_memory_bytes) if c.cpu_memory_bytes else "-", f"{c.step_seconds:.3f}",
            f"{c.exposed_comm_seconds:.3f}", f"{c.bubble_seconds:.3f}", f"{c.mfu:.1%}", f"{c.days:,.1f}",
            f"${c.cost:,.0f}" if c.cost is not None else "-"]


def plan_table(r: PlanResult) -> str:
    counts = ", ".join(str(n) for n in r.gpus)
    head = [
        f"{r.model}: {r.parameters:,} parameters ({format_count(r.parameters)}) on {counts} x {r.gpu} "
        f"({format_bytes(r.gpu_memory_bytes)}), {r.precision}, global batch {r.global_batch} x seq {r.seq}, "
        f"execution {r.execution}",
    ]
    if r.min_gpus is not None:
        head.append(f"fewest GPUs that fit: {r.min_gpus}")
    head.append(f"searched {r.evaluated:,} strategies in {r.search_seconds:.2f} s ({r.candidates_per_second:,.0f}/s): "
                f"{r.pruned_by_bound:,} dropped by the model-state bound, {r.checked_full} full memory estimates, "
                f"{r.rejected_full} rejected ({r.skipped_dominated} by dominance, {r.rejected_cpu_memory} for CPU "
                "RAM)")
    rows = [_row(c, c.rank) for c in r.candidates]
    if r.reference is not None and r.reference.layout not in [c.layout for c in r.candidates]:
        rows.append(_row(r.reference, f"ref ({r.reference_rank if r.reference_rank is not None else 'does not fit'})"))
    table = tabulate(rows, headers=["#", "gpus", "dp", "tp", "pp", "v", "cp", "ep", "sp", "zero", "offload", "mb",
                                    "ga", "recompute", "memory/GPU", "CPU/node", "step s", "exposed comm s",
                                    "bubble s", "MFU", "days", "cost"])
    tail = [f"why: {w}" for w in r.why]
    if r.price_per_hour is None:
        price = "no price (use --price)"
    else:
        src = "--price" if r.price_source == "--price" else f"labelled default of the {r.gpu} profile"
        price = f"${r.price_per_hour:g}/GPU-hour ({src})"
    tail.append(f"days/cost: {r.steps:,} steps = {format_count(r.tokens or 0)} tokens at {price}")
    tail += [f"assumption: {a}" for a in r.assumptions]
    return "\n".join(head + ["", table, ""] + tail)
