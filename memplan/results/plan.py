"""A strategy search: the candidates that fit, best first, and why the best wins.

JSON field names are a public interface: `candidates` (best first), each with `layout`, `memory_required_bytes`,
`step_seconds`, `mfu`, `days`, `cost`. Add fields; never rename.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.results.time import Layout


class Candidate(BaseModel):
    layout: Layout
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


class PlanResult(BaseModel):
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
    efficiency: float
    efficiency_source: str
    price_per_hour: float | None = None
    price_source: str | None = None
    tokens: float | None = None
    steps: int | None = None

    candidates: list[Candidate] = Field(description="fitting strategies, best first")
    evaluated: int = Field(description="strategies whose step time and memory bound were computed")
    pruned_by_bound: int = Field(description="dropped because model states alone exceed GPU memory")
    checked_full: int = Field(description="full memory estimates run")
    rejected_full: int = Field(description="dropped by the full memory estimate (or by dominance, below)")
    skipped_dominated: int = Field(0, description="rejected without an estimate: a smaller micro-batch with at least "
                                                  "as much recomputation already failed")
    search_seconds: float
    candidates_per_second: float
    min_gpus: int | None = Field(None, description="with --min-gpus: the fewest GPUs for which any strategy fits")
    why: list[str] = Field([], description="why the best wins, in words")
    assumptions: list[str] = []
