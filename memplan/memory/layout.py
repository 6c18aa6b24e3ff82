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
from memplan.spec.model import Model, ModelSpec
from memplan.spec.stages import Numel, stage_groups, stage_tensors  # noqa: F401 -- stage_groups: its consumers
from memplan.spec.tensors import largest_module_params

# Numel: (rows, cols, count) of one tensor on one GPU; cols = 1 for vectors; rows is the dim FSDP shards (dim 0).


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
        if layer.mixer is not None and tp > 1:
            raise MemplanError(f"--tp {tp}: tensor parallelism of a {layer.mixer.describe()} layer is not modeled "
                               "(its activations and state split are not traced); use --tp 1")
        a = layer.attn
        if a is None:
            continue
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
    """The most loaded stage's GPU (spec/stages.py: the one per-stage split every consumer reads)."""
    m = model.architecture
    check_layout(m, layout)
    largest_module = math.ceil(largest_module_params(m) / layout.tp)
    best: LocalParameters | None = None
    for st in stage_tensors(m, layout):
        params = st.params
        if best is None or params > best.params:
            local_groups = [LocalGroup(count=g.count, params_per_layer=g.params_per_layer,
                                       expert_params_per_layer=g.expert, tensors_per_layer=list(g.tensors))
                            for g in st.groups]
            biggest = max(local_groups, key=lambda lg: lg.params_per_layer, default=None)
            best = LocalParameters(
                params=params, expert_params=st.expert_params, stage=st.stage, layers=st.layers,
                first_layer=st.first_layer, groups=local_groups,
                layer_params=biggest.params_per_layer if biggest else 0, largest_module_params=largest_module,
                tensor_numels=st.tensors, layer_tensor_numels=biggest.tensors_per_layer if biggest else [],
                embedding_numels=list(st.before), head_numels=list(st.after))
    assert best is not None
    return best
