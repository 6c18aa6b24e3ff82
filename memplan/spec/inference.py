"""What is served and how: the model, the engine (vLLM or transformers), its memory settings, and the load.

Two engines, because they hold different memory for the same model:
- `vllm` (default): vLLM's own accounting at startup (memplan/memory/vllm.py): it takes
  gpu_memory_utilization x the GPU's total, subtracts weights, the profile run's peak, non-torch memory and CUDA
  graphs, and fills the rest with KV blocks; the flags are vLLM's (`--gpu-memory-utilization`,
  `--max-model-len`, `--max-num-seqs`, `--max-num-batched-tokens`, `--block-size`, `--kv-cache-dtype`,
  `--quantization`), and a flag left unset takes vLLM's default for the modelled version and GPU.
- `hf`: a transformers `generate()` process (memplan/memory/hf_serving.py): weights, the DynamicCache of
  `batch` sequences at `context` tokens, and the prefill's workspace (unchunked unless --prefill-chunk).

The load: `prompt` + `output` tokens per sequence (their sum is the context), `batch` sequences at once.
Data only; the bytes are in memplan/memory/, the time in memplan/perf/roofline.py.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memplan.errors import MemplanError
from memplan.spec.layout import Layout
from memplan.spec.model import ModelSpec
from memplan.spec.training import Attention, DType

ServingEngine = Literal["vllm", "hf", "sglang"]
# memplan's generic weight formats (a what-if on a 16-bit config; --quantization names vLLM's methods)
WEIGHT_DTYPES = (DType.fp32, DType.bf16, DType.fp16, DType.fp8, DType.int8, DType.int4, DType.nf4)
KV_DTYPES = (DType.fp32, DType.bf16, DType.fp16, DType.fp8)
DEFAULT_VLLM_VERSION = "0.33.0"  # the newest vLLM release on PyPI (2026-11-02) when this was written


class InferenceSetup(BaseModel):
    """A serving setup.  Unset vLLM settings take vLLM's defaults for the version and GPU (memory/vllm_rules.py)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    layout: Layout = Field(default_factory=Layout)
    engine: ServingEngine = Field("vllm", description="Serving engine whose memory accounting to reproduce: vllm "
                                                      "(its startup profile and KV blocks) or hf (transformers "
                                                      "generate with a DynamicCache).")
    weights_dtype: DType | None = Field(None, description="16-bit dtype of the unquantised tensors (default: the "
                                                          "config's torch_dtype), or a generic quantised format")
    quantization: str | None = Field(None, description="vLLM's --quantization method (default: the config's "
                                                       "quantization_config)")
    kv_dtype: DType | None = Field(None, description="KV-cache dtype (None: vLLM's 'auto', the model's dtype)")
    batch: int | None = Field(None, gt=0, description="Concurrent sequences (hf default 1; vllm: checked against "
                                                      "the KV blocks and --max-num-seqs)")
    context: int | None = Field(None, gt=0, description="Tokens per sequence, prompt + generated")
    prompt: int | None = Field(None, gt=0, description="Prompt tokens per sequence")
    output: int | None = Field(None, ge=0, description="Generated tokens per sequence")
    prefill_chunk: int | None = Field(None, gt=0, description="hf: tokens per prefill forward pass")
    attention: Attention = "sdpa"
    int4_group: int = Field(128, gt=0, description="group size of the generic int4 format (AWQ's default 128)")
    # vLLM's settings, named as vLLM names them (vllm/engine/arg_utils.py EngineArgs)
    gpu_memory_utilization: float | None = Field(None, description="Fraction of the GPU's total memory vLLM may "
                                                                   "use, in (0, 1]")
    max_model_len: int | None = Field(None, gt=0, description="Longest sequence vLLM admits (default: the "
                                                              "context if given, else the model's max positions)")
    max_num_seqs: int | None = Field(None, gt=0, description="Most sequences per scheduler step")
    max_num_batched_tokens: int | None = Field(None, gt=0, description="Tokens per step (chunked prefill chunk)")
    block_size: int | None = Field(None, gt=0, description="Tokens per KV block")
    enforce_eager: bool = Field(False, description="No CUDA graphs (vLLM --enforce-eager)")
    vllm_version: str = Field(DEFAULT_VLLM_VERSION, description="vLLM release whose accounting to reproduce")
    vllm_entrypoint: Literal["serve", "llm"] = Field("serve", description="vllm serve or the offline LLM class "
                                                                          "(their batch defaults differ)")

    @model_validator(mode="after")
    def _check(self) -> "InferenceSetup":
        if self.weights_dtype is not None and self.weights_dtype not in WEIGHT_DTYPES:
            raise MemplanError(f"--weights-dtype {self.weights_dtype.value} is not a serving format; choose one of "
                               + ", ".join(d.value for d in WEIGHT_DTYPES))
        if self.kv_dtype is not None and self.kv_dtype not in KV_DTYPES:
            raise MemplanError(f"--kv-cache-dtype {self.kv_dtype.value}: choose auto, bf16, fp16, fp32 or fp8")
        u = self.gpu_memory_utilization
        if u is not None and not 0 < u <= 1:
            raise MemplanError(f"--gpu-memory-utilization must be in (0, 1] (vLLM's CacheConfig: gt=0, le=1), got {u}"
                               "; it is the fraction of the GPU's memory vLLM may use, e.g. 0.9")
        if self.quantization and self.weights_dtype in (DType.fp8, DType.int8, DType.int4, DType.nf4):
            raise MemplanError("give either --quantization (vLLM's method) or a quantised --weights-dtype, not both")
        p, o, c = self.prompt, self.output, self.context
        if p is not None and o is not None and c is not None and p + o != c:
            raise MemplanError(f"--prompt {p} + --output {o} = {p + o} tokens, but --context is {c}; the context is "
                               "their sum: give two of the three")
        if p is not None and c is not None and p > c:
            raise MemplanError(f"--prompt {p} is longer than --context {c}; the context counts prompt plus generated "
                               "tokens")
        if o is not None and c is not None and o >= c:
            raise MemplanError(f"--output {o} leaves no prompt in --context {c}")
        if o is not None and p is None and c is None and o >= self.context_tokens:
            # the context then comes from --max-model-len or the model: the prompt would be 0 tokens or fewer
            source = "--max-model-len" if self.max_model_len is not None else "the model's max positions"
            raise MemplanError(f"--output {o} leaves no prompt in a context of {self.context_tokens:,} tokens "
                               f"({source}); give --prompt, or a --context longer than {o}")
        if self.engine == "hf":
            vllm_only = [n for n in ("gpu_memory_utilization", "max_model_len", "max_num_seqs",
                                     "max_num_batched_tokens", "block_size") if getattr(self, n) is not None]
            if self.enforce_eager:
                vllm_only.append("enforce_eager")
            if vllm_only:
                raise MemplanError(", ".join("--" + n.replace("_", "-") for n in vllm_only) + ": vLLM setting(s), "
                                   "not used with --engine hf (drop them or use --engine vllm)")
        elif self.prefill_chunk is not None:
            raise MemplanError("--prefill-chunk is the hf engine's; vLLM chunks prefills by "
                               "--max-num-batched-tokens")
        return self

    # ---- the load ---------------------------------------------------------------------------------------------
    @property
    def context_tokens(self) -> int:
        """Tokens per sequence: --context, else prompt + output, else vLLM's max-model-len, else the model's max
        positions."""
        if self.context is not None:
            return self.context
        if self.prompt is not None and self.output is not None:
            return self.prompt + self.output
        if self.max_model_len is not None:
            return self.max_model_len
        a = self.model.architecture
        base = a.max_positions if a is not None else 2048
        return max(base, self.prompt or 0)

    @property
    def prompt_tokens(self) -> int:
        if self.prompt is not None:
            return self.prompt
        if self.output is not None:
            return self.context_tokens - self.output
        return self.context_tokens

    @property
    def output_tokens(self) -> int:
        return self.context_tokens - self.prompt_tokens

    @property
    def sequences(self) -> int:
        return self.batch or 1


ServingSetup = InferenceSetup
