"""What `memplan bench --system` measured on the user's GPU, in the shapes a model and layout run: the record
`memplan time --system RUN.json` and `memplan plan --system RUN.json` take in place of the efficiency profile.

JSON field names are an interface (`kind` is "memplan.system"); add fields, never rename.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SYSTEM_KIND = "memplan.system"


class GemmMeasurement(BaseModel):
    """Y[M, N] = X[M, K] W[K, N] (`batch` of them), median of timed repeats, L2 flushed before each."""

    model_config = ConfigDict(extra="forbid")

    M: int = Field(gt=0)
    N: int = Field(gt=0)
    K: int = Field(gt=0)
    batch: int = Field(1, gt=0)
    dtype: str
    seconds: float = Field(gt=0, allow_inf_nan=False)
    tflops: float = Field(gt=0, allow_inf_nan=False)
    where: str = Field("", description="which ops of the walk run this shape")


class AttentionMeasurement(BaseModel):
    """torch's scaled_dot_product_attention (flash on 16-bit CUDA), forward and backward."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    seq: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    causal: bool = True
    dtype: str
    forward_seconds: float = Field(gt=0, allow_inf_nan=False)
    backward_seconds: float = Field(gt=0, allow_inf_nan=False)
    forward_flops: float = Field(gt=0, allow_inf_nan=False, description="causal half counted")
    forward_efficiency: float = Field(gt=0, allow_inf_nan=False, description="of the dense peak")
    backward_efficiency: float = Field(gt=0, allow_inf_nan=False, description="2.5x the forward FLOPs")


class BandwidthMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: int = Field(gt=0, description="bytes read + written by one device-to-device copy")
    seconds: float = Field(gt=0, allow_inf_nan=False)
    gbps: float = Field(gt=0, allow_inf_nan=False)


class CollectiveMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collective: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all"]
    ranks: int = Field(gt=1)
    bytes: int = Field(gt=0, description="the full tensor")
    seconds: float = Field(gt=0, allow_inf_nan=False)
    busbw_gbps: float = Field(gt=0, allow_inf_nan=False, description="nccl-tests convention")
    scope: Literal["intra-node", "inter-node"] = "intra-node"


class SystemRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    kind: Literal["memplan.system"] = SYSTEM_KIND
    created_utc: str
    device: Literal["cuda", "cpu"]
    device_name: str
    gpu_profile: str | None = None
    torch_version: str
    dtype: str
    model: str = ""
    layout: dict = Field(default_factory=dict, description="the layout whose shapes were swept")
    gemms: list[GemmMeasurement] = []
    attention: list[AttentionMeasurement] = []
    bandwidth: list[BandwidthMeasurement] = []
    collectives: list[CollectiveMeasurement] = []
    notes: list[str] = []
