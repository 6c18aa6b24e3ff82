"""A strategy search: the candidates that fit, best first, why each ranks where it does, and where a reference
layout (e.g. a paper's) ranks.

JSON field names are a public interface: `candidates` (best first), each with `layout` (gpus, dp, tp, pp, zero,
micro_batch, grad_accum, recompute, ...), `memory_required_bytes`, `step_seconds`, `mfu`, `days`, `cost`. Add
fields; never rename.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.results.time import KernelEfficiency, LayoutResult, StepBreakdown
from memplan.results.views import PlanView


class Candidate(LayoutResult):
    rank: int = Field(0, description="1 = best among those that fit")
    memory_required_bytes: int | None = Field(None, description="the full estimate's per-GPU requirement")
    memory_lower_bound_bytes: int = Field(description="model states per GPU: the cheap bound used to prune")
    cpu_memory_bytes: int = Field(0, description="CPU RAM per node the layout needs (offload)")
    fits: bool | None = None
    step_seconds: float
    compute_seconds: float
    bubble_seconds: float
    exposed_comm_seconds: float
    mfu: float
    tokens_per_second: float
    days: float | None = None
    gpu_hours: float | None = None
    cost: float | None = None
    breakdown: StepBreakdown | None = None
    why: str = Field("", description="what it gains or loses against the best, part by part")


class PlanResult(PlanView, BaseModel):
    model: str
    parameters: int
    gpu: str
    gpu_memory_bytes: int
    gpus: list[int] = Field(description="GPU counts searched")
    global_batch: int
    seq: int
    precision: str
    by: str = Field(description="time or cost")
    overlap: str
    execution: str = ""
    efficiency: float = Field(description="the best candidate's hardware FLOPs / (step x peak)")
    efficiency_source: str
    kernels: list[KernelEfficiency] = []
    price_per_hour: float | None = None
    price_source: str | None = None
    tokens: float | None = None
    steps: int | None = None
    cpu_memory_bytes: int = Field(description="CPU RAM per node layouts may use (--cpu-memory or the default)")

    candidates: list[Candidate] = Field(description="fitting strategies, best first")
    evaluated: int = Field(description="strategies whose step time and memory bound were computed")
    pruned_by_bound: int = Field(description="dropped because model states alone exceed GPU memory")
    checked_full: int = Field(description="full memory estimates run")
    rejected_full: int = Field(description="dropped by the full memory estimate (or by dominance, below)")
    rejected_cpu_memory: int = Field(0, description="dropped because their CPU RAM per node exceeds cpu_memory")
    skipped_dominated: int = Field(0, description="rejected without an estimate: a smaller micro-batch with at least "
                                                  "as much recomputation already failed")
    search_seconds: float
    candidates_per_second: float
    min_gpus: int | None = Field(None, description="with --min-gpus: the fewest GPUs for which any strategy fits")
    reference: Candidate | None = Field(None, description="with --reference: the layout given, ranked")
    reference_rank: int | None = Field(None, description="1 + the fitting layouts faster than the reference")
    why: list[str] = Field([], description="why the best wins, in words")
    assumptions: list[str] = []
