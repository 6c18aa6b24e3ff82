"""GPT-NeoX / Pythia (transformers models/gpt_neox/modeling_gpt_neox.py): fused query_key_value and dense with
bias=attention_bias (default True); dense_h_to_4h / dense_4h_to_h always biased; two LayerNorms per block feeding
parallel attention and MLP branches (use_parallel_residual, default True) plus final_layer_norm; partial rotary
(rotary_pct 0.25); untied embed_out; GPTNeoXModel.emb_dropout = hidden_dropout."""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Attention, Embeddings, Head, LayerSpec, Model, Norm

NAMES = {"attn": "attention.", "qkv": "attention.query_key_value", "o": "attention.dense",
         "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"}


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    hd = d.heads(c, hidden, kv_key="num_attention_heads")
    rotary = c.rope("partial_rotary_factor")
    if rotary is None:
        rotary = c.number("rotary_pct", default=0.25)  # configuration_gpt_neox.py default
    bias = c.flag("attention_bias", default=True)
    dropout = c.probability("hidden_dropout", default=0.0)
    attn = d.safe(c, lambda: Attention(**hd, fused_qkv=True, qkv_bias=bias, out_bias=bias, rotary_fraction=rotary,
                                       dropout=c.probability("attention_dropout", default=0.0)))
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("intermediate_size"), gated=False, bias=True,
                                activation=c.activation("hidden_act", default="gelu")))
    norm = Norm(kind="layernorm", bias=True)
    layer = LayerSpec(attention=attn, ffn=ffn, norm=norm,
                      parallel_residual=c.flag("use_parallel_residual", default=True), dropout=dropout)
    return d.decoder(c, family="gpt_neox", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"), max_positions=c.integer("max_position_embeddings", default=2048),
                     norm=norm, embeddings=Embeddings(dropout=dropout),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=NAMES)


FAMILY = Family(model_types=("gpt_neox",), read=read, description="GPT-NeoX/Pythia: parallel residual, partial rotary",
                peft_targets=("query_key_value",), transformers_class="GPTNeoXForCausalLM")
