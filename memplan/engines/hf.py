"""Plain PyTorch / Hugging Face Trainer (`--engine plain`): the ZeRO paper's accounting.

Rajbhandari et al. 2019 (arXiv 1910.02054) sec. 3.1 and 5: with mixed-precision Adam each parameter costs
2 (16-bit weights) + 2 (16-bit gradients) + K=12 (fp32 master weights, momentum, variance) bytes; stage 1
shards the K bytes over the data-parallel ranks, stage 2 also the gradients, stage 3 also the weights.
"""
from __future__ import annotations

from memplan.engines.base import EngineConventions

# what the search may try under this engine: ZeRO stages (memplan's --zero) and optimizer offload
ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_OPTIMIZER = True

CONVENTIONS = EngineConventions(
    name="plain",
    convention="plain (ZeRO paper, arXiv 1910.02054 sec. 3.1: weights + grads + fp32 master + optimizer states; "
               "stage 1/2/3 shard states / +grads / +weights over DP)",
    sources=("Rajbhandari et al. 2019, arXiv 1910.02054, sec. 3.1 and 5",))


def comm_buffers(grads_bytes: int, params: int, zero: int, table: dict) -> list[tuple[str, int, str]]:
    """Buffers beside the gradients for data parallelism: torch DDP's gradient buckets (as large as the
    gradients: every bucket is a flat copy) when nothing is sharded; (name, bytes, note)."""
    if zero == 0:
        return [("DDP gradient buckets", grads_bytes, table["ddp_bucket_source"])]
    return []
