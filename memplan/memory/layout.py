"""How many parameters one GPU holds before ZeRO sharding: the tensor- and pipeline-parallel split.

Megatron-LM (Shoeybi et al. 2019, section 3): attention and MLP matrices are split column- or row-wise across
the TP group (row-parallel biases replicated), word embeddings and the LM head are vocab-parallel, norms and
learned position embeddings are replicated.  Pipeline parallelism (Narayanan et al. 2021): layers are divided
evenly, the embeddings live on the first stage, the final norm and LM head on the last; with tied embeddings
the last stage keeps its own copy of the word embeddings (Megatron's `share_embeddings_and_output_weights`).
We report the most loaded stage, since that is the GPU that runs out of memory first.
"""
from __future__ import annotations

import math

from pydantic import BaseModel

from memplan.spec.model import ModelSpec
from memplan.spec.tensors import largest_module_params, parameter_tensors
from memplan.spec.training import Parallelism


class LocalParameters(BaseModel):
    """Parameters on one GPU of the most loaded pipeline stage, per TP rank, before ZeRO."""

    params: int
    stage: int = 0
    layers: int = 0
    layer_params: int = 0  # one transformer layer on one TP rank
    largest_module_params: int = 0
    tensor_numels: list[tuple[int, int, int]] = []  # (rows, cols, count) per tensor on this GPU; cols=1 for vectors
    layer_tensor_numels: list[tuple[int, int, int]] = []  # the same for one transformer layer
    exact: bool = True


def _stage_layers(n_layers: int, pp: int) -> list[int]:
    base, extra = divmod(n_layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def local_parameters(model: ModelSpec, parallel: Parallelism) -> LocalParameters:
    tp, pp = parallel.tp, parallel.pp
    if model.architecture is None:
        n = model.parameters.total
        # No architecture: an even split is the best we can say (stated as approximate).
        return LocalParameters(params=math.ceil(n / (tp * pp)), exact=(tp * pp == 1))
    a = model.architecture
    if a.n_heads % tp or a.kv_heads % tp and tp % a.kv_heads:
        from memplan.errors import MemplanError

        raise MemplanError(
            f"--tp {tp} must divide the {a.n_heads} attention heads (and the {a.kv_heads} KV heads, or be a multiple "
            "of them): choose a TP size that divides the head counts"
        )
    if pp > a.n_layers:
        from memplan.errors import MemplanError

        raise MemplanError(f"--pp {pp} exceeds the model's {a.n_layers} layers")

    def split(rows: int, cols: int, how: str) -> tuple[int, int]:
        if how == "column":
            return math.ceil(rows / tp), cols
        if how == "row":
            return rows, math.ceil(cols / tp)
        return rows, cols

    layer: list[tuple[int, int, int]] = []
    for lin in a.linears():
        r, c = split(lin.out_features, lin.in_features, lin.split)
        layer.append((r, c, lin.count))
        if lin.bias:
            layer.append((math.ceil(lin.out_features / tp) if lin.split == "column" else lin.out_features, 1,
                          lin.count))
    norm = [(a.hidden_size, 1, 1)] * (2 if a.norm == "layernorm" and a.norm_bias else 1)
    layer += norm * a.norms_per_layer
    layer_params = sum(r * c * k for r, c, k in layer)

    vocab_local = math.ceil(a.vocab_size / tp)
    first: list[tuple[int, int, int]] = [(vocab_local, a.hidden_size, 1)]
    last: list[tuple[int, int, int]] = []
    for t in parameter_tensors(a):
        if t.where == "embedding" and t.name != "embed_tokens":
            first.append((t.shape[0], t.shape[1] if len(t.shape) > 1 else 1, 1))
        elif t.where == "final":
            last.append((t.shape[0], 1, 1))
        elif t.where == "head":
            rows = vocab_local if t.name.startswith("lm_head") else t.shape[0]
            last.append((rows, t.shape[1] if len(t.shape) > 1 else 1, 1))
    if a.lm_head and a.tied_embeddings and pp > 1:
        last.append((vocab_local, a.hidden_size, 1))  # Megatron keeps a tied copy on the last stage

    stages = _stage_layers(a.n_layers, pp)
    best: LocalParameters | None = None
    for i, n_layers in enumerate(stages):
        tensors = [(r, c, k * n_layers) for r, c, k in layer]
        if i == 0:
            tensors = first + tensors
        if i == pp - 1:
            tensors = tensors + last
        params = sum(r * c * k for r, c, k in tensors)
        if best is None or params > best.params:
            best = LocalParameters(params=params, stage=i, layers=n_layers, layer_params=layer_params,
                                   largest_module_params=math.ceil(largest_module_params(a) / tp),
                                   tensor_numels=tensors, layer_tensor_numels=layer)
    assert best is not None
    return best
