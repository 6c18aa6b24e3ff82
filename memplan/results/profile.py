"""A measured training step: bytes by category at the peak, per-phase peaks, and how it was measured.

JSON field names are a public interface (the estimate-vs-measurement suite and scripts read them): the integer
byte fields `peak_allocated, weights, master_weights, gradients, optimizer_states, activations, temporaries,
other` are the categories at the overall peak and sum to `peak_allocated` on cpu/fake (tensor-level tracking);
on cuda `peak_allocated` is the caching allocator's figure and `tracked_peak` the tensor-level one.
Add fields; never rename.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from memplan.results.memory import MemoryEstimate
from memplan.results.views import ProfileView
from memplan.results.numbers import (ByteCount, Count, Finite, NonNegativeFinite, PositiveCount,
                                     PositiveFinite)
from memplan.spec.setup import TrainingSetup

SCHEMA_VERSION = 1

CATEGORIES = ("weights", "master_weights", "gradients", "optimizer_states", "activations", "temporaries", "other")
PHASES = ("forward", "loss", "backward", "optimizer_step", "zero_grad")


class PhasePeak(BaseModel):
    """The highest tensor bytes alive during one phase, and the bytes by category at that moment."""

    name: str
    peak_bytes: ByteCount
    bytes: dict[str, ByteCount] = Field(description="category -> bytes at this phase's peak")
    # cuda only: torch.cuda.memory_stats() peaks for this phase (reset at the phase start)
    allocated_peak_bytes: ByteCount | None = None
    reserved_peak_bytes: ByteCount | None = None
    active_peak_bytes: ByteCount | None = None
    requested_peak_bytes: ByteCount | None = None


class CudaInfo(BaseModel):
    """What the driver and the allocator say (cuda only)."""

    device_name: str
    driver: str | None = None
    total_memory_bytes: ByteCount | None = None
    reserved_peak_bytes: ByteCount | None = None
    active_peak_bytes: ByteCount | None = None
    requested_peak_bytes: ByteCount | None = None
    nvml_used_bytes: ByteCount | None = Field(
        None, description="this process's memory as NVML reports it (the whole footprint)")
    context_overhead_bytes: int | None = Field(None, description="nvml_used_bytes - reserved: CUDA context + libraries")
    step_seconds: PositiveFinite | None = Field(None, description="median over timed steps, CUDA events")
    step_seconds_all: list[PositiveFinite] = []
    flops_per_step: Count | None = Field(None, description="torch.utils.flop_counter.FlopCounterMode, one step")
    model_flops_per_step: Count | None = Field(
        None, description="6*N*tokens + attention (PaLM appendix B), no recompute")
    achieved_tflops: PositiveFinite | None = None
    peak_tflops: PositiveFinite | None = Field(None, description="the GPU profile's dense peak for the compute dtype")
    mfu: NonNegativeFinite | None = Field(None, description="model FLOPs / (step time * peak), PaLM appendix B")
    hfu: NonNegativeFinite | None = Field(None, description="hardware FLOPs (incl. recompute) / (step time * peak)")
    snapshot_path: str | None = None


class MeasuredStep(BaseModel):
    """One steady-state training step (after warm-up): forward, loss, backward, optimizer step, zero_grad."""

    schema_version: int = SCHEMA_VERSION
    model: str
    parameters: Count = Field(description="sum of numel over the built module's parameters")
    device: Literal["cpu", "fake", "cuda"]
    model_source: str = Field(description="hf, reference, or factory:<module:function>")
    recipe: str
    optimizer: str
    optimizer_impl: Literal["for-loop", "foreach", "fused"] = Field(
        description="which torch.optim implementation ran (the analytic model needs it: foreach/fused keep "
                    "per-step temporaries the for-loop does not)")
    micro_batch: PositiveCount
    seq: PositiveCount
    recompute: str
    attention: str
    torch_version: str
    transformers_version: str | None = None

    peak_allocated: ByteCount
    weights: ByteCount
    master_weights: ByteCount = 0
    gradients: ByteCount
    optimizer_states: ByteCount
    activations: ByteCount
    temporaries: ByteCount
    other: ByteCount = Field(0, description="buffers (e.g. rotary tables) and the input batch")
    tracked_peak: ByteCount = Field(description="tensor-level peak (equals peak_allocated except on cuda)")
    peak_phase: str
    phases: list[PhasePeak]
    activations_at_backward_start: ByteCount = Field(description="bytes created in forward+loss still alive when "
                                                           "backward starts (the saved activations)")
    timeline_bytes: list[ByteCount] = Field([], description="tensor bytes alive over the measured step, sampled "
                                                       "(each point the max of its span, so the peak is kept)")
    timeline_phase_starts: dict[str, Count] = Field({}, description="phase -> index into timeline_bytes")
    cuda: CudaInfo | None = None
    oom: bool = False
    oom_phase: str | None = None
    oom_message: str | None = None
    notes: list[str] = []
    setup: TrainingSetup | None = None

    def phase(self, name: str) -> PhasePeak | None:
        return next((p for p in self.phases if p.name == name), None)


class ProfileRecord(BaseModel):
    """What `memplan profile --out` writes: the measurement beside the estimate it was compared with."""

    schema_version: int = SCHEMA_VERSION
    kind: str = "memplan.profile"
    created_utc: str
    measured: MeasuredStep
    estimated: dict | None = Field(None, description="MemoryEstimate.model_dump() for the same setup")
    error_percent: Finite | None = None
    gpu: str | None = None
    host: str | None = None
    oom: bool = Field(False, description="the measured step ran out of memory (measured.oom_phase says where)")


class MatmulBench(BaseModel):
    """Square matmul throughput in one dtype: 2*n^3 FLOPs per multiply, median of timed repeats."""

    dtype: str
    n: PositiveCount
    repeats: PositiveCount
    median_seconds: PositiveFinite
    achieved_tflops: PositiveFinite
    peak_tflops: PositiveFinite | None = Field(None, description="the GPU profile's dense peak for this dtype")
    fraction_of_peak: NonNegativeFinite | None = None


class BandwidthBench(BaseModel):
    """A device-to-device copy: bytes read + bytes written per second (STREAM 'Copy' convention)."""

    bytes_copied: ByteCount
    median_seconds: PositiveFinite
    achieved_gbps: PositiveFinite
    peak_gbps: PositiveFinite | None = None
    fraction_of_peak: NonNegativeFinite | None = None


class BenchResult(BaseModel):
    """What `memplan bench` measured on this device (usable as the achievable ceiling for time estimates)."""

    schema_version: int = SCHEMA_VERSION
    kind: str = "memplan.bench"
    created_utc: str
    device: Literal["cpu", "cuda"]
    device_name: str
    gpu_profile: str | None = None
    torch_version: str
    matmul: list[MatmulBench]
    bandwidth: BandwidthBench | None = None
    oom: bool = Field(False, description="a measurement ran out of memory (oom_phase says which)")
    oom_phase: str | None = None
    oom_message: str | None = None
    notes: list[str] = []


class ProfileResult(ProfileView, BaseModel):
    """`memplan profile`: the measured step and the estimate of that same step (Python API: memplan.profile)."""

    measured: MeasuredStep
    estimated: MemoryEstimate
    error_percent: float | None = Field(None, description="peak_allocated: (estimated - measured) / measured x 100")

    @classmethod
    def of(cls, measured: MeasuredStep, est: MemoryEstimate) -> "ProfileResult":
        err = None
        if measured.peak_allocated and not measured.oom:
            err = 100.0 * (est.per_gpu.peak_allocated - measured.peak_allocated) / measured.peak_allocated
        return cls(measured=measured, estimated=est, error_percent=err)
