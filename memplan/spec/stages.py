"""What one GPU of each pipeline stage holds: its layer groups, and its parameter tensors after the TP/EP split.

The one place stages and per-GPU parameters are computed.  Memory (model states, ZeRO/FSDP shards, LoRA), time
(the gradient all-reduce of each group) and serving read it, so they cannot disagree (they did: the time model
missed the vision tower, BERT's pooler and MLM transform, MTP modules and the final norm's bias).

- Layers: Layout.stage_bounds (uneven first/last stages included) cut the model's layer groups.
- Tensors: spec/tensors.py in registration order; a linear's weight and bias split by Linear.shard (TP, EP, ETP);
  a vector or table of split "column"/"vocab" is divided over TP (rounded up: Megatron pads the vocabulary).
- The first stage holds the embeddings and the model's extras (a vision tower and projector: they run before the
  first layer); the last holds the final norm and the head, MTP modules when trained, and with tied embeddings and
  pp > 1 its own copy of the word embeddings (Megatron's share_embeddings_and_output_weights: the two copies'
  gradients are all-reduced between the first and last stage).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from memplan.spec.layout import Layout
from memplan.spec.model import LayerGroup, Model
from memplan.spec.tensors import (ParamTensor, embedding_tensors, head_tensors, layer_tensors, mtp_tensors)

Numel = tuple[int, int, int]  # (rows, cols, count): one tensor on one GPU, `count` identical copies (layers)


def stage_groups(model: Model, layout: Layout) -> list[list[tuple[int, LayerGroup]]]:
    """Per pipeline stage: (index into model.groups, the trimmed group) of the layers it holds."""
    out = []
    for start, stop in layout.stage_bounds(model.n_layers):
        pos, here = 0, []
        for i, g in enumerate(model.groups):
            lo, hi = max(start, pos), min(stop, pos + g.count)
            if hi > lo:
                here.append((i, LayerGroup(count=hi - lo, layer=g.layer)))
            pos += g.count
        out.append(here)
    return out


def tensor_numel(t: ParamTensor, layout: Layout) -> tuple[Numel, bool]:
    """One tensor on one GPU as (rows, cols, count), and whether it is a routed expert's."""
    if t.linear is not None:
        sh = t.linear.shard(layout.tp, layout.ep, layout.etp)
        expert = t.linear.routed
        if t.is_bias:
            return (sh.bias * sh.count, 1, 1) if t.linear.routed else (sh.bias, 1, 1), expert
        # FSDP's dim 0: an expert bank's experts, else the stored first dim
        if t.linear.routed and not t.linear.is_module:
            return (sh.count, sh.rows * sh.cols, 1), True
        rows, cols = (sh.cols, sh.rows) if t.linear.transposed else (sh.rows, sh.cols)
        return (rows, cols, sh.count), expert
    size = t.shape[0]
    if t.split in ("column", "vocab") and layout.tp > 1:
        size = math.ceil(size / layout.tp)
    cols = t.shape[1] if len(t.shape) > 1 else 1
    return (size, cols, 1), False


def numel_total(numels: list[Numel]) -> int:
    return sum(r * c * k for r, c, k in numels)


@dataclass(frozen=True)
class GroupTensors:
    """One layer group on one stage: `count` layers, each holding `tensors` (`expert` of them routed experts')."""

    index: int  # into Model.groups
    count: int
    layer: object  # the LayerSpec
    tensors: tuple[Numel, ...]
    expert: int

    @property
    def params_per_layer(self) -> int:
        return numel_total(list(self.tensors))


@dataclass(frozen=True)
class StageTensors:
    stage: int
    first_layer: int
    layers: int
    before: tuple[Numel, ...]  # embeddings and extras (first stage)
    groups: tuple[GroupTensors, ...]
    after: tuple[Numel, ...]  # final norm, head, MTP, the tied copy (last stage)
    tied_copy: int = 0  # of `after`: the last stage's copy of tied word embeddings

    @property
    def tensors(self) -> list[Numel]:
        """Every tensor in registration order, a group's layers as one row each (count x layers)."""
        return [*self.before, *[(r, c, k * g.count) for g in self.groups for r, c, k in g.tensors], *self.after]

    @property
    def params(self) -> int:
        return numel_total(list(self.before)) + sum(g.count * g.params_per_layer for g in self.groups) \
            + numel_total(list(self.after))

    @property
    def expert_params(self) -> int:
        return sum(g.count * g.expert for g in self.groups)

    @property
    def dense_params(self) -> int:
        return self.params - self.expert_params


def _group_tensors(model: Model, gi: int, layout: Layout) -> tuple[tuple[Numel, ...], int]:
    numels, expert = [], 0
    for t in layer_tensors(model, gi):
        n, is_expert = tensor_numel(t, layout)
        numels.append(n)
        if is_expert:
            expert += n[0] * n[1] * n[2]
    return tuple(numels), expert


def stage_tensors(model: Model, layout: Layout) -> list[StageTensors]:
    """Each pipeline stage's tensors on one of its GPUs."""
    tp, pp = layout.tp, layout.pp
    per_group = [_group_tensors(model, i, layout) for i in range(len(model.groups))]
    first = [tensor_numel(t, layout)[0] for t in embedding_tensors(model)]
    first += [(x.params, 1, 1) for x in model.extras if x.params]
    last = [tensor_numel(t, layout)[0] for t in head_tensors(model)]
    tied = 0
    if model.head.lm_head and model.head.tied and pp > 1:
        tied = math.ceil(model.vocab_size / tp) * model.hidden_size
        last.append((math.ceil(model.vocab_size / tp), model.hidden_size, 1))
    if model.mtp is not None and model.mtp.trained:
        last += [(n[0], n[1], n[2] * t.count) for t in mtp_tensors(model) for n in [tensor_numel(t, layout)[0]]]
    bounds = layout.stage_bounds(model.n_layers)
    out = []
    for s, groups in enumerate(stage_groups(model, layout)):
        here = tuple(GroupTensors(gi, g.count, g.layer, *per_group[gi]) for gi, g in groups)
        out.append(StageTensors(stage=s, first_layer=bounds[s][0], layers=bounds[s][1] - bounds[s][0],
                                before=tuple(first) if s == 0 else (), groups=here,
                                after=tuple(last) if s == pp - 1 else (), tied_copy=tied if s == pp - 1 else 0))
    return out
