"""Mistral (transformers models/mistral/modeling_mistral.py): Llama's layer without biases; `sliding_window`
applies to every layer (null in v0.2+ configs: global attention); MistralConfig defaults 8 KV heads."""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def window(c: ConfigReader) -> tuple[str, int | None]:
    w = c.integer("sliding_window", default=None)
    return ("sliding", w) if w else ("global", None)


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    attn = d.llama_attention(c, hidden, qkv_bias=False, out_bias=False, window=window(c), kv_default=8)
    layer = LayerSpec(attention=attn, ffn=d.gated_ffn(c, c.integer("intermediate_size")))
    return d.decoder(c, family="mistral", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"), max_positions=c.integer("max_position_embeddings", default=32768),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)))


FAMILY = Family(model_types=("mistral",), read=read, description="Mistral: Llama layers, optional sliding window",
                peft_targets=("q_proj", "v_proj"), transformers_class="MistralForCausalLM")
