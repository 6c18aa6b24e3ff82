"""torchtitan: FSDP2 (engines/fsdp.py) with TP/PP/CP/EP from torch, its own model code, and its activation
checkpointing policies.

Mixed precision: `training.mixed_precision_param = "bfloat16"` becomes FSDP2's
`MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` on every TransformerBlock and the root (torchtitan
9dec370 torchtitan/parallelisms/parallelize_llama.py `apply_fsdp`; parallelize.py in later releases): memplan's
`fsdp-bf16` recipe, not autocast (under DDP or one GPU torchtitan uses torch.autocast instead:
`maybe_enable_amp`).

Op-level selective AC (`activation_checkpoint.mode = "selective"`, `selective_ac_option = "op"`, memplan
`--recompute selective-op`): each TransformerBlock is wrapped in `ptd_checkpoint_wrapper` with
`create_selective_checkpoint_contexts(policy)`; the policy (torchtitan 9dec370, parallelize_llama.py lines
213-270) returns MUST_SAVE for the outputs of the ops in `_save_list` = {aten.mm, aten._scaled_dot_product_
efficient_attention, aten._scaled_dot_product_flash_attention, _c10d_functional.reduce_scatter_tensor,
aten.abs, aten.max} "except every second mm" (a per-block counter: the 2nd, 4th, ... mm of a forward is
recomputed), PREFER_RECOMPUTE for everything else.  Later torchtitan (distributed/activation_checkpoint.py,
`SelectiveAC`) keeps the rule and widens the list (aten.linear, cudnn attention, all_to_all, topk).

What one llama3/qwen3 block saves under it follows from its forward order (torchtitan models/llama3/model.py:
`wq(x), wk(x), wv(x)`, rope, sdpa, `wo`, then `w2(silu(w1(x)) * w3(x))`): mm 1 wq saved, 2 wk recomputed, 3 wv
saved, 4 wo recomputed, 5 w1 saved, 6 w3 recomputed, 7 w2 saved; flash attention's output and its fp32
logsumexp (b, heads, s) saved; the block's input kept by the checkpoint; under TP (always sequence parallel in
torchtitan) the reduce-scatter after wo and after w2 saved too.  abs/max matter under float8 only (not here).
"""
from __future__ import annotations

from memplan.engines.base import EngineConventions
from memplan.errors import MemplanError
from memplan.spec.model import LayerSpec, Model

CONVENTIONS = EngineConventions(
    name="torchtitan",
    convention="torchtitan (FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): fp32 sharded params, "
               "grads and Adam states, bf16 unsharded blocks in flight, bf16 activations; op-level SAC saves every "
               "other mm and attention)",
    sources=("torchtitan 9dec370 torchtitan/parallelisms/parallelize_llama.py _save_list, "
             "_apply_ac_to_transformer_block, apply_fsdp",
             "torchtitan 9dec370 torchtitan/models/llama/model.py Attention.forward, FeedForward.forward",
             "torchtitan b5bcd76 torchtitan/distributed/activation_checkpoint.py SelectiveAC (same rule)",
             "torchtitan benchmarks/llama3_h100_202412_torchtitan.md (measured peaks)"))

# the per-block saved-op rule, as data: True = an op in _save_list, and mm outputs alternate
SAVE_EVERY_OTHER_MM = True


def _mms(layer: LayerSpec, m: Model, tokens: int, tp: int) -> list[tuple[str, int]]:
    """The block's mm outputs in forward order, as (name, elements on one TP rank)."""
    at, ffn = layer.attention, layer.ffn
    h = m.hidden_size
    mlp = [("w1", tokens * ffn.intermediate_size // tp)]
    if ffn.gated:
        mlp.append(("w3", tokens * ffn.intermediate_size // tp))
    mlp.append(("w2", tokens * h))  # row-parallel: the local partial sum is full width before its reduce-scatter
    return [("wq", tokens * at.q_size // tp), ("wk", tokens * at.kv_size // tp),
            ("wv", tokens * at.kv_size // tp), ("wo", tokens * h), *mlp]


def op_sac_rows(layer: LayerSpec, m: Model, b: int, s: int, tp: int, compute_bytes: float
                ) -> list[tuple[str, int]]:
    """What one block keeps for backward under torchtitan's op-level SAC: (row name, bytes on one GPU)."""
    at, ffn = layer.attention, layer.ffn
    if ffn.moe or at.mla or at.kind not in ("mha", "gqa", "mqa"):
        raise MemplanError("--recompute selective-op (torchtitan's op-level SAC) is derived for dense attention "
                           "and dense MLP blocks (llama3, qwen3); use --recompute full or none for this model")
    tokens = b * s
    h = m.hidden_size
    rows = [("block input (checkpoint)", int(tokens * h * compute_bytes) // tp)]
    count = 0
    for name, elems in _mms(layer, m, tokens, tp):
        count += 1
        if SAVE_EVERY_OTHER_MM and count % 2 == 0:
            continue
        rows.append((f"{name} output (mm {count}, saved)", int(elems * compute_bytes)))
        if name == "wv":  # attention runs after wq/wk/wv: flash attention's output and its fp32 logsumexp
            heads = at.heads // tp
            rows.append(("flash attention output (saved)", int(tokens * at.q_size // tp * compute_bytes)))
            rows.append(("flash attention logsumexp (fp32, saved)", b * heads * s * 4))
    if tp > 1:  # sequence parallel: RowwiseParallel(output_layouts=Shard(1)) reduce-scatters wo's and w2's outputs
        rows.append(("reduce-scatter outputs of wo and w2 (saved)", 2 * int(tokens * h * compute_bytes) // tp))
    return rows


def recomputed_mm_share(layer: LayerSpec, m: Model) -> float:
    """The share of a block's linear FLOPs that op-level SAC runs again (the even-numbered mms: wk, wo, w3)."""
    mms = _mms(layer, m, 1, 1)
    # an mm's FLOPs per token are proportional to its weight: in x out; its output has `out` elements per token
    inputs = {"wq": m.hidden_size, "wk": m.hidden_size, "wv": m.hidden_size, "wo": layer.attention.q_size,
              "w1": m.hidden_size, "w3": m.hidden_size, "w2": layer.ffn.intermediate_size}
    weights = [(i, n * inputs[name]) for i, (name, n) in enumerate(mms, 1)]
    total = sum(w for _, w in weights)
    return sum(w for i, w in weights if i % 2 == 0) / total if total else 0.0
