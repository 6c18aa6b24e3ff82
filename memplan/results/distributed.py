"""A multi-rank profile: per rank, what it measured beside what the estimate says one GPU holds.

JSON field names are a public interface: `ranks` is a list of {`rank`, `measured`, `estimated`, `difference`,
`explanations`}; `measured` and `estimated` use the byte field names of `memplan profile` (results/profile.py
MeasuredStep and results/memory.py PerGPU): `weights, master_weights, gradients, optimizer_states, model_states,
gathered_parameters, activations, temporaries, other, peak_allocated`, plus `communication_buffers`.
Add fields; never rename.

`measured` model-state fields (weights, master_weights, gradients, optimizer_states) are the bytes of this rank's
shard: the distinct storages (a storage shared by several tensors, like FSDP's gradient shards, counts once) when
each exists (gradients: at the end of backward).  activations, temporaries and other are at the rank's peak, as in
MeasuredStep.  gathered_parameters and communication_buffers are the most bytes alive at once during the step.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from memplan.report.distributed import COMPARED  # noqa: F401 - the compared fields, named where they are shown
from memplan.results.profile import PhasePeak
from memplan.spec.setup import TrainingSetup

SCHEMA_VERSION = 1



class RankMeasured(BaseModel):
    weights: int
    master_weights: int = 0
    gradients: int
    optimizer_states: int
    model_states: int = Field(description="weights + master_weights + gradients + optimizer_states")
    gathered_parameters: int = Field(0, description="FSDP: most bytes of unsharded parameters alive at once")
    communication_buffers: int = Field(0, description="most bytes alive at once in tensors handed to collectives "
                                                      "that are not model states (DDP buckets, FSDP all-gather / "
                                                      "reduce-scatter buffers)")
    activations: int = 0
    temporaries: int = 0
    other: int = 0
    peak_allocated: int = Field(description="tensor-level peak (cpu/fake); torch.cuda.max_memory_allocated on cuda")
    tracked_peak: int
    peak_phase: str
    at_peak: dict[str, int] = Field(description="bytes by category at the peak (the tracker's categories)")
    local_parameters: int = Field(description="elements of this rank's unpadded parameter shards")
    backend_device_bytes: int | None = Field(None, description="cuda: device memory outside torch's allocator "
                                                               "that appeared after init_process_group (NCCL)")
    phases: list[PhasePeak] = []


class RankEstimated(BaseModel):
    weights: int
    master_weights: int
    gradients: int
    optimizer_states: int
    model_states: int
    gathered_parameters: int
    communication_buffers: int | None = Field(None, description="memory/overheads.py bucket lines (DDP gradient "
                                                                 "buckets); None where the estimate has none")
    backend_device_bytes: int | None = Field(None, description="cuda: the estimate's NCCL buffers line")
    peak_allocated: int


class RankResult(BaseModel):
    rank: int
    measured: RankMeasured
    estimated: RankEstimated
    difference: dict[str, int] = Field(description="measured - estimated, per compared field")
    explanations: dict[str, str] = Field(default_factory=dict, description="field -> why they differ (or agree)")


class DistributedProfile(BaseModel):
    schema_version: int = SCHEMA_VERSION
    kind: str = "memplan.profile.distributed"
    created_utc: str
    strategy: Literal["ddp", "zero1", "zero2", "zero3"]
    world_size: int
    backend: str
    device: Literal["cpu", "cuda", "fake"]
    launcher: Literal["spawn", "torchrun", "fake"]
    model: str
    parameters: int
    model_source: str
    recipe: str
    optimizer: str
    optimizer_impl: str
    mixed_precision: str | None = Field(None, description="FSDP MixedPrecisionPolicy in force, if any")
    wrapping: str = Field(description="what was wrapped, how")
    estimate_convention: str
    estimate_flags: str = Field(description="the `memplan estimate` flags whose per-GPU figures are compared")
    losses: list[float] = Field([], description="mean loss over ranks per step (warm-up steps, then the measured)")
    ranks: list[RankResult]
    notes: list[str] = []
    torch_version: str
    setup: TrainingSetup | None = None

    def rank(self, r: int) -> RankResult:
        return next(x for x in self.ranks if x.rank == r)
