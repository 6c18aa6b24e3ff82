"""Hardware descriptions: GPUs and interconnects (data in profiles/gpus, profiles/interconnects)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GPUSpec(BaseModel):
    """One accelerator. Peaks are dense (no 2:4 sparsity doubling), in TFLOP/s; each figure cites `sources`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = []
    vendor: str
    generation: str = Field(description="e.g. volta, turing, ampere, ada, hopper, blackwell, cdna2, cdna3")
    memory_bytes: int = Field(gt=0)
    memory_bandwidth_gbps: float = Field(gt=0, description="GB/s (decimal)")
    peak_tflops: dict[str, float] = Field(description="dense TFLOP/s by dtype: fp32, tf32, bf16, fp16, fp8, int8")
    default_mfu: float = Field(0.4, gt=0, le=1, description="efficiency assumed when none is given")
    interconnect: str | None = Field(None, description="intra-node interconnect profile name")
    internode: str | None = Field(None, description="default inter-node interconnect profile name (per-GPU NIC share)")
    host_link: str | None = Field(None, description="GPU-to-CPU link profile name (offload traffic)")
    price_per_hour: float | None = Field(None, description="USD per GPU-hour, a labelled default")
    context_bytes: int | None = Field(None, description="CUDA context + library workspaces, measured or cited")
    torch_total_memory_bytes: int | None = Field(
        None, gt=0, description="total memory the device reports to torch (torch.cuda.mem_get_info()[1], i.e. "
                                "cudaMemGetInfo): what vLLM multiplies by gpu_memory_utilization; below the marketing "
                                "figure (ECC and driver reservations: an 80 GB H100 shows 79.19 GiB)")
    sources: list[str] = []
    notes: str = ""


class InterconnectSpec(BaseModel):
    """A link. Bandwidth is per GPU, unidirectional, GB/s (decimal), as used in collective cost formulas."""

    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = []
    bandwidth_gbps: float = Field(gt=0)
    latency_us: float = Field(5.0, ge=0)
    scope: str = Field("intra-node", description="intra-node or inter-node")
    sources: list[str] = []
    notes: str = ""
