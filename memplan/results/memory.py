"""The memory estimate: per GPU, per node's CPU RAM and NVMe, each component explained.

JSON field names here are a public interface (scripts depend on them): `parameters`, `per_gpu.{weights,
gradients, master_weights, optimizer_states, model_states, activations, peak_allocated, required, total}`,
`cpu`/`nvme` `{..., total}`, `fits`, `peak_phase`, `max_micro_batch`, `max_seq`. Add fields; never rename.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from memplan.results.views import ComparisonView, MemoryView
from memplan.spec.setup import Assumed, TrainingSetup

Location = Literal["gpu", "cpu", "nvme"]
Category = Literal["weights", "gradients", "master_weights", "optimizer_states", "gathered_parameters", "buffers",
                   "activations",
                   "temporaries",
                   "overheads", "kv_cache"]


class Component(BaseModel):
    """One line of the breakdown: what it is, its dtype, bytes per parameter (when that is meaningful), where."""

    name: str
    category: Category
    dtype: str | None = None
    bytes_per_param: float | None = Field(None, description="bytes per model parameter, before sharding")
    sharded_over: int = Field(1, description="how many ranks share this component (ZeRO / DP sharding)")
    bytes: int = Field(description="bytes per GPU (location gpu) or per node (cpu, nvme)")
    location: Location = "gpu"
    note: str = ""
    detail: str = Field("", description="activation rows: the traced aten ops that made and saved the tensors "
                                        "(the table shows `name`; --verbose and --json this)")
    rows: int = Field(1, description="activation rows: implementation rows of this name added up into this one")


class PerGPU(BaseModel):
    weights: int = 0
    gradients: int = 0
    master_weights: int = 0
    optimizer_states: int = 0
    model_states: int = Field(0, description="weights + gradients + master_weights + optimizer_states")
    gathered_parameters: int = Field(0, description="ZeRO-3/FSDP: unsharded parameters of the layers in flight")
    activations: int = Field(0, description="saved activations at the peak (incl. logits kept for backward)")
    saved_activations: int = Field(0, description="everything kept for backward at the start of backward "
                                                  "(whatever the peak's phase)")
    temporaries: int = Field(0, description="transient buffers alive at the peak (optimizer, loss, workspaces)")
    kv_cache: int = 0
    buffers: int = Field(0, description="communication buckets allocated through the caching allocator (DDP, ZeRO)")
    peak_allocated: int = Field(0, description="comparable with torch.cuda.max_memory_allocated() for the step")
    overheads: int = Field(0, description="CUDA context, library workspaces, allocator reserve, comm buffers")
    required: int = Field(0, description="peak_allocated + overheads: compared with the GPU's memory for `fits`")
    total: int = Field(0, description="equals `required`; kept as the headline number")


class HostMemory(BaseModel):
    """Bytes per node in CPU RAM or on NVMe (offload)."""

    weights: int = 0
    gradients: int = 0
    master_weights: int = 0
    optimizer_states: int = 0
    total: int = 0


class Phase(BaseModel):
    """The memory held at one moment of the step, by category."""

    name: str
    bytes: dict[str, int]
    total: int


class LayerGroupSummary(BaseModel):
    """One layer group of the model: what kind of layer, how many, its parameters and (for the most loaded stage)
    what one layer keeps for backward per micro-batch on one GPU."""

    first_layer: int
    count: int
    kind: str = Field(description="e.g. 'sliding-window (4096), dense FFN (14336)'")
    attention: str = Field(description="mha, gqa, mqa or mla")
    window: int | None = None
    window_kind: str = "global"
    ffn: str = Field(description="dense or moe")
    parameters_per_layer: int
    active_parameters_per_layer: int
    activations_per_layer: int | None = Field(None, description="bytes kept per layer and micro-batch on one GPU "
                                                                "(layers of the most loaded stage only)")


class MemoryEstimate(MemoryView, BaseModel):
    model: str
    parameters: int
    parameters_exact: bool = True
    setup: TrainingSetup
    convention: str = Field(description="which accounting this follows, e.g. 'plain (ZeRO paper, 2+2+12 B/param)'")
    components: list[Component]
    per_gpu: PerGPU
    cpu: HostMemory
    nvme: HostMemory
    gpu: str | None = None
    gpu_memory: int | None = None
    fits: bool | None = None
    headroom: int | None = Field(None, description="gpu_memory - required (negative: short by that much)")
    peak_phase: str | None = None
    timeline: list[Phase] = []
    max_micro_batch: int | None = None
    max_seq: int | None = None
    layers: str | None = Field(None, description="what is counted per layer kind, e.g. '48 layers: attention 40 "
                                                 "sliding-window (4096) GQA, 8 global GQA; 48 dense FFN (14336)'")
    layer_groups: list[LayerGroupSummary] = []
    objective: str | None = Field(None, description="what is trained: causal-lm, masked-lm, encoder or "
                                                 "sequence-classification (a score head: reward/value models)")
    activation_profile: str | None = Field(None, description="the implementation profile the activation rows "
                                                             "come from (hf, hf-<family> traced, megatron)")
    hint: str | None = Field(None, description="when it does not fit: the smallest change that would (flags)")
    notes: list[str] = []
    assumed: list[Assumed] = Field(default_factory=list, description="inputs not given that drive the answer: "
                                   "the value used (seq, micro_batch, precision, optimizer, engine, attention)")
    warnings: list[str] = Field(default_factory=list, description="what a setup file's reader could not express "
                                "or read another way, and every silent fallback that changes the answer")

    @property
    def bytes_per_param(self) -> float:
        """Model-state bytes per parameter on one GPU (the 16/18/20 figure, after sharding)."""
        return self.per_gpu.model_states / self.parameters if self.parameters else 0.0


class StrategyEstimate(BaseModel):
    strategy: str
    estimate: MemoryEstimate


class Comparison(ComparisonView, BaseModel):
    """`memplan estimate --compare`: one estimate per strategy, same model, GPU count and micro-batch."""

    strategies: list[StrategyEstimate]
