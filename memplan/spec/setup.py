"""A whole training setup: the one object every estimate, timing and plan takes."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from memplan.spec.model import ModelSpec
from memplan.spec.layout import Layout
from memplan.spec.training import OptimizerSpec, Recipe, Workload, get_optimizer, get_recipe


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


class TrainingSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    recipe: Recipe = Field(default_factory=lambda: get_recipe("bf16-mixed"))
    optimizer: OptimizerSpec = Field(default_factory=lambda: get_optimizer("adamw"))
    layout: Layout = Field(default_factory=Layout)
    workload: Workload = Field(default_factory=Workload)
    lora: LoraSpec | None = None

    @property
    def seq(self) -> int:
        """Sequence length: the workload's, else the model's max positions, else 2048."""
        if self.workload.seq:
            return self.workload.seq
        if self.model.architecture is not None:
            return self.model.architecture.max_positions
        return 2048
