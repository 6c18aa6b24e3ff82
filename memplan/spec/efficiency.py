"""How fast a GPU's kernels run in practice: data read from profiles/efficiency/*.json, each curve with its source.

An efficiency profile says, for the GPUs it lists:
  - `gemm`: the fraction of the dense peak a matrix multiply reaches, as a function of its size (the FLOP-equivalent
    square side n = (FLOPs / 2)^(1/3), interpolated log-linearly between measured points, e.g. NVIDIA's A100 cuBLAS
    sweep), capped by a memory roofline in the time model;
  - `memory`: the fraction of the HBM peak a memory-bound kernel reaches, by the bytes it moves (a step curve);
  - `gemm_scale` / `memory_scale`: how much slower kernels run inside a training step than in the microbenchmark
    the curve comes from (clocks under sustained power, library versions, launch gaps), each with the subset it was
    calibrated on and the error on the rows held out;
  - `flash_forward` / `flash_backward`: fused-attention kernels' fraction of peak;
  - `links`: the fraction of a link's bandwidth a collective reaches (NCCL bus bandwidth over the wire rate).
The time model (memplan/perf/efficiency.py) turns these into seconds; `memplan bench --system` measures the same
quantities on the user's own GPU and replaces them (results/system.py).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _finite_positive(x: float, what: str) -> float:
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {x}")
    return x


class Curve(BaseModel):
    """Efficiency (a fraction of a peak) as a function of one size measure, with where the points come from."""

    model_config = _STRICT

    x: Literal["gemm_side", "bytes"] = Field(description="gemm_side: (FLOPs / 2)^(1/3); bytes: bytes moved")
    interpolation: Literal["log-linear", "step"] = "log-linear"
    points: list[tuple[float, float]] = Field(min_length=1, description="(x, fraction of peak), ascending x")
    source: str

    @field_validator("points")
    @classmethod
    def _check(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for x, y in pts:
            _finite_positive(x, "a curve point's x")
            if not math.isfinite(y) or not 0 < y <= 1.5:
                raise ValueError(f"a curve point's efficiency must be in (0, 1.5], got {y}")
        if [p[0] for p in pts] != sorted(p[0] for p in pts):
            raise ValueError("curve points must be in ascending x")
        return pts


class Scale(BaseModel):
    """One number with its source (and, for calibrated numbers, what it was fitted on and the held-out error)."""

    model_config = _STRICT

    value: float
    source: str

    @field_validator("value")
    @classmethod
    def _check(cls, v: float) -> float:
        return _finite_positive(v, "an efficiency")


class LinkEfficiency(BaseModel):
    model_config = _STRICT

    efficiency: float = Field(description="collective bus bandwidth / the link's per-GPU wire rate")
    latency_us: float | None = Field(None, ge=0, description="per collective call (None: the link profile's)")
    source: str

    @field_validator("efficiency")
    @classmethod
    def _check(cls, v: float) -> float:
        _finite_positive(v, "a link efficiency")
        if v > 1:
            raise ValueError(f"a link efficiency is at most 1, got {v}")
        return v


class EfficiencyProfile(BaseModel):
    """Kernel and link efficiencies for the GPUs in `gpus` (profile names)."""

    model_config = _STRICT

    name: str
    gpus: list[str] = Field(description="GPU profile names this applies to")
    description: str = ""
    gemm: Curve
    gemm_scale: Scale
    memory: Curve
    memory_scale: Scale
    flash_forward: Scale
    flash_backward: Scale
    kernel_floor_us: float = Field(3.0, ge=0, description="no kernel is shorter than about a launch")
    overlap_slowdown: Scale = Field(description="compute slowed while NCCL kernels share the SMs (overlapped comm)")
    intra_node: LinkEfficiency
    inter_node: LinkEfficiency
    fp8_gemm_speedup: Scale | None = Field(None, description="FP8 GEMM throughput / BF16 GEMM throughput at the "
                                           "same shapes (None: the FP8 peak, 2x on paper)")
    links: dict[str, LinkEfficiency] = Field(default_factory=dict, description="by interconnect profile name")
    placeholder: bool = Field(False, description="no published sweep for this GPU: the shape is borrowed")
    notes: str = ""
