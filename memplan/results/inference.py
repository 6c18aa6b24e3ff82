"""The serving estimate: memory per GPU (weights, KV cache, prefill workspace, overheads), what fits, and a
roofline for decode and prefill.

JSON field names are a public interface: `per_gpu.{weights, kv_cache, activations, overheads, total, required}`,
`fits`, `max_batch`, `max_context`, `roofline.{decode_tokens_per_second_per_gpu, decode_tokens_per_second,
time_to_first_token_seconds, ...}`. Add fields; never rename.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.results.memory import Component
from memplan.spec.inference import InferenceSetup


class InferencePerGPU(BaseModel):
    weights: int = Field(0, description="stored weights incl. quantisation scales, this GPU's TP/PP shard")
    kv_cache: int = Field(0, description="keys and values of every sequence at full context, this GPU's share")
    activations: int = Field(0, description="prefill workspace at its peak (one forward pass, no grad)")
    overheads: int = Field(0, description="CUDA context and library workspaces")
    required: int = Field(0, description="weights + kv_cache + activations + overheads")
    total: int = Field(0, description="equals `required`")


class Roofline(BaseModel):
    """Upper bounds from peak bandwidth and peak FLOP/s (Williams et al. 2009, the roofline model)."""

    gpu: str
    memory_bandwidth_gbps: float
    peak_tflops: float
    compute_dtype: str
    decode_bytes_per_step: int = Field(description="bytes one GPU reads per decode step: weights + KV cache")
    decode_flops_per_step: float = Field(description="FLOPs one GPU does per decode step")
    decode_step_seconds: float = Field(description="one new token for every sequence in the batch")
    decode_bound: str = Field(description="memory or compute")
    decode_comm_seconds: float = Field(0.0, description="tensor-parallel all-reduces in one decode step")
    prefill_comm_seconds: float = Field(0.0, description="tensor-parallel all-reduces in the prefill")
    decode_tokens_per_second: float = Field(description="all replicas together")
    decode_tokens_per_second_per_gpu: float
    decode_tokens_per_second_per_sequence: float
    prefill_flops: float = Field(description="FLOPs of one prefill of the whole batch's prompts, per GPU")
    prefill_seconds: float
    prefill_bound: str
    prefill_tokens_per_second_per_gpu: float
    time_to_first_token_seconds: float = Field(
        description="the prefill of the batch's prompts: its last logits give the first token")
    notes: list[str] = []


class InferenceEstimate(BaseModel):
    model: str
    parameters: int
    setup: InferenceSetup
    components: list[Component]
    per_gpu: InferencePerGPU
    kv_bytes_per_token: int = Field(description="KV cache bytes per token of one sequence, this GPU's share")
    kv_tokens: int = Field(description="tokens cached per sequence (the context, capped by a sliding window)")
    gpu: str | None = None
    gpu_memory: int | None = None
    fits: bool | None = None
    headroom: int | None = None
    max_batch: int | None = None
    max_context: int | None = None
    roofline: Roofline | None = None
    notes: list[str] = []
