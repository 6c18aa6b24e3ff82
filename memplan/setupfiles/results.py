"""What reading an engine's config file answers, and what an emitter takes and gives (pydantic, no arithmetic).

`SetupKeywords` are the setup's keyword arguments under the CLI flags' names (with '_'); None = the file says
nothing about it, so the setup's own default applies.  Every value a reader sets has a `FieldRead` saying
which key of which file it came from; every key it did not use has a `FieldIgnored` saying why.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memplan.errors import MemplanError

Offload = Literal["none", "cpu", "nvme"]
Engine = Literal["plain", "deepspeed", "megatron", "fsdp"]
Recompute = Literal["none", "selective", "full", "selective-op"]
OptimizerImpl = Literal["for-loop", "foreach", "fused"]
ReadFormat = Literal["deepspeed", "accelerate", "torchtitan", "axolotl", "hf-trainer", "megatron"]
EmitFormat = Literal["deepspeed", "accelerate", "torchtitan", "megatron"]


class SetupKeywords(BaseModel):
    """A setup as keyword arguments (the CLI flags' names).  `cp`, `ep` and `pin_memory` have no flag yet."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="profile name, hub id or config.json path")
    precision: str | None = None
    grads_dtype: str | None = Field(None, description="the gradients' dtype when the file asks for one "
                                    "(Megatron --grad-reduce-in-bf16)")
    optimizer: str | None = None
    optimizer_impl: OptimizerImpl | None = None
    gpus: int | None = Field(None, gt=0)
    gpus_per_node: int | None = Field(None, gt=0)
    tp: int | None = Field(None, gt=0)
    pp: int | None = Field(None, gt=0)
    cp: int | None = Field(None, gt=0, description="context-parallel size")
    ep: int | None = Field(None, gt=0, description="expert-parallel size")
    etp: int | None = Field(None, gt=0, description="expert-tensor-parallel size")
    first_stage_layers: int | None = Field(None, ge=0, description="uneven pipeline: layers on the first stage")
    last_stage_layers: int | None = Field(None, ge=0, description="uneven pipeline: layers on the last stage")
    sequence_parallel: bool | None = None
    virtual_stages: int | None = Field(None, gt=0)
    zero: int | None = Field(None, ge=0, le=3)
    offload_optimizer: Offload | None = None
    offload_params: Offload | None = None
    pin_memory: bool | None = Field(None, description="offload buffers in page-locked CPU memory")
    engine: Engine | None = None
    micro_batch: int | None = Field(None, gt=0)
    seq: int | None = Field(None, gt=0)
    grad_accum: int | None = Field(None, gt=0)
    global_batch: int | None = Field(None, gt=0, description="sequences per optimizer step (plan --global-batch)")
    recompute: Recompute | None = None
    recompute_every: int | None = Field(None, gt=0, description="full recompute of every Nth layer only")
    attention: Literal["eager", "sdpa", "flash"] | None = None
    lora_rank: int | None = Field(None, gt=0)
    lora_targets: str | None = Field(None, description="comma-separated module names, or all-linear")
    quantize_base: Literal["nf4", "int8"] | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = Field(None, ge=0, lt=1)

    def given(self) -> dict[str, Any]:
        """Everything the file said."""
        return self.model_dump(exclude_none=True)

    def setup_kwargs(self) -> dict[str, Any]:
        """What the file said that a training setup takes (memplan.setups.training_setup's keywords):
        `global_batch` is plan's argument and `pin_memory` is not modelled, so both stay out."""
        return {k: v for k, v in self.given().items() if k not in NOT_SETUP_KEYWORDS}


NOT_SETUP_KEYWORDS = frozenset({"global_batch", "pin_memory"})


class FieldRead(BaseModel):
    file: str
    key: str = Field(description="key path in the file, e.g. zero_optimization.stage")
    field: str = Field(description="the SetupKeywords field it sets")
    value: Any
    note: str = Field("", description="how the value was interpreted, with its source")
    default: bool = Field(False, description="not in the file: the engine's documented default for it")
    consulted: bool = Field(False, description="the key informed `field` without setting it (e.g. load_in_8bit: "
                                               "false), or was combined into another key's value")


class FieldIgnored(BaseModel):
    file: str
    key: str
    reason: str


class SetupFileReading(BaseModel):
    path: str
    format: ReadFormat
    setup: SetupKeywords
    read: list[FieldRead] = Field(default_factory=list)
    ignored: list[FieldIgnored] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list, description="every file read: this one and those it names")


class EngineLayout(BaseModel):
    """The layout an emitter writes (what `plan` chose).  dp defaults to gpus / (tp * pp * cp)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    gpus: int = Field(1, gt=0)
    gpus_per_node: int = Field(8, gt=0)
    tp: int = Field(1, gt=0)
    pp: int = Field(1, gt=0)
    dp: int | None = Field(None, gt=0)
    cp: int = Field(1, gt=0)
    ep: int = Field(1, gt=0)
    first_stage_layers: int | None = Field(None, ge=0)
    last_stage_layers: int | None = Field(None, ge=0)
    zero: int = Field(0, ge=0, le=3)
    offload_optimizer: Offload = "none"
    offload_params: Offload = "none"
    engine: Engine | None = Field(None, description="for accelerate: which plugin (deepspeed or fsdp)")
    micro_batch: int = Field(1, gt=0)
    grad_accum: int = Field(1, gt=0)
    recompute: Recompute = "none"
    recompute_every: int = Field(1, gt=0)
    sequence_parallel: bool = False
    virtual_stages: int = Field(1, gt=0)
    precision: str = "bf16-mixed"
    optimizer: str = "adamw"
    seq: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _dp(self) -> "EngineLayout":
        other = self.tp * self.pp * self.cp
        if self.gpus % other:
            raise MemplanError(f"layout: gpus {self.gpus} is not divisible by tp*pp*cp = {other}")
        if self.dp is None:
            self.dp = self.gpus // other
        elif self.dp * other != self.gpus:
            raise MemplanError(f"layout: dp*tp*pp*cp = {self.dp * other} but gpus = {self.gpus}")
        return self

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * (self.dp or 1)


class EmittedSetup(BaseModel):
    format: EmitFormat
    text: str
    filename: str = Field(description="a conventional file name for it")
    warnings: list[str] = Field(default_factory=list, description="what the format cannot express, and why")
