"""BERT (transformers models/bert/modeling_bert.py), encoder-only.

BertEmbeddings: word + position + token_type tables, a LayerNorm and dropout (hidden_dropout_prob).  Per layer:
attention.self.{query,key,value} and attention.output.dense (all biased), a LayerNorm after each residual add
(post-norm), intermediate.dense and output.dense (biased).  The head follows the config's `architectures`:
- BertModel (none given): a pooler (dense hidden x hidden with bias, tanh) over the first token;
- BertForMaskedLM: no pooler (add_pooling_layer=False); cls.predictions: transform dense + act + LayerNorm, the
  decoder tied to the word embeddings plus its own bias vector (BertLMPredictionHead.bias);
- BertForPreTraining: the MLM head, the pooler and the next-sentence classifier (seq_relationship, hidden x 2).
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Attention, Embeddings, Extra, Head, LayerSpec, Model, Norm

NAMES = {"attn": "attention.self.", "q": "attention.self.query", "k": "attention.self.key",
         "v": "attention.self.value", "o": "attention.output.dense", "up": "intermediate.dense",
         "down": "output.dense"}
HEADS = ("BertModel", "BertForMaskedLM", "BertForPreTraining")


def head_class(c: ConfigReader) -> str:
    archs = c.str_list("architectures", default=[])
    for name in archs:
        if name in HEADS:
            return name
    return "BertModel"


def read(c: ConfigReader) -> Model:
    if c.flag("add_cross_attention", default=False) or c.flag("is_decoder", default=False):
        raise c.refuse("is_decoder/add_cross_attention", "BERT as a decoder with cross-attention")
    if c.text("position_embedding_type", default="absolute") != "absolute":
        raise c.refuse("position_embedding_type", "relative position embeddings")
    hidden = c.integer("hidden_size")
    dropout = c.probability("hidden_dropout_prob", default=0.1)
    hd = d.heads(c, hidden, kv_key="num_attention_heads")
    attn = d.safe(c, lambda: Attention(**hd, position="learned", qkv_bias=True, out_bias=True, causal=False,
                                       dropout=c.probability("attention_probs_dropout_prob", default=0.1)))
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("intermediate_size"), gated=False, bias=True,
                                activation=c.activation("hidden_act", default="gelu")))
    norm = Norm(kind="layernorm", bias=True)
    layer = LayerSpec(attention=attn, ffn=ffn, norm=norm, norm_place="post", dropout=dropout)
    cls = head_class(c)
    mlm = cls in ("BertForMaskedLM", "BertForPreTraining")
    head = Head(objective="masked-lm" if mlm else "encoder", final_norm=False, lm_head=mlm, tied=True, bias=mlm,
                pooler=cls != "BertForMaskedLM", mlm_transform=mlm)
    extras = [Extra(name="next-sentence classifier", params=2 * hidden + 2,
                    note="BertOnlyNSPHead.seq_relationship")] if cls == "BertForPreTraining" else []
    return d.decoder(c, family="bert", hidden=hidden, layers=[layer] * d.n_layers(c), vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=512), norm=norm,
                     embeddings=Embeddings(learned_positions=True, token_types=c.integer("type_vocab_size", default=2),
                                           norm=True, dropout=dropout),
                     head=head, names=NAMES, extras=extras)


def transformers_class(config: dict) -> str:
    archs = config.get("architectures") or []
    return next((a for a in archs if a in HEADS), "BertModel")


FAMILY = Family(model_types=("bert",), read=read, description="BERT: encoder, post-norm, MLM head per architectures",
                peft_targets=("query", "value"), transformers_class=transformers_class)
