"""The parameter tensors of a model, in registration order, one row per distinct tensor of a layer group.

Model-state arithmetic needs shapes, not just counts: Adafactor factors each matrix into a row and a column
vector, 8-bit optimizers keep fp32 states for small tensors, ZeRO-3 gathers one module at a time, FSDP pads
dim 0, the for-loop optimizer's temporaries follow the order torch.optim walks.  The rows sum exactly to
count_parameters(model).total (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.spec.model import LayerSpec, Linear, Model


@dataclass(frozen=True)
class ParamTensor:
    name: str
    shape: tuple[int, ...]
    count: int = 1  # identical tensors: the layers of a group
    where: str = "layer"  # "embedding", "layer", "head", "final", "mtp", "extra"
    group: int = -1  # index into Model.groups for layer tensors
    linear: Linear | None = None  # the linear a weight or bias belongs to (its TP split)
    is_bias: bool = False
    split: str = "replicated"  # vectors: how TP cuts them (column: sharded with the heads)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def layer_tensors(m: Model, group: int, layer: LayerSpec | None = None) -> list[ParamTensor]:
    """One layer of group `group` (or the given spec): its linears (weight, bias) then its vectors."""
    layer = layer if layer is not None else m.groups[group].layer
    out: list[ParamTensor] = []
    for lin in m.linears(layer):
        out.append(ParamTensor(f"{lin.name}.weight", lin.param_shape, group=group, linear=lin))
        if lin.bias:
            shape = (lin.experts, lin.out_features) if lin.routed and not lin.is_module else (lin.out_features,)
            out.append(ParamTensor(f"{lin.name}.bias", shape, group=group, linear=lin, is_bias=True))
    for v in layer.vectors(m.hidden_size, m.module_names):
        out.append(ParamTensor(v.name, (v.size,), group=group, split=v.split))
    return out


def embedding_tensors(m: Model) -> list[ParamTensor]:
    h = m.hidden_size
    out = [ParamTensor("embed_tokens", (m.vocab_size, h), where="embedding", split="vocab")]
    if m.embeddings.learned_positions:
        out.append(ParamTensor("embed_positions", (m.max_positions, h), where="embedding"))
    if m.embeddings.token_types:
        out.append(ParamTensor("token_type_embeddings", (m.embeddings.token_types, h), where="embedding"))
    if m.embeddings.norm:
        out += [ParamTensor("embedding_norm", (h,), where="embedding")] * m.norm.vectors_per_norm
    return out


def head_tensors(m: Model) -> list[ParamTensor]:
    h, V, hd = m.hidden_size, m.vocab_size, m.head
    out: list[ParamTensor] = []
    if hd.final_norm:
        out += [ParamTensor("final_norm", (h,), where="final")] * m.norm.vectors_per_norm
    if hd.lm_head:
        if hd.mlm_transform:
            out += [ParamTensor("mlm.transform.dense.weight", (h, h), where="head"),
                    ParamTensor("mlm.transform.dense.bias", (h,), where="head")]
            out += [ParamTensor("mlm.transform.norm", (h,), where="head")] * m.norm.vectors_per_norm
        if not hd.tied:
            out.append(ParamTensor("lm_head.weight", (V, h), where="head", split="vocab"))
        if hd.bias:
            out.append(ParamTensor("lm_head.bias", (V,), where="head", split="vocab"))
    if hd.pooler:
        out += [ParamTensor("pooler.weight", (h, h), where="head"), ParamTensor("pooler.bias", (h,), where="head")]
    if hd.score:  # transformers GenericForSequenceClassification: score = nn.Linear(hidden, num_labels, bias=False)
        out.append(ParamTensor("score.weight", (hd.num_labels, h), where="head"))
    return out


def parameter_tensors(m: Model) -> list[ParamTensor]:
    """Every parameter tensor of the whole model (layer tensors with count = the group's layers)."""
    out = embedding_tensors(m)
    for i, g in enumerate(m.groups):
        out += [ParamTensor(t.name, t.shape, g.count, "layer", i, t.linear, t.is_bias, t.split)
                for t in layer_tensors(m, i)]
    out += head_tensors(m)
    if m.mtp is not None and m.mtp.trained:
        out += mtp_tensors(m)
    out += [ParamTensor(x.name, (x.params,), where="extra") for x in m.extras if x.params]
    return out


def mtp_tensors(m: Model) -> list[ParamTensor]:
    """DeepSpeed-V3 MTP modules per depth (Model.mtp_params): enorm, hnorm, eh_proj, one layer, final norm."""
    assert m.mtp is not None
    h, k = m.hidden_size, m.mtp.depth
    norms = [ParamTensor(n, (h,), k, "mtp") for n in ("mtp.enorm", "mtp.hnorm", "mtp.shared_head.norm")
             for _ in range(m.norm.vectors_per_norm)]
    layer = [ParamTensor(f"mtp.{t.name}", t.shape, k, "mtp", -1, t.linear, t.is_bias, t.split)
             for t in layer_tensors(m, -1, m.mtp.layer)]
    return norms[:2 * m.norm.vectors_per_norm] + [ParamTensor("mtp.eh_proj.weight", (h, 2 * h), k, "mtp")] + layer \
        + norms[2 * m.norm.vectors_per_norm:]


def largest_module_params(m: Model) -> int:
    """Largest parameter count held directly by one nn.Module (DeepSpeed's `largest_layer_params`,
    deepspeed/runtime/zero/stage3.py: max over modules of sum(p.numel() for p in module.parameters(recurse=False))).
    A fused expert bank is one module holding every expert's matrices."""
    candidates = [m.vocab_size * m.hidden_size]
    if m.embeddings.learned_positions:
        candidates.append(m.max_positions * m.hidden_size)
    for layer, _ in m.kinds():
        held: dict[str, int] = {}
        for lin in m.linears(layer):
            held[lin.holder] = held.get(lin.holder, 0) + lin.params
        candidates += held.values()
    return max(candidates)
