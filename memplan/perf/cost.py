"""Pricing the walk: the ops of one phase (perf/ops.py) -> seconds by category, with overlap computed.

A collective that may hide under a group of GEMMs (its `under` tag) takes max(GEMMs x slowdown, collective) for
the pair: the GEMMs run slower while NCCL shares the SMs (Calculon's processor_usage), and only what the GEMMs
cannot cover is exposed.  The context-parallel exchange hides under the attention core the same way.  Every other
collective is on the critical path.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from memplan.perf.comm import Network
from memplan.perf.efficiency import Kernels
from memplan.perf.ops import PHASE, Op


@dataclass(frozen=True)
class Groups:
    """Sizes and ranks-per-node of the groups a layer's collectives run over."""

    tp: int = 1
    tp_per_node: int = 1
    cp: int = 1
    cp_per_node: int = 1
    ep: int = 1
    ep_per_node: int = 1

    def of(self, name: str) -> tuple[int, int]:
        return {"tp": (self.tp, self.tp_per_node), "cp": (self.cp, self.cp_per_node),
                "ep": (self.ep, self.ep_per_node)}[name]


@dataclass
class PhaseCost:
    """Seconds of one phase of one micro-batch on one rank."""

    gemm: float = 0.0
    attention: float = 0.0
    memory: float = 0.0
    tp: float = 0.0          # exposed
    cp: float = 0.0
    ep: float = 0.0
    hidden: float = 0.0      # collectives hidden under compute (for the record)
    comm_total: float = 0.0  # every collective's own time, before overlap
    comm_by_group: dict[str, list[float]] = field(default_factory=dict)  # group -> [bytes sent, seconds, exposed]

    @property
    def total(self) -> float:
        return self.gemm + self.attention + self.memory + self.tp + self.cp + self.ep

    @property
    def compute(self) -> float:
        return self.gemm + self.attention + self.memory

    def add(self, other: "PhaseCost", times: float = 1.0) -> "PhaseCost":
        self.gemm += times * other.gemm
        self.attention += times * other.attention
        self.memory += times * other.memory
        self.tp += times * other.tp
        self.cp += times * other.cp
        self.ep += times * other.ep
        self.hidden += times * other.hidden
        self.comm_total += times * other.comm_total
        for g, (b, s, e) in other.comm_by_group.items():
            cur = self.comm_by_group.get(g)
            if cur is None:
                self.comm_by_group[g] = [times * b, times * s, times * e]
            else:
                cur[0] += times * b
                cur[1] += times * s
                cur[2] += times * e
        return self


def op_seconds(op: Op, k: Kernels, elem_gemm: float) -> float:
    if op.kind == "gemm":
        # the router GEMM stays 16-bit under FP8 (Megatron-Core's TopKRouter is a plain torch linear)
        if elem_gemm < 2.0 and op.tag == "router":
            return k.gemm_seconds(op.M, op.N, op.K, op.batch, 2.0, op.c_bytes, op.c_read, high_precision=True)
        if op.batch > 1 and op.tag.startswith("expert"):
            # a grouped GEMM (Megatron-Core's TEGroupedMLP / CUTLASS grouped GEMM) runs each expert's problem at the
            # efficiency of its own shape (the per-expert token count), in one launch: rate one expert, times the
            # experts; where one expert's problem is below the curve's sweep (a few tokens per expert: the curve
            # there is an extrapolation), the combined size rates them, the launch shared
            if (op.M * op.N * op.K) ** (1 / 3) >= k.gemm_curve.xs[0]:
                return op.batch * k.gemm_seconds(op.M, op.N, op.K, 1, elem_gemm, op.c_bytes, op.c_read)
        return k.gemm_seconds(op.M, op.N, op.K, op.batch, elem_gemm, op.c_bytes, op.c_read)
    if op.kind == "attention":  # unfused attention's batched GEMMs: 16-bit even in FP8 recipes
        return k.gemm_seconds(op.M, op.N, op.K, op.batch, 2.0, op.c_bytes, op.c_read, high_precision=True)
    if op.kind == "memory":
        return k.memory_seconds(op.nbytes)
    if op.kind == "flash":
        return k.flash_seconds(op.flops, "bwd" if "backward" in op.name else "fwd")
    return 0.0


def price(ops: list[Op], k: Kernels, net: Network, groups: Groups, elem_gemm: float = 2.0) -> PhaseCost:
    from memplan.perf.comm import FACTORS

    c = PhaseCost()
    by_tag: dict[str, float] = {}
    for op in ops:
        if op.kind == "comm":
            continue
        t = op_seconds(op, k, elem_gemm)
        if op.category == "gemm":
            c.gemm += t
        elif op.category == "attention":
            c.attention += t
        else:
            c.memory += t
        if op.tag:
            by_tag[op.tag] = by_tag.get(op.tag, 0.0) + t
    slow = 1.0 / (1.0 - k.overlap_slowdown)
    for op in ops:
        if op.kind != "comm":
            continue
        size, per_node = groups.of(op.category)
        if size <= 1:
            continue
        if op.route and size > per_node:
            t = net.inter_latency + net.node_deduplicated_all_to_all(op.nbytes, size, per_node, *op.route)
        else:
            t = net.collective(op.collective, op.nbytes, size, per_node)
        c.comm_total += t
        if op.under == PHASE:
            # DualPipe / Megatron-Core's --overlap-moe-expert-parallel-comm: the all-to-all of one micro-batch runs
            # while a paired micro-batch computes; its budget is this phase's compute (a stand-in for the paired
            # one's), shared by every collective that hides there
            if PHASE not in by_tag:
                by_tag[PHASE] = c.gemm + c.attention + c.memory
            under = by_tag[PHASE]
        else:
            under = by_tag.get(op.under, 0.0) if op.under else 0.0
        if under > 0:
            # the pair takes max(compute x slowdown, comm): the compute already counted once, add the rest
            pair = max(under * slow, t)
            extra = pair - under
            exposed = max(0.0, t - under * slow)
            if op.category != "ep":  # `hidden` is reported as the tensor-parallel collectives' (CP included)
                c.hidden += t - exposed
            compute_slowdown = extra - exposed
            if op.category == "cp":
                c.attention += compute_slowdown
            else:
                c.gemm += compute_slowdown
            # one collective per GEMM group; the phase budget shrinks by what this one used
            by_tag[op.under] = max(0.0, under - t / slow) if op.under == PHASE else 0.0
        else:
            exposed = t
        setattr(c, op.category, getattr(c, op.category) + exposed)
        g = c.comm_by_group.setdefault(op.category, [0.0, 0.0, 0.0])
        g[0] += FACTORS[op.collective](size) * op.nbytes
        g[1] += t
        g[2] += exposed
    return c
