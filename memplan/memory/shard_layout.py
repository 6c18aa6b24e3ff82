"""How real engines split parameters over data-parallel ranks, tensor by tensor (no torch).

The ZeRO arithmetic in states.py divides bytes evenly: ceil(N x b / W) per rank.  Real engines split whole tensors
and so differ from it by a few bytes to a few percent; these functions give the exact per-rank element counts, from
the parameter shapes alone, so a measured rank can be explained to the byte (tests/test_distributed.py).

FSDP2 (torch 2.13, torch/distributed/fsdp/_fully_shard/_fsdp_param.py FSDPParam._init_sharded_param): every
parameter is cut along dim 0 with torch.chunk into W pieces; every rank *stores* the padded piece
(`padded_sharded_size = chunks[0].size()`: ceil(d0 / W) rows, zero-filled past the end) so that all-gather inputs
have equal sizes, and the reduce-scatter output that holds the gradient shards (_fsdp_collectives.py
foreach_reduce) uses the same padded sizes.  The optimizer's states are created with zeros_like on the sharded
DTensor, whose local tensor is the *unpadded* piece: torch.chunk gives ceil(d0/W) rows to the first ranks, the
remainder to the next, and nothing to the ranks after it.

ZeroRedundancyOptimizer (torch/distributed/optim/zero_redundancy_optimizer.py `_partition_parameters`): whole
parameters, sorted by numel largest first, each given to the rank with the fewest elements so far (lowest rank on
a tie): the optimizer states are uneven, and a rank may own no parameter at all when W exceeds the tensor count.

DDP (torch/nn/parallel/distributed.py, `gradient_as_bucket_view=False` default): every gradient also lives in one
flat bucket of the reducer (bucket_cap_mb=25, the first bucket 1 MiB): a second copy of all gradients.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

Shape = Sequence[int]


def _rows_rest(shape: Shape) -> tuple[int, int]:
    if not shape:  # a 0-d parameter is one element; FSDP views it as 1-d
        return 1, 1
    rest = 1
    for d in shape[1:]:
        rest *= d
    return shape[0], rest


def fsdp_padded_shard_elements(shapes: Iterable[Shape], world: int) -> int:
    """Elements one FSDP2 rank stores for its (padded) parameter shards: sum of ceil(d0/W) x prod(rest)."""
    total = 0
    for shape in shapes:
        rows, rest = _rows_rest(shape)
        total += -(-rows // world) * rest
    return total


def fsdp_local_shard_elements(shapes: Iterable[Shape], world: int, rank: int) -> int:
    """Elements of rank `rank`'s unpadded shards (torch.chunk along dim 0): what its optimizer states cover."""
    total = 0
    for shape in shapes:
        rows, rest = _rows_rest(shape)
        chunk = -(-rows // world)
        total += max(0, min(chunk, rows - rank * chunk)) * rest
    return total


def zero1_partition_elements(numels: Iterable[int], world: int) -> list[int]:
    """Elements each rank owns under ZeroRedundancyOptimizer's greedy partition (largest first, least-loaded rank)."""
    sizes = [0] * world
    for n in sorted(numels, reverse=True):
        rank = sizes.index(min(sizes))
        sizes[rank] += n
    return sizes


def ddp_bucket_elements(numels: Iterable[int]) -> int:
    """Elements in DDP's gradient buckets: every parameter that needs a gradient, once."""
    return sum(numels)
