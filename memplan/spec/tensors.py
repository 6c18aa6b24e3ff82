"""The parameter tensors of an architecture, one row per distinct shape and role.

Model-state arithmetic needs shapes, not just counts: Adafactor factors each matrix into a row and a column
vector, 8-bit optimizers keep fp32 states for small tensors, ZeRO-3 gathers one module at a time, LoRA
attaches to named linears.  The rows sum exactly to count_parameters(arch).total (tested).
"""
from __future__ import annotations

from pydantic import BaseModel

from memplan.spec.model import Architecture


class ParamTensor(BaseModel):
    name: str
    shape: tuple[int, ...]
    count: int = 1
    where: str = "layer"  # "embedding", "layer" (count includes n_layers), "head", "final"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def parameter_tensors(a: Architecture) -> list[ParamTensor]:
    h, L = a.hidden_size, a.n_layers
    out = [ParamTensor(name="embed_tokens", shape=(a.vocab_size, h), where="embedding")]
    if a.position == "learned":
        out.append(ParamTensor(name="embed_positions", shape=(a.max_positions, h), where="embedding"))
    if a.token_type_vocab:
        out.append(ParamTensor(name="token_type_embeddings", shape=(a.token_type_vocab, h), where="embedding"))
    norm_shapes = [(h,), (h,)] if a.norm == "layernorm" and a.norm_bias else [(h,)]
    if a.embedding_norm:
        out += [ParamTensor(name="embedding_norm", shape=s, where="embedding") for s in norm_shapes]
    for lin in a.linears():
        out.append(ParamTensor(name=f"{lin.role}.weight", shape=(lin.out_features, lin.in_features),
                               count=L * lin.count))
        if lin.bias:
            out.append(ParamTensor(name=f"{lin.role}.bias", shape=(lin.out_features,), count=L * lin.count))
    for s in norm_shapes:
        if a.norms_per_layer:
            out.append(ParamTensor(name="norm", shape=s, count=L * a.norms_per_layer))
        if a.final_norm:
            out.append(ParamTensor(name="final_norm", shape=s, where="final"))
    if a.lm_head and not a.tied_embeddings:
        out.append(ParamTensor(name="lm_head.weight", shape=(a.vocab_size, h), where="head"))
        if a.lm_head_bias:
            out.append(ParamTensor(name="lm_head.bias", shape=(a.vocab_size,), where="head"))
    if a.pooler:
        out += [ParamTensor(name="pooler.weight", shape=(h, h), where="head"),
                ParamTensor(name="pooler.bias", shape=(h,), where="head")]
    return out


def largest_module_params(a: Architecture) -> int:
    """Largest parameter count held directly by one nn.Module (DeepSpeed's `largest_layer_params`,
    deepspeed/runtime/zero/stage3.py model_to_params: max over modules of sum(p.numel(), recurse=False))."""
    candidates = [a.vocab_size * a.hidden_size]
    candidates += [lin.in_features * lin.out_features + (lin.out_features if lin.bias else 0) for lin in a.linears()]
    if a.position == "learned":
        candidates.append(a.max_positions * a.hidden_size)
    return max(candidates)
