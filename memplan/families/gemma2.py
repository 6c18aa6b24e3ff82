"""Gemma 2 (transformers models/gemma2/modeling_gemma2.py, configuration_gemma2.py).

- Gemma2DecoderLayer: four RMSNorms, a sandwich around each sublayer: input_layernorm -> attention ->
  post_attention_layernorm -> residual add, pre_feedforward_layernorm -> MLP -> post_feedforward_layernorm ->
  residual add.
- Gemma2Attention: q/k/v/o_proj with bias=attention_bias (default False), head_dim field (default 256), KV heads
  default 4; scores soft-capped by tanh at attn_logit_softcapping (default 50.0, null turns it off);
  sliding_window (default 4096) on the layers layer_types calls "sliding_attention", which
  Gemma2Config.__post_init__ defaults to every even layer ((i + 1) % 2): 21 sliding + 21 global in Gemma-2-9B.
- Gemma2MLP: GeGLU with ACT2FN[config.hidden_activation] (default gelu_pytorch_tanh).
- Gemma2ForCausalLM: logits soft-capped at final_logit_softcapping (default 30.0); lm_head tied by default;
  embeddings scaled by sqrt(hidden) as Gemma 1.
"""
from __future__ import annotations

from typing import Any

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Embeddings, Head, LayerSpec, Model


def alternating(count: int, period: int) -> list[str]:
    """Gemma 2 (period 2) and Gemma 3 (sliding_window_pattern 6): sliding unless (i + 1) % period == 0."""
    return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(count)]


def layers(c: ConfigReader, hidden: int, *, default_types: list[str], kv_default: int, attn_softcap: float | None,
           window_default: int, **attn: Any) -> list[LayerSpec]:
    count = d.n_layers(c)
    bias = c.flag("attention_bias", default=False)
    causal = not c.flag("use_bidirectional_attention", default=False)
    softcap = d.optional_number(c, "attn_logit_softcapping", attn_softcap)
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("intermediate_size"),
                                activation=c.activation("hidden_activation", default="gelu_pytorch_tanh")))
    wins = d.windows(c, count, default_types, window_default=window_default)
    return [LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, window=w,
                                                  head_dim_default=256, kv_default=kv_default, softcap=softcap,
                                                  causal=causal, **attn),
                      ffn=ffn, norm_place="sandwich") for w in wins]


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    return d.decoder(c, family="gemma2", hidden=hidden,
                     layers=layers(c, hidden, default_types=alternating(count, 2), kv_default=4, attn_softcap=50.0,
                                   window_default=4096),
                     vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=8192),
                     embeddings=Embeddings(scale=True),
                     head=Head(tied=c.flag("tie_word_embeddings", default=True),
                               softcap=d.optional_number(c, "final_logit_softcapping", 30.0)))


FAMILY = Family(model_types=("gemma2",), read=read,
                description="Gemma 2: alternating sliding/global, sandwich norms, logit soft-capping",
                peft_targets=("q_proj", "v_proj"), transformers_class="Gemma2ForCausalLM",
                # transformers 5.24 Gemma2ForCausalLM._supports_sdpa is False (soft-capping / sinks): eager by default
                default_attention="eager")
