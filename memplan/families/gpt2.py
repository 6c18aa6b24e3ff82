"""GPT-2 (transformers models/gpt2/modeling_gpt2.py): Conv1D c_attn (fused QKV, bias) and c_proj (bias), MLP
c_fc/c_proj (bias), GELU (gelu_new), LayerNorms with bias (ln_1, ln_2, ln_f), learned positions wpe, lm_head tied
to wte by default; dropout attn_pdrop / resid_pdrop / embd_pdrop (configuration_gpt2.py defaults 0.1)."""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Attention, Embeddings, Head, LayerSpec, Model, Norm

NAMES = {"attn": "attn.", "qkv": "attn.c_attn", "o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"}


def read(c: ConfigReader) -> Model:
    if c.flag("add_cross_attention", default=False):
        raise c.refuse("add_cross_attention", "cross-attention blocks")
    hidden = c.integer("n_embd", "hidden_size")
    n_heads = c.integer("n_head", "num_attention_heads")
    if hidden % n_heads:
        raise c.bad("n_head", f"a divisor of n_embd ({hidden})", n_heads)
    attn = d.safe(c, lambda: Attention(heads=n_heads, kv_heads=n_heads, head_dim=hidden // n_heads,
                                       position="learned", fused_qkv=True, qkv_bias=True, out_bias=True,
                                       dropout=c.probability("attn_pdrop", default=0.1), conv1d=True))
    # configuration_gpt2.py: n_inner None -> 4 * n_embd
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("n_inner", default=4 * hidden), gated=False, bias=True,
                                activation=c.activation("activation_function", default="gelu_new"), conv1d=True))
    layer = LayerSpec(attention=attn, ffn=ffn, norm=Norm(kind="layernorm", bias=True),
                      dropout=c.probability("resid_pdrop", default=0.1))
    return d.decoder(c, family="gpt2", hidden=hidden, layers=[layer] * d.n_layers(c, "n_layer", "num_hidden_layers"),
                     vocab=c.integer("vocab_size"),
                     max_positions=c.integer("n_positions", "max_position_embeddings", default=1024),
                     norm=Norm(kind="layernorm", bias=True),
                     embeddings=Embeddings(learned_positions=True, dropout=c.probability("embd_pdrop", default=0.1)),
                     head=Head(tied=c.flag("tie_word_embeddings", default=True)), names=NAMES)


FAMILY = Family(model_types=("gpt2",), read=read, description="GPT-2: learned positions, fused Conv1D QKV, GeLU",
                peft_targets=("c_attn",), transformers_class="GPT2LMHeadModel",
                flag_keys={"layers": ("n_layer", "num_hidden_layers"), "hidden": ("n_embd", "hidden_size"),
                           "heads": ("n_head", "num_attention_heads"), "ffn": ("n_inner",),
                           "max_positions": ("n_positions", "max_position_embeddings")})
