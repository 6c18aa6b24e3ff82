"""How long a training run takes: FLOPs, step time and its breakdown, days, GPU-hours, cost.

JSON field names are a public interface: `flops_per_token`, `tokens_per_second`, `step_seconds`, `days`,
`gpu_hours`, `cost` (plus the rest below). Add fields; never rename.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.perf.flops import FlopsPerToken


class Layout(BaseModel):
    gpus: int
    gpus_per_node: int = 8
    dp: int
    tp: int = 1
    pp: int = 1
    zero: int = 0
    offload_optimizer: str = "none"
    offload_params: str = "none"
    micro_batch: int = 1
    grad_accum: int = 1
    recompute: str = "none"
    sequence_parallel: bool = False
    virtual_stages: int = 1

    def short(self) -> str:
        parts = [f"dp{self.dp}", f"tp{self.tp}", f"pp{self.pp}", f"zero{self.zero}"]
        if self.offload_optimizer != "none" or self.offload_params != "none":
            parts.append("offload:" + "+".join(x for x, on in (("opt", self.offload_optimizer != "none"),
                                                                ("params", self.offload_params != "none")) if on))
        parts += [f"mb{self.micro_batch}", f"ga{self.grad_accum}"]
        if self.recompute != "none":
            parts.append(f"rc:{self.recompute}")
        if self.sequence_parallel:
            parts.append("sp")
        if self.virtual_stages > 1:
            parts.append(f"v{self.virtual_stages}")
        return " ".join(parts)


class CommItem(BaseModel):
    """One kind of communication in a step, per GPU."""

    name: str
    parallelism: str = Field(description="dp, tp, pp or offload")
    group: int = Field(description="GPUs in the collective (1 for host transfers)")
    link: str
    bandwidth_gbps: float
    bytes_per_step: float = Field(description="bytes each GPU sends per step")
    seconds: float
    exposed_seconds: float = Field(description="what is left on the critical path after the stated overlap")


class Efficiency(BaseModel):
    value: float = Field(description="fraction of the dense peak the step's executed (hardware) FLOPs run at")
    source: str


class TimeEstimate(BaseModel):
    model: str
    parameters: int
    gpu: str
    layout: Layout
    precision: str
    compute_dtype: str
    peak_tflops: float = Field(description="the GPU profile's dense peak for the compute dtype, per GPU")
    efficiency: Efficiency
    overlap: str
    links: dict[str, str] = Field(description="intra-node, inter-node and host link profile names")

    flops: FlopsPerToken
    flops_per_token: float = Field(description="model FLOPs per token (fwd + bwd, no recompute)")
    hardware_flops_per_token: float

    global_batch: int = Field(description="sequences per optimizer step")
    seq: int
    tokens_per_step: int
    steps: int
    tokens: float

    step_seconds: float
    compute_seconds: float
    bubble_seconds: float
    exposed_comm_seconds: float
    comm_seconds: float = Field(description="all communication before overlap")
    comm: list[CommItem] = []

    tokens_per_second: float
    tokens_per_second_per_gpu: float
    mfu: float = Field(description="model FLOPs / (step time x GPUs x peak), PaLM appendix B")
    hfu: float
    achieved_tflops_per_gpu: float = Field(description="hardware FLOPs per GPU per second over the whole step")

    seconds: float
    days: float
    gpu_hours: float
    price_per_hour: float | None = None
    price_source: str | None = None
    cost: float | None = None

    memory_required_bytes: int | None = None
    fits: bool | None = None
    assumptions: list[str] = []
