"""Parameters each pipeline stage holds per GPU (after TP/EP), split into what reduces over which group.

Dense parameters reduce over the data-parallel group; routed experts over the expert-data-parallel group
(Megatron-Core MoE: world = etp x ep x edp x pp).  The split is spec/stages.py's, the one memory reads too: the
embeddings (and a vision tower) on the first stage, the final norm, LM head and MTP modules on the last, and with
tied embeddings and pp > 1 the last stage keeps its own copy of the word embeddings (Megatron's
share_embeddings_and_output_weights, whose gradient is all-reduced between the two stages).
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.spec.layout import Layout
from memplan.spec.model import Model
from memplan.spec.stages import stage_tensors


@dataclass(frozen=True)
class StageParams:
    dense: float
    expert: float
    layers: int
    tied_copy: float = 0.0  # the last stage's copy of tied word embeddings (all-reduced with the first stage's)

    @property
    def total(self) -> float:
        return self.dense + self.expert


def stage_parameters(m: Model, layout: Layout) -> list[StageParams]:
    """Per stage, one GPU's dense and routed-expert parameters: spec/stages.py, the split memory uses too."""
    return [StageParams(dense=float(st.dense_params), expert=float(st.expert_params), layers=st.layers,
                        tied_copy=float(st.tied_copy)) for st in stage_tensors(m, layout)]
