"""Llama 1/2/3 (transformers models/llama/modeling_llama.py).

LlamaAttention: q/k/v/o_proj, every one with bias=config.attention_bias; LlamaMLP: gate/up/down_proj with
bias=config.mlp_bias; RMSNorm (weight only) before attention and before the MLP plus a final norm; rotary
positions; lm_head untied unless tie_word_embeddings (configuration_llama.py default False).
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    bias = c.flag("attention_bias", default=False)
    attn = d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias)
    ffn = d.gated_ffn(c, c.integer("intermediate_size"), bias=c.flag("mlp_bias", default=False))
    layer = LayerSpec(attention=attn, ffn=ffn)
    return d.decoder(c, family="llama", hidden=hidden, layers=[layer] * d.n_layers(c), vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=2048),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)))


FAMILY = Family(model_types=("llama",), read=read, description="Llama 1/2/3: GQA, SwiGLU, RMSNorm, rotary",
                peft_targets=("q_proj", "v_proj"), transformers_class="LlamaForCausalLM")
