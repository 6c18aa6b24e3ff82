"""What `memplan serve` answers: the serving layout for a request rate under latency targets, the Pareto table of
throughput per GPU against latency, and every assumption made.  Data only (memplan/answers/capacity.py builds it,
memplan/report/capacity.py shows it)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from memplan.results.views import ResultView


class CapacityLoad(BaseModel):
    """The traffic: tokens per request (mean and p90), the rate or the fixed concurrency, prefix reuse."""

    prompt_mean: float
    prompt_p90: float
    output_mean: float
    output_p90: float
    longest: int = Field(description="tokens of the longest request (prompt + output): the max_model_len needed")
    source: str = Field(description="fixed lengths, mean + p90, or the trace file and its request count")
    rate: float | None = Field(None, description="requests per second, all replicas together")
    concurrency: int | None = Field(None, description="a benchmark's fixed concurrency (closed loop) instead")
    prefix_hit_rate: float = Field(0.0, description="share of prompt tokens served from the prefix cache")


class CapacityTargets(BaseModel):
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    percentile: Literal["p50", "p90"] = "p90"


class Speculation(BaseModel):
    draft: str | None = Field(None, description="the draft model (None: n-gram / MTP heads, no draft cost)")
    num_speculative_tokens: int
    acceptance_rate: float
    tokens_per_step: float = Field(description="(1 - a^(k+1)) / (1 - a) tokens per verify step")
    draft_weights_per_gpu: int = 0
    draft_kv_bytes_per_token: int = 0


class CapacityLayout(BaseModel):
    """One serving layout at one replica count: the engine settings, the GPUs, and what the model predicts."""

    mode: Literal["aggregated", "disaggregated"]
    tp: int = Field(description="tensor parallel size of a replica (disaggregated: of a decode replica)")
    max_num_seqs: int
    max_num_batched_tokens: int = Field(description="the chunked-prefill token budget per step")
    replicas: int = Field(description="aggregated replicas (disaggregated: decode replicas)")
    prefill_tp: int | None = None
    prefill_replicas: int | None = None
    prefill_max_num_batched_tokens: int | None = None
    gpus: int
    pd_ratio: str | None = Field(None, description="prefill GPUs : decode GPUs")
    kv_sequences: float = Field(description="sequences of the mean context the KV cache of one replica holds")
    running: float = Field(description="mean sequences decoding per replica")
    step_ms: float = Field(description="one engine step (decode replicas when disaggregated)")
    ttft_ms_p50: float
    ttft_ms_p90: float
    tpot_ms_p50: float
    tpot_ms_p90: float
    utilization: float = Field(description="the busier of KV/seat use and prefill-budget use, per replica")
    limit: str = Field("", description="what bounds a replica near saturation: kv, max_num_seqs, prefill budget")
    output_tokens_per_s: float = Field(description="all replicas together")
    output_tokens_per_s_per_gpu: float
    meets: bool = Field(description="stable and within the latency targets")
    pareto: bool = False


class CapacityPlan(ResultView, BaseModel):
    """`memplan serve`'s answer (`memplan.serve`)."""

    model: str
    gpu: str
    engine: str
    load: CapacityLoad
    targets: CapacityTargets
    speculation: Speculation | None = None
    best: CapacityLayout | None = Field(None, description="the layout meeting the targets with the fewest GPUs")
    meets_targets: bool
    closest: CapacityLayout | None = Field(None, description="when none meets the targets: the nearest miss")
    why: str | None = Field(None, description="why no layout meets the targets")
    pareto: list[CapacityLayout] = Field(default_factory=list,
                                         description="throughput per GPU against latency: no row is better in all")
    candidates: int = Field(0, description="layouts evaluated")
    skipped: list[str] = Field(default_factory=list, description="engine settings that do not start, and why")
    assumptions: list[str] = Field(default_factory=list)
    unknowns: list[str] = Field(default_factory=list, description="what the model cannot know")
    notes: list[str] = Field(default_factory=list)

    def _summary(self) -> str:
        pick = self.best or self.closest
        if pick is None:
            return f"{self.model} on {self.gpu}: no layout starts"
        verdict = "meets the targets" if self.meets_targets else "NO LAYOUT MEETS THE TARGETS (closest shown)"
        where = (f"{pick.replicas} x TP{pick.tp}" if pick.mode == "aggregated" else
                 f"{pick.prefill_replicas} x TP{pick.prefill_tp} prefill + {pick.replicas} x TP{pick.tp} decode")
        return f"{self.model} on {pick.gpus} x {self.gpu} ({pick.mode}: {where}), {verdict}"

    def _table(self) -> str:
        from memplan.report.capacity import capacity_table

        return capacity_table(self)

    def rows(self) -> list[dict[str, Any]]:
        return [r.model_dump() for r in self.pareto]
