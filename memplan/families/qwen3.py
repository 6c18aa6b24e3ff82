"""Qwen3 dense (transformers models/qwen3/modeling_qwen3.py, configuration_qwen3.py).

- Qwen3Attention: q/k/v/o_proj all with bias=config.attention_bias (default False); q_norm and k_norm are
  RMSNorm(head_dim) applied per head ("unlike olmo, only on the head dim"); head_dim is a config field with
  default 128 (Qwen3Config), so a config without it does not fall back to hidden // heads.
- Qwen3MLP: gate/up/down_proj without bias; two RMSNorms per layer, a final norm; lm_head tied only with
  tie_word_embeddings (Qwen3-0.6B ties it).
- Sliding windows as Qwen2 (Qwen3Config.__post_init__): sliding_window = None unless use_sliding_window, then
  layers i >= max_window_layers slide, unless layer_types lists them.
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.qwen2 import default_layer_types
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model

QK_NORM_NAMES = {"q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"}


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    bias = c.flag("attention_bias", default=False)
    wins = d.windows(c, count, default_layer_types(c, count), window_default=4096)
    if not c.flag("use_sliding_window", default=False):
        wins = [("global", None)] * count  # sliding_window = None: every layer attends globally
    ffn = d.gated_ffn(c, c.integer("intermediate_size"))
    layers = [LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, window=w,
                                                    head_dim_default=128, kv_default=32, qk_norm="head"), ffn=ffn)
              for w in wins]
    return d.decoder(c, family="qwen3", hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=32768),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=dict(QK_NORM_NAMES))


FAMILY = Family(model_types=("qwen3",), read=read, description="Qwen3: GQA with per-head q/k RMSNorm, SwiGLU",
                peft_targets=("q_proj", "v_proj"), transformers_class="Qwen3ForCausalLM")
