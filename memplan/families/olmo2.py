"""OLMo 2 (transformers models/olmo2/modeling_olmo2.py, configuration_olmo2.py).

- Olmo2DecoderLayer: no norm before the sublayers; post_attention_layernorm and post_feedforward_layernorm
  (RMSNorm) normalise each sublayer's output before the residual add: x + norm(f(x)).
- Olmo2Attention: q/k/v/o_proj with bias=attention_bias (default False); q_norm = RMSNorm(heads * head_dim) and
  k_norm = RMSNorm(kv_heads * head_dim) over the full projection width, before the heads are split; head_dim =
  config.head_dim if the file sets it, else hidden // heads.
- Olmo2MLP: SwiGLU gate/up/down_proj without bias; a final norm; lm_head untied by default.
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.qwen3 import QK_NORM_NAMES
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    bias = c.flag("attention_bias", default=False)
    attn = d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, qk_norm="full")
    ffn = d.gated_ffn(c, c.integer("intermediate_size"))
    layer = LayerSpec(attention=attn, ffn=ffn, norm_place="sublayer-post")
    return d.decoder(c, family="olmo2", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=2048),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=dict(QK_NORM_NAMES))


FAMILY = Family(model_types=("olmo2",), read=read,
                description="OLMo 2: norms after each sublayer, full-width q/k RMSNorm",
                peft_targets=None,  # peft 0.21.2 constants.py has no olmo2 entry
                transformers_class="Olmo2ForCausalLM")
