"""Plain PyTorch / Hugging Face Trainer (`--engine plain`): the ZeRO paper's accounting.

Rajbhandari et al. 2019 (arXiv 1910.02054) sec. 3.1 and 5: with mixed-precision Adam each parameter costs
2 (16-bit weights) + 2 (16-bit gradients) + K=12 (fp32 master weights, momentum, variance) bytes; stage 1
shards the K bytes over the data-parallel ranks, stage 2 also the gradients, stage 3 also the weights.
"""
from __future__ import annotations

from memplan.engines.base import EngineConventions

CONVENTIONS = EngineConventions(
    name="plain",
    convention="plain (ZeRO paper, arXiv 1910.02054 sec. 3.1: weights + grads + fp32 master + optimizer states; "
               "stage 1/2/3 shard states / +grads / +weights over DP)",
    sources=("Rajbhandari et al. 2019, arXiv 1910.02054, sec. 3.1 and 5",))
