"""PyTorch FSDP2 (`fully_shard`; `--engine fsdp`), as torchtitan, accelerate (FSDP2) and TRL run it.

What it holds (torch/distributed/fsdp/_fully_shard/_fsdp_param.py, torch 2.6-2.9; in torch 2.5 the same file
is torch/distributed/_composable/fsdp/_fsdp_param.py):
- every parameter is stored sharded along dim 0 (padded to ceil(d0/W) rows) in its *original* dtype
  (`FSDPParam.init_dtype_attrs`: `orig_dtype = sharded_param.dtype`); the optimizer updates that shard, so there
  is no separate master copy;
- `MixedPrecisionPolicy(param_dtype=bf16)` casts the shard to bf16 *before* the all-gather
  (`all_gather_inputs`: `sharded_param_data.to(param_dtype)`): the unsharded parameters a module computes with
  are bf16, its forward runs in bf16 with no autocast (activations bf16; `cast_forward_inputs`), and the
  gradients it produces are bf16, cast to `reduce_dtype` (fp32) for the reduce-scatter
  (_fsdp_collectives.py `foreach_reduce`), so the sharded gradient is in the parameter's (fp32) dtype;
- `reshard_after_forward=True` frees a block's unsharded parameters after its forward (ZeRO-3); False keeps them
  to the backward (ZeRO-2); the root module (embeddings, final norm, LM head) stays gathered;
- routed experts under expert parallelism are sharded by FSDP over the expert-data-parallel ranks only
  (torchtitan models/llama4/infra/parallelize.py apply_fsdp: `dp_mod_ep_mesh` for `transformer_block.moe.experts`).

memplan's recipe `fsdp-bf16` is this policy: fp32 stored (sharded) parameters, fp32 gradient shards, fp32 Adam
states, bf16 unsharded parameters of the blocks in flight, bf16 activations ("half" rows).  `amp-bf16` under
--engine fsdp is torch.autocast over fp32 FSDP parameters (no param_dtype): fp32 gathered parameters and autocast
activations.
"""
from __future__ import annotations

from memplan.engines.base import EngineConventions
from memplan.spec.training import DType, Recipe

# ZeRO-3 / FSDP keep the unsharded parameters of this many transformer layers on the GPU at once: the layer
# computing and the one prefetched (FSDP2 prefetches one module ahead in forward and backward by default).
LAYERS_IN_FLIGHT = 2

# what the search may try under this engine: ZeRO stages (memplan's --zero) and optimizer offload
ZERO_STAGES = (0, 2, 3)  # no stage 1: reshard_after_forward False = 2, True = 3; 0 = DDP
OFFLOAD_OPTIMIZER = True

CONVENTIONS = EngineConventions(
    name="fsdp",
    convention="fsdp (FSDP2 fully_shard + MixedPrecisionPolicy: sharded params in their stored dtype are the "
               "master copy, gradient shards in that dtype, 16-bit unsharded params only for modules in flight)",
    sources=("pytorch torch/distributed/fsdp/_fully_shard/_fsdp_param.py FSDPParam.init_dtype_attrs, "
             "all_gather_inputs (torch 2.6-2.9)",
             "pytorch torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce (reduce_dtype)",
             "torchtitan 9dec370 torchtitan/parallelisms/parallelize_llama.py apply_fsdp"))


def stored_dtype(recipe: Recipe) -> DType:
    """The dtype of the sharded parameter (the one the optimizer steps): the master dtype when the recipe has
    one, else the weights' dtype."""
    return recipe.master_weights or recipe.weights


def gathered_dtype(recipe: Recipe) -> DType:
    """The dtype of the unsharded parameters: MixedPrecisionPolicy's param_dtype (the recipe's compute dtype)
    when the recipe says the all-gather casts (`fsdp-bf16`: fp32 stored, bf16 compute, no autocast); under
    autocast the gathered parameters stay in the stored dtype (autocast casts per op)."""
    if not recipe.autocast and recipe.weights in (DType.fp32, DType.tf32) and recipe.compute.bytes < 4:
        return recipe.compute
    return recipe.weights


def backward_transients(block_params: int, head_params: int, recipe: Recipe) -> tuple[int, int, str]:
    """Bytes FSDP2 adds in backward beyond the sharded gradients: (one block's, the root unit's, a note).

    A block's backward writes its gradients unsharded in the gathered dtype; its post-backward
    (_fsdp_collectives.py `foreach_reduce`) copies them into one reduce-scatter input of the reduce dtype (fp32:
    the stored dtype here) before freeing them, so for a moment one block holds both.  The root unit (embeddings,
    final norm, LM head) reduces only after the embedding's gradient, at the end of backward, so the LM head's
    unsharded gradient is held from the first step of backward to the last."""
    grad = gathered_dtype(recipe).bytes
    reduce = stored_dtype(recipe).bytes
    block = int(block_params * (grad + reduce))
    root = int(head_params * grad)
    note = (f"FSDP2 backward: one block's unsharded {gathered_dtype(recipe).value} gradients + its "
            f"{stored_dtype(recipe).value} reduce-scatter input ({block / 2**30:,.2f} GiB, foreach_reduce); the root "
            f"unit's LM-head gradient held unsharded until the end of backward ({root / 2**30:,.2f} GiB)")
    return block, root, note


def comm_buffers(grads_bytes: int, params: int, zero: int, table: dict) -> list[tuple[str, int, str]]:
    """No buffer beside the gradients: FSDP2's reduce-scatter buffers are backward transients (backward_transients)."""
    return []
