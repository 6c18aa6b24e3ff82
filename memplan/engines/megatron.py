"""Megatron-Core (`--engine megatron`; Megatron-LM, Megatron-Bridge and NeMo run the same optimizer code).

Its buffers, as megatron/core/distributed/distributed_data_parallel.py and megatron/core/optimizer/
distrib_optimizer.py keep them (Megatron-LM docs/source/api-guide/dist_optimizer.md, core_r0.13.0):
- the model's parameters in the training dtype (bf16 / fp16 / fp32), never sharded by the optimizer;
- one contiguous gradient buffer (`main_grad`) over every parameter, full size on every data-parallel rank (the
  reduce-scatter writes each rank's share into it), in fp32 (`--accumulate-allreduce-grads-in-fp32`, which
  arguments.py turns on for --bf16) unless `--grad-reduce-in-bf16` asks for bf16 (memplan: `--grads-dtype bf16`);
- with the distributed optimizer (`--use-distributed-optimizer`, memplan `--zero 1`) the fp32 main parameters and
  Adam's two fp32 states are sharded over the data-parallel group (dp x cp; routed experts over expert-DP).
Per parameter: bf16 6 + 12/d B (4 + 12/d with bf16 grads), fp16 4 + 16/d (an fp32 copy of the fp16 grads),
fp32 8 + 8/d (dist_optimizer.md's table).
"""
from __future__ import annotations

from memplan.engines.base import EngineConventions
from memplan.spec.training import DType, Recipe

# what the search may try under this engine: ZeRO stages (memplan's --zero: 1 = --use-distributed-optimizer) and
# optimizer offload (Megatron's --optimizer-cpu-offload is not modelled)
ZERO_STAGES = (0, 1)
OFFLOAD_OPTIMIZER = False

CONVENTIONS = EngineConventions(
    name="megatron",
    convention="megatron (Megatron-Core distributed optimizer: full-size main_grad buffer, fp32 unless "
               "--grad-reduce-in-bf16; fp32 main params + Adam states sharded over DP; 18 B/param bf16, 20 fp16, "
               "16 fp32)",
    sources=("Megatron-LM core_r0.13.0 docs/source/api-guide/dist_optimizer.md",
             "Megatron-LM core_r0.13.0 megatron/core/distributed/distributed_data_parallel.py (grad buffers)",
             "Megatron-LM core_r0.13.0 megatron/training/arguments.py (--bf16 implies "
             "accumulate_allreduce_grads_in_fp32; --grad-reduce-in-bf16)"))


def main_grads(recipe: Recipe) -> tuple[DType, bool, str]:
    """The gradient buffer's dtype, whether an extra fp32 copy of 16-bit grads exists, and a note."""
    if recipe.weights == DType.bf16 and recipe.gradients == DType.bf16:
        if recipe.gradients_given:
            return DType.bf16, False, ("megatron: --grad-reduce-in-bf16 (--grads-dtype bf16): bf16 main_grad "
                                       "buffer, reduced in bf16")
        return DType.fp32, False, ("megatron: bf16 params keep fp32 main gradients (main_grad buffer; "
                                   "--grads-dtype bf16 for --grad-reduce-in-bf16)")
    if recipe.gradients == DType.fp16:
        return DType.fp16, True, ""
    return recipe.gradients, False, ""


def comm_buffers(grads_bytes: int, params: int, zero: int, table: dict) -> list[tuple[str, int, str]]:
    """No buffer beside the gradients: the main_grad buffer is reduced in place (its buckets are views)."""
    return []
