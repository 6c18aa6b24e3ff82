"""How many parameters one GPU holds before ZeRO sharding: the tensor-, expert- and pipeline-parallel split.

Megatron-LM (Shoeybi et al. 2019, section 3): attention and MLP matrices are split column- or row-wise across
the TP group (row-parallel biases replicated, whole heads per rank: `Linear.shard`), word embeddings and the LM
head are vocab-parallel, norms and learned position embeddings replicated.  Megatron-Core MoE: the routed experts
of a layer are divided over the expert-parallel group (`--expert-model-parallel-size`), each expert split by the
expert-tensor-parallel size.  Pipeline parallelism (Narayanan et al. 2021): contiguous layer ranges per stage
(`Layout.stage_layers`, uneven stages included), the embeddings on the first stage, the final norm and LM head on
the last; with tied embeddings the last stage keeps its own copy of the word embeddings (Megatron's
`share_embeddings_and_output_weights`).  We report the most loaded stage: the GPU that runs out of memory first.
"""
from __future__ import annotations

import math

from pydantic import BaseModel, Field

from memplan.errors import MemplanError
from memplan.spec.layout import Layout
from memplan.spec.model import LayerGroup, Model, ModelSpec
from memplan.spec.tensors import ParamTensor, embedding_tensors, head_tensors, largest_module_params, layer_tensors

# (rows, cols, count) of one tensor on one GPU; cols = 1 for vectors.  rows is the dim FSDP shards (dim 0).
Numel = tuple[int, int, int]


class LocalGroup(BaseModel):
    """The layers of one layer group that sit on this GPU's stage."""

    count: int
    params_per_layer: int  # one layer on this GPU (TP/EP shard)
    expert_params_per_layer: int = 0  # of which routed experts (ZeRO shards them over the expert-DP group)
    tensors_per_layer: list[Numel] = []


class LocalParameters(BaseModel):
    """Parameters on one GPU of the most loaded pipeline stage, after TP/EP, before ZeRO."""

    params: int
    expert_params: int = Field(0, description="routed-expert parameters among `params`")
    stage: int = 0
    layers: int = 0
    first_layer: int = 0
    groups: list[LocalGroup] = []
    layer_params: int = Field(0, description="the largest layer on this GPU (what ZeRO-3/FSDP gather at once)")
    largest_module_params: int = 0
    tensor_numels: list[Numel] = []  # every tensor on this GPU, in registration order
    embedding_numels: list[Numel] = []  # of which the embeddings (and extras) before the layers (first stage)
    head_numels: list[Numel] = []  # ... and the head after them (last stage)
    layer_tensor_numels: list[Numel] = []  # the largest layer's tensors
    exact: bool = True

    @property
    def dense_params(self) -> int:
        return self.params - self.expert_params


def check_layout(model: Model, layout: Layout) -> None:
    """Divisibility rules that need the model (one line each, with what to change)."""
    tp, ep = layout.tp, layout.ep
    for layer, _ in model.kinds():
        a = layer.attention
        if a.heads % tp or (a.kv_heads % tp and tp % a.kv_heads):
            raise MemplanError(
                f"--tp {tp} must divide the {a.heads} attention heads (and the {a.kv_heads} KV heads, or be a "
                "multiple of them): choose a TP size that divides the head counts")
        if layer.ffn.moe and layer.ffn.experts % ep:
            raise MemplanError(f"--ep {ep} must divide the {layer.ffn.experts} routed experts of a layer")
    if ep > 1 and not model.moe:
        raise MemplanError("--ep needs a MoE model (routed experts to shard); this model is dense")
    if layout.pp > model.n_layers:
        raise MemplanError(f"--pp {layout.pp} exceeds the model's {model.n_layers} layers")


def _numel(t: ParamTensor, layout: Layout) -> tuple[Numel, bool]:
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


