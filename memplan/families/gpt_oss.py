"""gpt-oss (transformers models/gpt_oss/modeling_gpt_oss.py, configuration_gpt_oss.py).

- GptOssAttention: q/k/v/o_proj with bias=attention_bias (default True); head_dim field (default 64, so
  64 x 64 = 4096 differs from hidden 2880); KV heads default 8; `sinks` = nn.Parameter(num_attention_heads), one
  learned logit per head joined to the softmax; sliding_window (default 128) on the layers layer_types calls
  "sliding_attention", which GptOssConfig.__post_init__ defaults to every even layer ((i + 1) % 2): the released
  models alternate sliding and full attention, 12 + 12 (20b) and 18 + 18 (120b).
- GptOssMLP: every layer is MoE.  router = GptOssTopKRouter (a raw (E, h) weight and an (E,) bias, softmax over
  the top-k logits); experts = GptOssExperts with TRANSPOSED fused weights and biases: gate_up_proj
  (E, h, 2 * intermediate_size), gate_up_proj_bias (E, 2 * intermediate_size), down_proj (E, intermediate_size,
  h), down_proj_bias (E, h) (is_transposed=True, has_bias=True); num_local_experts (default 128) top
  num_experts_per_tok (default 4).  The GLU is gpt-oss's clamped (gate * sigmoid(1.702 gate)) * (up + 1).
- lm_head untied (default False).  The published checkpoints store the experts in MXFP4; the module tree
  transformers builds (and trains) holds them dequantized, which is what is counted.
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model

NAMES = {"router": "mlp.router", "sinks": "self_attn.sinks"}


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    experts, top_k = d.experts_top_k(c, ("num_local_experts", "num_experts"), ("num_experts_per_tok",),
                                     experts_default=128, top_k_default=4)
    bias = c.flag("attention_bias", default=True)
    default_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(count)]
    wins = d.windows(c, count, default_types, window_default=128)
    ffn = d.gated_ffn(c, c.integer("intermediate_size"), bias=True, experts=experts, top_k=top_k,
                      router_bias=True, experts_transposed=True)
    layers = [LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, window=w,
                                                    head_dim_default=64, kv_default=8, sinks=True), ffn=ffn)
              for w in wins]
    return d.decoder(c, family="gpt_oss", hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=131072),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=dict(NAMES))


FAMILY = Family(model_types=("gpt_oss",), read=read,
                description="gpt-oss: alternating sliding (128)/full attention with sinks, MoE with biases",
                peft_targets=None,  # peft 0.21.2 constants.py has no gpt_oss entry
                transformers_class="GptOssForCausalLM",
                # transformers 5.24 GptOssForCausalLM._supports_sdpa is False (soft-capping / sinks): eager by default
                default_attention="eager")
