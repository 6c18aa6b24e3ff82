"""Parameters each pipeline stage holds per GPU (after TP/EP), split into what reduces over which group.

Dense parameters reduce over the data-parallel group; routed experts over the expert-data-parallel group
(Megatron-Core MoE: world = etp x ep x edp x pp).  The split is `Linear.shard` (spec/model.py), the same one
memory/layout.py uses; the embeddings sit on the first stage, the final norm and LM head on the last, and with
tied embeddings and pp > 1 the last stage keeps its own copy of the word embeddings (Megatron's
share_embeddings_and_output_weights, whose gradient is all-reduced between the two stages).
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.memory.layout import stage_groups
from memplan.spec.layout import Layout
from memplan.spec.model import LayerSpec, Model


@dataclass(frozen=True)
class StageParams:
    dense: float
    expert: float
    layers: int
    tied_copy: float = 0.0  # the last stage's copy of tied word embeddings (all-reduced with the first stage's)

    @property
    def total(self) -> float:
        return self.dense + self.expert


def layer_params(m: Model, layer: LayerSpec, tp: int, ep: int, etp: int | None) -> tuple[float, float]:
    """(dense, routed-expert) parameters of one layer on one GPU."""
    dense = expert = 0.0
    for lin in m.linears(layer):
        n = lin.shard(tp, ep, etp).params
        if lin.routed:
            expert += n
        else:
            dense += n
    dense += sum(v.shard(tp) for v in layer.vectors(m.hidden_size, m.module_names))
    return dense, expert


def stage_parameters(m: Model, layout: Layout) -> list[StageParams]:
    tp, ep, etp, pp = layout.tp, layout.ep, layout.etp, layout.pp
    cache: dict[int, tuple[float, float]] = {}
    h, V = m.hidden_size, m.vocab_size
    emb = -(-V // tp) * h + (m.max_positions * h if m.embeddings.learned_positions else 0)
    emb += m.embeddings.token_types * h
    head = (0 if m.head.tied else -(-V // tp) * h) if m.head.lm_head else 0
    head += h if m.head.final_norm else 0
    out = []
    for s, groups in enumerate(stage_groups(m, layout)):
        dense = expert = 0.0
        layers = 0
        for gi, g in groups:
            if gi not in cache:
                cache[gi] = layer_params(m, g.layer, tp, ep, etp)
            d, e = cache[gi]
            dense += g.count * d
            expert += g.count * e
            layers += g.count
        tied = 0.0
        if s == 0:
            dense += emb
        if s == pp - 1:
            dense += head
            if m.head.tied and m.head.lm_head and pp > 1:
                tied = -(-V // tp) * h
                dense += tied
        out.append(StageParams(dense=dense, expert=expert, layers=layers, tied_copy=tied))
    return out
