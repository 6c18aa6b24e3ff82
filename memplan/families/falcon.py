"""Falcon (transformers models/falcon/modeling_falcon.py, FalconAttention / FalconDecoderLayer):
- fused query_key_value: new_decoder_architecture -> (2 * num_kv_heads + heads) * head_dim outputs, else
  multi_query -> hidden + 2 * head_dim (one KV head), else 3 * hidden; bias=config.bias everywhere;
- norms per block: 2 without parallel_attn; with it num_ln_in_parallel_attn (None -> 2 for the new decoder
  architecture, else 1: Falcon-7B's single input_layernorm); LayerNorms always have a bias;
- lm_head tied to word_embeddings by default; no position embeddings: rotary unless alibi."""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Attention, Head, LayerSpec, Model, Norm

NAMES = {"attn": "self_attention.", "qkv": "self_attention.query_key_value", "o": "self_attention.dense",
         "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"}


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size", "n_embed")
    n_heads = c.integer("num_attention_heads", "n_head")
    new_arch = c.flag("new_decoder_architecture", default=False)
    if new_arch:
        kv = c.integer("num_kv_heads", "n_head_kv", default=n_heads)
    elif c.flag("multi_query", default=True):
        kv = 1
    else:
        kv = n_heads
    if hidden % n_heads:
        raise c.bad("num_attention_heads", f"a divisor of hidden_size ({hidden})", n_heads)
    parallel = c.flag("parallel_attn", default=True)
    n_ln = c.integer("num_ln_in_parallel_attn", default=2 if new_arch else 1)
    bias = c.flag("bias", default=False)
    attn = d.safe(c, lambda: Attention(heads=n_heads, kv_heads=kv, head_dim=hidden // n_heads, fused_qkv=True,
                                       qkv_bias=bias, out_bias=bias,
                                       position="alibi" if c.flag("alibi", default=False) else "rotary",
                                       dropout=c.probability("attention_dropout", default=0.0)))
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("ffn_hidden_size", default=4 * hidden), gated=False,
                                bias=bias, activation=c.activation("activation", default="gelu")))
    norm = Norm(kind="layernorm", bias=True)
    place = "shared" if parallel and n_ln == 1 else "pre"
    layer = LayerSpec(attention=attn, ffn=ffn, norm=norm, norm_place=place, parallel_residual=parallel,
                      dropout=c.probability("hidden_dropout", default=0.0))
    return d.decoder(c, family="falcon", hidden=hidden, layers=[layer] * d.n_layers(c, "num_hidden_layers", "n_layer"),
                     vocab=c.integer("vocab_size"), max_positions=c.integer("max_position_embeddings", default=2048),
                     norm=norm, head=Head(tied=c.flag("tie_word_embeddings", default=True)), names=NAMES)


FAMILY = Family(model_types=("falcon",), read=read, description="Falcon: MQA/GQA fused QKV, parallel attention",
                peft_targets=("query_key_value",), transformers_class="FalconForCausalLM",
                flag_keys={"layers": ("num_hidden_layers", "n_layer"), "hidden": ("hidden_size", "n_embed"),
                           "heads": ("num_attention_heads", "n_head"), "kv_heads": ("num_kv_heads", "n_head_kv"),
                           "ffn": ("ffn_hidden_size",)})