def _group_tensors(model: Model, gi: int, layout: Layout) -> tuple[list[Numel], int]:
    numels, expert = [], 0
    for t in layer_tensors(model, gi):
        n, is_expert = _numel(t, layout)
        numels.append(n)
        if is_expert:
            expert += n[0] * n[1] * n[2]
    return numels, expert


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


# local_parameters depends on the model and on the layout's TP, EP, ETP and pipeline split only: `plan` asks for
# thousands of layouts that share them (ZeRO, offload, micro-batch, recompute), so the answer is kept, per model
# object (identity: memplan never edits a ModelSpec in place -- with_overrides and model_copy make new ones -- and
# the entry holds the model, so its id is not reused while cached)
_LOCAL_CACHE: dict[tuple, tuple[ModelSpec, "LocalParameters"]] = {}
_LOCAL_CACHE_SIZE = 1024


def local_parameters(model: ModelSpec, layout: Layout) -> LocalParameters:
    tp, pp = layout.tp, layout.pp
    if model.architecture is None:
        n = model.parameters.total
        # No architecture: an even split is the best we can say (stated as approximate).
        return LocalParameters(params=math.ceil(n / (tp * pp)), exact=(tp * pp == 1))
    key = (id(model), tp, layout.ep, layout.etp, pp, tuple(layout.stage_bounds(model.architecture.n_layers)))
    hit = _LOCAL_CACHE.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    local = _local_parameters(model, layout)
    if len(_LOCAL_CACHE) >= _LOCAL_CACHE_SIZE:
        _LOCAL_CACHE.clear()
    _LOCAL_CACHE[key] = (model, local)
    return local


def _local_parameters(model: ModelSpec, layout: Layout) -> LocalParameters:
    tp, pp = layout.tp, layout.pp
    m = model.architecture
    check_layout(m, layout)
    per_group = [_group_tensors(m, i, layout) for i in range(len(m.groups))]
    first = [_numel(t, layout)[0] for t in embedding_tensors(m)]
    last = [_numel(t, layout)[0] for t in head_tensors(m)]
    if m.head.lm_head and m.head.tied and pp > 1:
        last.append((math.ceil(m.vocab_size / tp), m.hidden_size, 1))  # Megatron keeps a tied copy on the last stage
    if m.mtp is not None and m.mtp.trained:
        from memplan.spec.tensors import mtp_tensors

        last += [(n[0], n[1], n[2] * t.count) for t in mtp_tensors(m) for n in [_numel(t, layout)[0]]]
    extras = [(x.params, 1, 1) for x in m.extras if x.params]

    stages = stage_groups(m, layout)
    bounds = layout.stage_bounds(m.n_layers)
    best: LocalParameters | None = None
    largest_module = math.ceil(largest_module_params(m) / tp)
    for s, groups in enumerate(stages):
        tensors: list[Numel] = []
        local_groups: list[LocalGroup] = []
        expert_total = 0
        for gi, g in groups:
            numels, expert = per_group[gi]
            per_layer = sum(r * c * k for r, c, k in numels)
            local_groups.append(LocalGroup(count=g.count, params_per_layer=per_layer, expert_params_per_layer=expert,
                                           tensors_per_layer=numels))
            tensors += [(r, c, k * g.count) for r, c, k in numels]
            expert_total += expert * g.count
        before = first + extras if s == 0 else []
        after = last if s == pp - 1 else []
        tensors = before + tensors + after
        params = sum(r * c * k for r, c, k in tensors)
        if best is None or params > best.params:
            biggest = max(local_groups, key=lambda lg: lg.params_per_layer, default=None)
            best = LocalParameters(
                params=params, expert_params=expert_total, stage=s, layers=bounds[s][1] - bounds[s][0],
                first_layer=bounds[s][0], groups=local_groups,
                layer_params=biggest.params_per_layer if biggest else 0, largest_module_params=largest_module,
                tensor_numels=tensors, layer_tensor_numels=biggest.tensors_per_layer if biggest else [],
                embedding_numels=before, head_numels=after)
    assert best is not None
    return best
