"""Qwen3-MoE (transformers models/qwen3_moe/modeling_qwen3_moe.py, configuration_qwen3_moe.py).

- Qwen3MoeAttention: as Qwen3 (q/k/v/o_proj with bias=attention_bias, per-head q_norm/k_norm RMSNorm(head_dim)),
  but Qwen3MoeConfig has no head_dim field: head_dim = config.head_dim when the file sets it (the published ones
  do: 128 with hidden 2048/4096), else hidden // heads.
- Qwen3MoeDecoderLayer: a Qwen3MoeSparseMoeBlock when `layer_idx not in mlp_only_layers and num_experts > 0 and
  (layer_idx + 1) % decoder_sparse_step == 0`, else a dense Qwen3MoeMLP(intermediate_size).
- Qwen3MoeSparseMoeBlock: Qwen3MoeExperts (fused gate_up_proj (E, 2*moe_intermediate_size, h), down_proj
  (E, h, moe_intermediate_size)) and Qwen3MoeTopKRouter (a raw (E, h) weight, no bias); no shared expert.
- Sliding window: Qwen3MoeAttention.sliding_window = config.sliding_window on every layer, which
  Qwen3MoeConfig.__post_init__ sets to None unless use_sliding_window (no layer_types).
- `--ffn` sets the routed experts' width (moe_intermediate_size).
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.qwen2_moe import moe_layers
from memplan.families.qwen3 import QK_NORM_NAMES
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    experts, top_k = d.experts_top_k(c, ("num_experts", "num_local_experts"), ("num_experts_per_tok",),
                                     experts_default=128, top_k_default=8, allow_dense=True)
    sparse = moe_layers(c, count, experts)
    bias = c.flag("attention_bias", default=False)
    window = ("sliding", c.integer("sliding_window", default=4096)) \
        if c.flag("use_sliding_window", default=False) and c.data.get("sliding_window", 0) is not None \
        else ("global", None)
    attn = d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, window=window, kv_default=4,
                             qk_norm="head")
    # the dense width only matters when some layer is dense (mlp_only_layers, decoder_sparse_step)
    dense_ffn = d.gated_ffn(c, c.integer("intermediate_size")) if not all(sparse) else None
    moe_ffn = d.gated_ffn(c, c.integer("moe_intermediate_size"), experts=experts, top_k=top_k) \
        if any(sparse) else None
    layers = [LayerSpec(attention=attn, ffn=moe_ffn if s else dense_ffn) for s in sparse]
    return d.decoder(c, family="qwen3_moe", hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=32768),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=dict(QK_NORM_NAMES))


FAMILY = Family(model_types=("qwen3_moe",), read=read,
                description="Qwen3-MoE: routed experts (no shared expert), per-head q/k RMSNorm",
                peft_targets=None,  # peft 0.21.2 constants.py has no qwen3_moe entry
                transformers_class="Qwen3MoeForCausalLM",
                flag_keys={"ffn": ("moe_intermediate_size",)})
