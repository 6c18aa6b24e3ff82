"""Qwen2-MoE / Qwen1.5-MoE (transformers models/qwen2_moe/modeling_qwen2_moe.py, configuration_qwen2_moe.py).

- Qwen2MoeAttention: q/k/v_proj with bias=config.qkv_bias (configuration default True; the published
  Qwen1.5-MoE config does not set it), o_proj without bias; head_dim = config.head_dim if set, else
  hidden // heads.
- Qwen2MoeDecoderLayer: the MLP is a Qwen2MoeSparseMoeBlock when `layer_idx not in mlp_only_layers and
  num_experts > 0 and (layer_idx + 1) % decoder_sparse_step == 0`, else a dense Qwen2MoeMLP(intermediate_size).
- Qwen2MoeSparseMoeBlock: gate = Qwen2MoeTopKRouter (a raw (num_experts, hidden) weight, no bias, no nn.Linear),
  experts = Qwen2MoeExperts (fused 3-D gate_up_proj (E, 2*moe_intermediate_size, h), down_proj
  (E, h, moe_intermediate_size)), shared_expert = Qwen2MoeMLP(shared_expert_intermediate_size) and
  shared_expert_gate = nn.Linear(h, 1, bias=False) (a sigmoid gate on the shared expert's output).
- Sliding windows (Qwen2MoeConfig.__post_init__): sliding_window is 0 unless use_sliding_window; then layer_types
  defaults to sliding on layers with (i + 1) % 2 and i < max_window_layers.
- `--ffn` sets the routed experts' width (moe_intermediate_size).
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def default_layer_types(c: ConfigReader, count: int) -> list[str]:
    sliding = c.flag("use_sliding_window", default=False)
    first = c.integer("max_window_layers", default=28, minimum=0)
    return ["sliding_attention" if sliding and (i + 1) % 2 and i < first else "full_attention" for i in range(count)]


def moe_layers(c: ConfigReader, count: int, experts: int) -> list[bool]:
    """Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: which layers hold the sparse block."""
    dense = d.layer_indices(c, "mlp_only_layers", count)
    step = c.integer("decoder_sparse_step", default=1)
    return [experts > 0 and i not in dense and (i + 1) % step == 0 for i in range(count)]


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    experts, top_k = d.experts_top_k(c, ("num_experts", "num_local_experts"), ("num_experts_per_tok",),
                                     experts_default=60, top_k_default=4, allow_dense=True)
    sparse = moe_layers(c, count, experts)
    # the dense width only matters when some layer is dense (mlp_only_layers, decoder_sparse_step)
    dense_ffn = d.gated_ffn(c, c.integer("intermediate_size")) if not all(sparse) else None
    moe_ffn = d.gated_ffn(c, c.integer("moe_intermediate_size"), experts=experts, top_k=top_k,
                          shared_intermediate_size=c.integer("shared_expert_intermediate_size", minimum=0),
                          shared_expert_gate=True) if any(sparse) else None
    wins = d.windows(c, count, default_layer_types(c, count), window_default=4096)
    if not c.flag("use_sliding_window", default=False):
        wins = [("global", None)] * count  # __post_init__: sliding_window = 0 (no window) unless use_sliding_window
    qkv_bias = c.flag("qkv_bias", default=True)
    layers = [LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=qkv_bias, out_bias=False, window=w,
                                                    kv_default=16),
                        ffn=moe_ffn if s else dense_ffn) for w, s in zip(wins, sparse)]
    return d.decoder(c, family="qwen2_moe", hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=32768),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)))


FAMILY = Family(model_types=("qwen2_moe",), read=read,
                description="Qwen2-MoE/Qwen1.5-MoE: routed experts + gated shared expert, q/k/v biases",
                peft_targets=None,  # peft 0.21.2 constants.py has no qwen2_moe entry
                transformers_class="Qwen2MoeForCausalLM",
                flag_keys={"ffn": ("moe_intermediate_size",)})
