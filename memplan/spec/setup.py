"""A whole training setup: the one object every estimate, timing and plan takes."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from memplan.spec.model import ModelSpec
from memplan.spec.layout import Layout
from memplan.spec.training import (DEFAULT_TRAINING_SEQ, OptimizerSpec, Recipe, Workload, get_optimizer,
                                   get_recipe)


class LoraSpec(BaseModel):
    """LoRA / QLoRA adapters (Hu et al. 2021; Dettmers et al. 2023). Filled in by the fine-tuning support."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(gt=0)
    alpha: float | None = None
    targets: list[str] | None = Field(None, description="module roles/names; None = PEFT's default for the family")
    quantize_base: str | None = Field(None, description="nf4 | int8 (bitsandbytes), None = recipe's weight dtype")
    roles: list[str] = Field(default_factory=list, description="Linear roles the targets resolve to")
    dropout: float = Field(0.0, ge=0, lt=1, description="lora_dropout (PEFT default 0.0: nn.Identity, no copy)")
    paged_optimizer: bool = Field(False, description="bitsandbytes paged optimizer (QLoRA): states may page to CPU")


class Assumed(BaseModel):
    """An input the user did not give that drives the answer: its value, the flag (CLI) / keyword (API) that sets
    it, and why this value."""

    input: str = Field(description="the keyword, e.g. seq, micro_batch, precision")
    value: str | int
    why: str = ""


class TrainingSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Filled by memplan/setups.py: the inputs it assumed (not given) and what a setup file's reader warned about.
    # Private: not part of the setup's JSON or of a setup file; the answers copy them into their `assumed` and
    # `warnings` fields.
    _assumed: list[Assumed] = PrivateAttr(default_factory=list)
    _warnings: list[str] = PrivateAttr(default_factory=list)
    _given: dict = PrivateAttr(default_factory=dict)

    model: ModelSpec
    recipe: Recipe = Field(default_factory=lambda: get_recipe("bf16-mixed"))
    optimizer: OptimizerSpec = Field(default_factory=lambda: get_optimizer("adamw"))
    layout: Layout = Field(default_factory=Layout)
    workload: Workload = Field(default_factory=Workload)
    lora: LoraSpec | None = None

    @property
    def assumed(self) -> list[Assumed]:
        return list(self._assumed)

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    @property
    def given(self) -> dict:
        """The keyword arguments the setup was built from (what the user set: --save-setup writes these)."""
        return dict(self._given)

    @property
    def seq(self) -> int:
        """Sequence length: the workload's, else default_seq(model) (spec/training.py DEFAULT_TRAINING_SEQ)."""
        return self.workload.seq or default_seq(self.model)


def default_seq(model: ModelSpec) -> int:
    """The training sequence when none is given: DEFAULT_TRAINING_SEQ, or the model's max positions if smaller
    (BERT's 512, GPT-2's 1024): never a long-context model's whole window (see spec/training.py)."""
    if model.architecture is not None and model.architecture.max_positions:
        return min(model.architecture.max_positions, DEFAULT_TRAINING_SEQ)
    return DEFAULT_TRAINING_SEQ
