"""What is served: the model, its stored precision, the KV cache's, and the load (concurrent sequences x context).

Data only; the bytes are in memplan/memory/inference.py, the time in memplan/perf/roofline.py.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memplan.errors import MemplanError
from memplan.spec.model import ModelSpec
from memplan.spec.layout import Layout
from memplan.spec.training import Attention, DType

WEIGHT_DTYPES = (DType.fp32, DType.bf16, DType.fp16, DType.fp8, DType.int8, DType.int4)
KV_DTYPES = (DType.fp32, DType.bf16, DType.fp16, DType.fp8)


class InferenceSetup(BaseModel):
    """A serving setup.  `context` = prompt + generated tokens per sequence; `batch` = sequences in flight."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    weights_dtype: DType = DType.bf16
    kv_dtype: DType = DType.bf16
    batch: int = Field(1, gt=0)
    context: int = Field(gt=0)
    prompt: int | None = Field(None, gt=0, description="prompt tokens (time to first token); default: the context")
    prefill_chunk: int | None = Field(None, gt=0, description="chunked prefill: tokens per forward pass")
    attention: Attention = "sdpa"
    layout: Layout = Field(default_factory=Layout)
    int4_group: int = Field(128, gt=0, description="group size of int4 weight scales (AWQ/GPTQ default 128)")

    @model_validator(mode="after")
    def _check(self) -> "InferenceSetup":
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise MemplanError(f"--weights-dtype {self.weights_dtype.value} is not a serving format; choose one of "
                               + ", ".join(d.value for d in WEIGHT_DTYPES))
        if self.kv_dtype not in KV_DTYPES:
            raise MemplanError(f"--kv-dtype {self.kv_dtype.value}: choose one of "
                               + ", ".join(d.value for d in KV_DTYPES))
        if self.prompt is not None and self.prompt > self.context:
            raise MemplanError(f"prompt ({self.prompt}) is longer than --context ({self.context}); the context "
                               "counts prompt plus generated tokens")
        return self

    @property
    def prompt_tokens(self) -> int:
        return self.prompt or self.context

    @property
    def compute_dtype(self) -> DType:
        """Matmul dtype: weight-only quantisation dequantises to 16-bit, fp32 stays fp32."""
        if self.weights_dtype in (DType.fp32, DType.fp16):
            return self.weights_dtype
        return DType.bf16
