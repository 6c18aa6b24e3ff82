"""The data-parallel gradient path and ZeRO's parameter gathers, with what overlap leaves exposed.

Volumes (ZeRO paper, Rajbhandari et al. 2020, sec. 7.2): plain DP all-reduces the gradients (2 Psi per GPU);
ZeRO-1/2 reduce-scatter gradients and all-gather updated parameters (the same 2 Psi); ZeRO-3 all-gathers the
parameters in forward and again in backward and reduce-scatters gradients (3 Psi).  With gradient accumulation DDP
and ZeRO-1 reduce once per step (no_sync on the other micro-batches), ZeRO-2 and ZeRO-3 every micro-batch.

Overlap, as the engines do it (the execution profile says which):
  - gradient reduction during the backward (torch DDP buckets, Megatron --overlap-grad-reduce, DeepSpeed
    overlap_comm): hidden under the backward of the micro-batch it follows, except the last bucket, which is
    ready only when the backward ends;
  - after the backward (Megatron 2021's local DDP): all exposed;
  - ZeRO-1/2's post-step parameter all-gather: exposed, or under the next forward (--overlap-param-gather);
  - ZeRO-3 / FSDP: each layer's gather prefetched under the previous layer's compute; what the compute of a
    phase cannot cover, and the first layer's gather, are exposed.
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.perf.comm import FACTORS, Item, Network
from memplan.spec.execution import ExecutionProfile


@dataclass(frozen=True)
class DPInputs:
    """One stage's numbers the DP path needs (per GPU)."""

    params: float            # parameters reduced over this group
    group: int               # dp (dense) or edp (experts)
    per_node: int
    grad_bytes: float        # bytes per gradient element on the wire
    weight_bytes: float      # bytes per gathered parameter
    micro_batches: int
    backward_window: float   # the last micro-batch's backward on this stage (seconds)
    backward_each: float     # one micro-batch's backward
    forward_each: float      # one micro-batch's forward
    layers: int              # layers on the stage (ZeRO-3 gathers one at a time)
    label: str = ""          # "" for dense, "expert " for routed experts


def data_parallel(d: DPInputs, zero: int, ex: ExecutionProfile, net: Network) -> list[Item]:
    n, k = d.group, d.per_node
    if n <= 1 or d.params <= 0:
        return []
    path = net.path(n, k)
    g_bytes, w_bytes = d.params * d.grad_bytes, d.params * d.weight_bytes
    buckets = net.calls_for(g_bytes, ex.dp_bucket_bytes)
    last_bucket = min(1.0, ex.dp_bucket_bytes / g_bytes)
    out: list[Item] = []

    def item(name, kind, nbytes, calls, exposed_fn, under):
        secs = net.collective(kind, nbytes, n, k, calls)
        exposed = exposed_fn(secs)
        out.append(Item(d.label + name, "dp", n, path.link, path.busbw, FACTORS[kind](n) * nbytes, secs,
                          exposed, under if exposed < secs else ""))

    def during_backward(window):
        def f(secs):
            if ex.dp_overlap != "backward":
                return secs
            return max(secs * last_bucket, secs - window)
        return f

    if zero == 0:
        item("grad all-reduce", "all_reduce", g_bytes, buckets, during_backward(d.backward_window),
             "the last micro-batch's backward")
    elif zero in (1, 2):
        m = d.micro_batches if zero == 2 else 1
        if zero == 2:
            per = during_backward(d.backward_each)
            item("grad reduce-scatter (every micro-batch)", "reduce_scatter", m * g_bytes, m * buckets,
                 lambda s: m * per(s / m), "each micro-batch's backward")
        else:
            item("grad reduce-scatter", "reduce_scatter", g_bytes, buckets, during_backward(d.backward_window),
                 "the last micro-batch's backward")
        window = d.forward_each if ex.param_gather_overlap else 0.0
        item("param all-gather (after the step)", "all_gather", w_bytes, buckets,
             lambda s: max(s * last_bucket, s - window) if window else s, "the next step's first forward")
    else:
        m = d.micro_batches
        first_layer = 1.0 / max(d.layers, 1)

        def prefetched(compute):
            def f(secs):
                per = secs / m
                if not ex.zero3_prefetch:
                    return secs
                return m * max(per * first_layer, per - compute)
            return f

        item("param all-gather (forward)", "all_gather", m * w_bytes, m * max(d.layers, 1),
             prefetched(d.forward_each), "each layer's forward")
        item("param all-gather (backward)", "all_gather", m * w_bytes, m * max(d.layers, 1),
             prefetched(d.backward_each * 0.5), "each layer's backward")
        item("grad reduce-scatter", "reduce_scatter", m * g_bytes, m * max(d.layers, 1),
             prefetched(d.backward_each * 0.5), "each layer's backward")
    return out
