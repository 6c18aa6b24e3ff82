"""The RL / preference-tuning plan: memory per phase on one training GPU (and on a rollout GPU when the engine has
its own), host RAM per node, time per RL step, the verdict and the changes that fit.

JSON field names are an interface: add, never rename.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.spec.workload import RLWorkload


class RLComponent(BaseModel):
    name: str
    category: str = Field(description="policy, reference, reward, critic, rollout, activations, temporaries, "
                                      "overheads")
    bytes: int
    note: str = ""


class RLPhase(BaseModel):
    """What one training GPU holds at the worst moment of a phase of the RL step."""

    name: str = Field(description="rollout, scoring, update (or a rollout GPU's 'rollout engine')")
    total: int = Field(description="bytes on the GPU: peak allocated + overheads")
    components: list[RLComponent]
    note: str = ""


class RLTime(BaseModel):
    """Seconds per RL step (one generation batch through rollout, scoring and its optimizer steps)."""

    rollout_seconds: float
    scoring_seconds: float
    update_seconds: float
    sync_seconds: float = Field(description="weight sync from the policy to the rollout engine")
    sleep_wake_seconds: float
    step_seconds: float
    optimizer_steps: float = Field(description="optimizer steps per RL step")
    completions: int = Field(description="completions (or sequences) per RL step, all ranks")
    tokens: int = Field(description="tokens per RL step (prompt + completion, all ranks)")
    tokens_per_second: float
    gpu_hours_per_1000_steps: float
    gpus: int = Field(description="GPUs counted: training + rollout")
    assumptions: list[str] = []


class RLOption(BaseModel):
    """One point of the search: what changes, the peak GPU it gives, the step time."""

    change: str
    changes: dict[str, object] = {}
    dimensions: int
    fits: bool
    required: int
    peak_phase: str
    step_seconds: float | None = None


class RLPlan(BaseModel):
    model: str
    parameters: int
    gpu: str | None = None
    gpu_memory: int | None = None
    workload: RLWorkload
    sequence: int = Field(description="tokens per trained sequence (prompt + completion, or max_length)")
    reference: str = Field(description="none, copy, adapters-off or precomputed")
    phases: list[RLPhase]
    rollout_gpu_phase: RLPhase | None = Field(None, description="vllm-server: what a rollout GPU holds")
    update_moments: dict[str, int] = Field(default_factory=dict, description="bytes on a training GPU at each "
                                           "moment of the update (forward, loss, backward, optimizer_step, "
                                           "zero_grad), residents and overheads included")
    overheads: int = Field(0, description="CUDA context, workspaces and allocator reserve counted in every phase")
    peak_phase: str
    required: int = Field(description="bytes the busiest training GPU needs at the peak phase")
    fits: bool | None = None
    headroom: int | None = None
    rollout_fits: bool | None = None
    host_ram_per_node: int = Field(0, description="bytes of host RAM per node the plan moves off the GPUs (vLLM "
                                                  "sleep level 1 weights)")
    host_ram_note: str = ""
    vllm_starts: bool | None = None
    vllm_refusal: str | None = None
    vllm_kv_pool: int | None = Field(None, description="bytes of KV blocks the colocated/server vLLM allocates")
    vllm_concurrency: float | None = Field(None, description="sequences of prompt + completion its blocks hold")
    rollout_batch: int = Field(0, description="completions one engine decodes together")
    time: RLTime | None = None
    smallest_change: RLOption | None = None
    fastest: RLOption | None = None
    options: list[RLOption] = []
    assumptions: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
