"""Phi-3 / Phi-3.5 / Phi-4 (transformers models/phi3/modeling_phi3.py, configuration_phi3.py).

- Phi3Attention: one fused qkv_proj (hidden -> heads*head_dim + 2*kv_heads*head_dim) and o_proj, both without
  bias (bias=False in the code, whatever attention_bias says); head_dim = config.head_dim if the file sets it,
  else hidden // heads; partial rotary: Phi3RotaryEmbedding rotates head_dim * partial_rotary_factor dims
  (rope_parameters in transformers 5, a top-level key in 4.x files such as Phi-4-mini's 0.75).
- Phi3MLP: one fused gate_up_proj (hidden -> 2 * intermediate) and down_proj, no bias.
- Sliding window: Phi3Attention passes config.sliding_window to every layer (Phi-3-mini-4k: 2047; Phi-4: null =
  global); Phi3Model builds the sliding-window mask whenever it is set.
- Phi3DecoderLayer: resid_attn_dropout / resid_mlp_dropout = resid_pdrop on the sublayer outputs; the embedding
  dropout embd_pdrop of the config is not applied by Phi3Model.
- lm_head untied unless tie_word_embeddings (default False).
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    w = c.integer("sliding_window", default=None)
    attn = d.llama_attention(c, hidden, qkv_bias=False, out_bias=False,
                             window=("sliding", w) if w else ("global", None), fused_qkv=True)
    ffn = d.gated_ffn(c, c.integer("intermediate_size"), fused_gate_up=True)
    layer = LayerSpec(attention=attn, ffn=ffn, dropout=c.probability("resid_pdrop", default=0.0))
    return d.decoder(c, family="phi3", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=4096),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)))


FAMILY = Family(model_types=("phi3",), read=read,
                description="Phi-3/Phi-4: fused qkv_proj and gate_up_proj, partial rotary, sliding window",
                peft_targets=None,  # peft 0.21.2 constants.py has no phi3 entry (phi's q_proj/v_proj don't exist)
                transformers_class="Phi3ForCausalLM")
