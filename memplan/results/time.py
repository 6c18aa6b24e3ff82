"""How long a training run takes: FLOPs, step time and its breakdown, days, GPU-hours, cost.

JSON field names are a public interface: `flops_per_token`, `tokens_per_second`, `step_seconds`, `days`,
`gpu_hours`, `cost`, `layout.gpus/dp/tp/pp/zero/micro_batch/grad_accum/recompute` (plus the rest below). Add
fields; never rename.  `layout` is the one spec Layout (memplan/spec/layout.py); its JSON adds the derived `dp` and
`global_batch` for readers of the first version's result.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_serializer, field_validator

from memplan.report.text import describe_layout  # noqa: F401 - the layout as one line; imported from here too
from memplan.results.views import TimeView
from memplan.spec.layout import Layout
from memplan.spec.setup import Assumed

DERIVED_LAYOUT_KEYS = ("dp", "global_batch")


def dump_layout(layout: Layout) -> dict[str, Any]:
    """The Layout's fields plus the derived sizes scripts read (dp, global_batch)."""
    return {**layout.model_dump(), "dp": layout.dp, "global_batch": layout.global_batch}


def load_layout(value: Any) -> Any:
    """Accept a dumped layout back (drop the derived keys the Layout computes itself)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in DERIVED_LAYOUT_KEYS}
    return value


class LayoutResult(BaseModel):
    """Base for results that carry a Layout: serialised with dp and global_batch, read back without them."""

    layout: Layout

    @field_serializer("layout")
    def _dump(self, layout: Layout) -> dict[str, Any]:
        return dump_layout(layout)

    @field_validator("layout", mode="before")
    @classmethod
    def _load(cls, value: Any) -> Any:
        return load_layout(value)


class FlopsPerToken(BaseModel):
    """Training FLOPs per token, and the forward pass by component (per token, whole model)."""

    seq: int
    forward_linear: float = Field(description="projections and MLP matrices, all layers (active experts for MoE)")
    forward_attention: float = Field(description="Q K^T and softmax(.) V, all layers")
    forward_lm_head: float
    forward: float
    model: float = Field(description="3 x forward: fwd + bwd (2x); what MFU counts")
    hardware: float = Field(description="model + recomputed forward work; what HFU counts")
    recompute: str = "none"
    causal: bool = False
    six_n: float = Field(description="6N, N = all parameters (Kaplan et al. 2020)")
    palm: float = Field(description="6N + 12 L H Q T (PaLM appendix B)")
    n_parameters: int
    exact: bool = Field(True, description="False for a bare parameter count: 6N, attention unknown")


class CommItem(BaseModel):
    """One kind of communication in a step, per GPU of the busiest pipeline stage."""

    name: str
    parallelism: str = Field(description="dp, tp, pp, cp, ep or offload")
    group: int = Field(description="GPUs in the collective (1 for host transfers)")
    link: str
    bandwidth_gbps: float = Field(description="the bus bandwidth used: link rate x collective efficiency "
                                              "(x NICs in use for groups spanning nodes)")
    bytes_per_step: float = Field(description="bytes each GPU sends per step")
    seconds: float
    exposed_seconds: float = Field(description="what is left on the critical path after overlap")
    hidden_under: str = Field("", description="what it overlaps with")


class Efficiency(BaseModel):
    value: float = Field(description="hardware FLOPs / (step time x dense peak): the whole step's efficiency")
    source: str


class KernelEfficiency(BaseModel):
    """One efficiency the step time used, and where it comes from."""

    name: str
    value: float | None = None
    source: str


class StageTime(BaseModel):
    """One pipeline stage (per device), one micro-batch."""

    stage: int
    layers: int
    forward_seconds: float
    backward_seconds: float = Field(description="backward including recomputation")
    busiest: bool = False


class StepBreakdown(BaseModel):
    """The op walk's step, seconds on the device that sets the pace (the busiest pipeline stage)."""

    step_seconds: float
    gemm_seconds: float = Field(description="dense and expert GEMMs, LM head included")
    attention_seconds: float = Field(description="the attention core (flash or unfused scores/softmax/PV)")
    memory_bound_seconds: float = Field(description="norms, activations, dropout, residuals, embedding, loss, "
                                                    "gradient accumulation")
    tp_exposed_seconds: float = 0.0
    tp_hidden_seconds: float = 0.0
    cp_exposed_seconds: float = 0.0
    ep_exposed_seconds: float = 0.0
    pp_p2p_seconds: float = 0.0
    bubble_seconds: float = 0.0
    dp_exposed_seconds: float = 0.0
    dp_total_seconds: float = 0.0
    optimizer_seconds: float = 0.0
    offload_exposed_seconds: float = 0.0
    micro_batches: int = 1
    busiest_stage: int = 0
    stages: list[StageTime] = []

    @property
    def compute_seconds(self) -> float:
        return self.gemm_seconds + self.attention_seconds + self.memory_bound_seconds + self.optimizer_seconds

    @property
    def exposed_comm_seconds(self) -> float:
        return (self.tp_exposed_seconds + self.cp_exposed_seconds + self.ep_exposed_seconds + self.pp_p2p_seconds
                + self.dp_exposed_seconds + self.offload_exposed_seconds)


class TimeEstimate(TimeView, LayoutResult):
    model: str
    parameters: int
    gpu: str
    precision: str
    compute_dtype: str
    execution: str = Field("", description="the execution profile (profiles/execution/): what overlaps, fusions")
    peak_tflops: float = Field(description="the GPU profile's dense peak for the compute dtype, per GPU")
    efficiency: Efficiency
    kernels: list[KernelEfficiency] = Field([], description="every efficiency the walk used, with its source")
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
    step_source: str = Field("op walk", description="op walk, or the end-to-end figure given (--achieved-tflops, "
                                                    "--mfu, --measured)")
    predicted_step_seconds: float = Field(0.0, description="the op walk's step at the efficiencies listed")
    compute_seconds: float
    bubble_seconds: float
    exposed_comm_seconds: float
    comm_seconds: float = Field(description="all communication before overlap")
    comm: list[CommItem] = []
    walk: StepBreakdown | None = None

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
    fit_hint: str | None = Field(None, description="when it does not fit: what would, and the plan command")
    measured_step_seconds: float | None = Field(None, description="from --measured: the record's step time")
    assumptions: list[str] = []
    assumed: list[Assumed] = Field(default_factory=list, description="inputs not given that drive the answer: the "
                                   "value used (seq, micro_batch, precision, optimizer, engine, attention)")
