"""The shapes a setup runs: every distinct GEMM (M, N, K, batch) and attention kernel of the op walk, with the ops
that run it.  `memplan bench --system` times exactly these on the user's GPU (measure/sweep.py), so the record
calibrates the walk on the shapes it will price."""
from __future__ import annotations

from dataclasses import dataclass

from memplan.perf.execution import execution_profile
from memplan.perf.ops import LayerWalk, embedding_phases, head_phases, make_context
from memplan.perf.step import attention_kernel
from memplan.spec.setup import TrainingSetup


@dataclass(frozen=True)
class GemmShape:
    M: int
    N: int
    K: int
    batch: int
    where: str


@dataclass(frozen=True)
class AttentionShape:
    batch: int
    heads: int
    kv_heads: int
    seq: int
    head_dim: int
    causal: bool
    where: str


def walk_shapes(setup: TrainingSetup, execution: str | None = None) -> tuple[list[GemmShape], list[AttentionShape]]:
    m, L = setup.model.arch, setup.layout
    ex = execution_profile(execution, L.engine)
    ctx = make_context(L, setup.seq, attention_kernel(setup.workload.attention), ex)
    gemms: dict[tuple, list[str]] = {}
    attn: dict[tuple, list[str]] = {}

    def add(ops, what):
        for o in ops:
            if o.kind in ("gemm", "attention"):
                gemms.setdefault((int(o.M), int(o.N), int(o.K), int(o.batch)), []).append(f"{what}: {o.name}")

    for gi, g in enumerate(m.groups):
        ph = LayerWalk(m, g.layer, ctx, ex).phases(L.recompute)
        what = f"layers {sum(x.count for x in m.groups[:gi])}-{sum(x.count for x in m.groups[:gi + 1]) - 1}"
        add(ph.fwd + ph.bwd, what)
        a = g.layer.attention
        if ctx.attention == "flash" and a.head_dim == a.value_dim:
            key = (L.micro_batch, max(1, a.heads // L.tp), max(1, a.kv_heads // L.tp), setup.seq // L.cp,
                   a.head_dim, a.causal)
            attn.setdefault(key, []).append(what)
    add(embedding_phases(m, ctx).fwd + head_phases(m, ctx, ex).fwd + head_phases(m, ctx, ex).bwd, "LM head")
    return ([GemmShape(*k, where="; ".join(dict.fromkeys(v))[:200]) for k, v in gemms.items()],
            [AttentionShape(*k, where="; ".join(v)[:200]) for k, v in attn.items()])
