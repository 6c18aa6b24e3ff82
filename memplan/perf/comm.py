"""Communication volumes of one training step, per GPU, and the time they take on a link.

Collectives are costed as bandwidth-optimal ring algorithms (Patarasuk & Yuan 2009; Thakur et al. 2005, the
algorithms NCCL implements): for a tensor of S bytes on a group of n GPUs each GPU sends
  all-reduce                 2 (n-1)/n * S
  reduce-scatter, all-gather   (n-1)/n * S
and the time is those bytes over the link's per-GPU unidirectional bandwidth (the "bus bandwidth" of
nccl-tests' PERFORMANCE.md), plus the link latency once per ring step.

Which link: ranks are laid out TP fastest, then DP, then PP (Megatron-LM's default order), so a group of n ranks
spaced `stride` apart stays inside a node when n * stride <= GPUs per node; otherwise it crosses the inter-node
network, whose per-GPU share is the bottleneck of the ring.
"""
from __future__ import annotations

from memplan.spec.hardware import InterconnectSpec


def all_reduce_bytes(nbytes: float, n: int) -> float:
    return 2.0 * (n - 1) / n * nbytes if n > 1 else 0.0


def shard_collective_bytes(nbytes: float, n: int) -> float:
    """Reduce-scatter or all-gather of a tensor whose full size is `nbytes`."""
    return (n - 1) / n * nbytes if n > 1 else 0.0


def group_link(n: int, stride: int, gpus_per_node: int, intra: InterconnectSpec,
               inter: InterconnectSpec) -> InterconnectSpec:
    return intra if n * stride <= gpus_per_node else inter


def seconds(nbytes: float, link: InterconnectSpec, ring_steps: int = 0, calls: float = 1.0) -> float:
    """Bytes over the link (GB/s decimal) plus latency: `calls` collectives of `ring_steps` steps each."""
    return nbytes / (link.bandwidth_gbps * 1e9) + calls * ring_steps * link.latency_us * 1e-6


def zero_volumes(zero: int, dp: int, grad_accum: int, param_shard: float, grad_bytes: float,
                 weight_bytes: float) -> list[tuple[str, float, float, int]]:
    """(name, bytes each GPU sends per step, collective calls per step, ring steps per call) of the
    data-parallel gradient path.

    ZeRO paper (Rajbhandari et al. 2020), sec. 7.2: plain DP all-reduces the gradients (2 Psi); ZeRO-1/2 do a
    reduce-scatter of gradients and an all-gather of updated parameters (2 Psi, the same); ZeRO-3 all-gathers the
    parameters in forward and again in backward and reduce-scatters gradients (3 Psi, the 1.5x).
    With gradient accumulation: DDP and ZeRO-1 reduce once per step (gradients accumulate locally, DDP no_sync);
    ZeRO-2 keeps only its gradient shard, so it reduce-scatters every micro-batch (DeepSpeed stage 2); ZeRO-3
    gathers parameters and reduce-scatters gradients every micro-batch (DeepSpeed stage 3, FSDP).
    `param_shard` is the parameters one GPU's model replica holds (after TP/PP).  Calls are counted per whole
    tensor (bucketing only splits them).
    """
    g, w = param_shard * grad_bytes, param_shard * weight_bytes
    if dp <= 1:
        return []
    ring = dp - 1
    if zero == 0:
        return [("grad all-reduce", all_reduce_bytes(g, dp), 1, 2 * ring)]
    if zero == 1:
        return [("grad reduce-scatter", shard_collective_bytes(g, dp), 1, ring),
                ("param all-gather", shard_collective_bytes(w, dp), 1, ring)]
    if zero == 2:
        return [("grad reduce-scatter", grad_accum * shard_collective_bytes(g, dp), grad_accum, ring),
                ("param all-gather", shard_collective_bytes(w, dp), 1, ring)]
    return [("param all-gather (fwd+bwd)", grad_accum * 2 * shard_collective_bytes(w, dp), 2 * grad_accum, ring),
            ("grad reduce-scatter", grad_accum * shard_collective_bytes(g, dp), grad_accum, ring)]


def tp_all_reduces_per_layer(recompute: str) -> int:
    """Megatron TP: 2 all-reduces in forward (after attention, after the MLP) and 2 in backward per layer
    (Shoeybi et al. 2019, fig. 4); full recomputation repeats the forward's 2. Sequence parallelism swaps each for
    an all-gather + reduce-scatter of the same total volume (Korthikanti et al. 2022, sec. 4.2.2)."""
    return 6 if recompute == "full" else 4
