"""Mixtral (transformers models/mixtral/modeling_mixtral.py): Mistral's attention; the MLP is
num_local_experts SwiGLU experts stored as fused 3-D parameters (MixtralExperts: gate_up_proj (E, 2f, h),
down_proj (E, h, f); no bias) behind a bias-free router (MixtralTopKRouter.weight (E, h), a raw parameter);
configuration_mixtral.py defaults 8 experts, top-2, 8 KV heads."""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.mistral import window
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    attn = d.llama_attention(c, hidden, qkv_bias=False, out_bias=False, window=window(c), kv_default=8)
    experts, top_k = d.experts_top_k(c, ("num_local_experts", "num_experts"), ("num_experts_per_tok",),
                                     experts_default=8, top_k_default=2)
    ffn = d.gated_ffn(c, c.integer("intermediate_size"), experts=experts, top_k=top_k)
    layer = LayerSpec(attention=attn, ffn=ffn, dropout=0.0)
    return d.decoder(c, family="mixtral", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"), max_positions=c.integer("max_position_embeddings", default=32768),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)))


FAMILY = Family(model_types=("mixtral",), read=read, description="Mixtral: sparse MoE (8 experts, top-2)",
                peft_targets=("q_proj", "v_proj"), transformers_class="MixtralForCausalLM")
