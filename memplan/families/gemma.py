"""Gemma 1 (transformers models/gemma/modeling_gemma.py, configuration_gemma.py).

- GemmaAttention: q/k/v/o_proj with bias=config.attention_bias (default False); head_dim is a config field
  (default 256, so Gemma-7B's 16 x 256 = 4096 differs from its hidden 3072); KV heads default 16.
- GemmaMLP: gate/up/down_proj without bias, ACT2FN[config.hidden_act] (GemmaConfig.__post_init__ turns the
  legacy "gelu" of the released configs into "gelu_pytorch_tanh").
- GemmaRMSNorm stores a zero-initialised weight used as (1 + weight): one vector, like any RMSNorm.
- GemmaTextScaledWordEmbedding multiplies by sqrt(hidden) (embed_scale is a non-persistent buffer, no parameter);
  lm_head is tied by default (tie_word_embeddings True).
- use_bidirectional_attention: GemmaAttention.is_causal = not that flag.
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Embeddings, Head, LayerSpec, Model


def activation(c: ConfigReader, key: str) -> str:
    act = c.activation(key, default="gelu_pytorch_tanh")
    return "gelu_pytorch_tanh" if act == "gelu" and key == "hidden_act" else act


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    bias = c.flag("attention_bias", default=False)
    causal = not c.flag("use_bidirectional_attention", default=False)
    attn = d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, head_dim_default=256, kv_default=16,
                             causal=causal)
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("intermediate_size"),
                                  activation=activation(c, "hidden_act")))
    layer = LayerSpec(attention=attn, ffn=ffn)
    return d.decoder(c, family="gemma", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=8192),
                     embeddings=Embeddings(scale=True), head=Head(tied=c.flag("tie_word_embeddings", default=True)))


FAMILY = Family(model_types=("gemma",), read=read, description="Gemma: MHA/MQA with head_dim 256, GeGLU, scaled "
                "embeddings, tied head", peft_targets=("q_proj", "v_proj"), transformers_class="GemmaForCausalLM")
