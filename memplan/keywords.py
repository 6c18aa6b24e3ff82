"""The options of every command as typed fields: one definition each, read by the Python API and the CLI.

A field here (or on spec/layout.py Layout and spec/training.py Workload, which the CLI's layout and workload flags
are generated from) is one option: its annotation and bounds are its type, its description its help, its default
the value used when it is not given.  memplan/api.py builds each function's `inspect.Signature` and the keyword
section of its docstring from these fields (`signature`, `keyword_doc`) and validates every keyword it is given
against its field (`validate`), raising `InputError(field)`: the API words it as the keyword, the CLI as the flag.
tests/test_api_signatures.py holds the API's keyword set of each command equal to the CLI's flag set.

The bounds are the CLI's (memplan/cli/types.py BOUNDS; a test keeps them equal): far above anything that exists,
only refusals of the impossible.  pydantic only, no click: `import memplan.api` stays light.
"""
import inspect
import typing
from functools import lru_cache
from typing import Any, Literal, Union

from pydantic import Field
from pydantic.fields import FieldInfo

from memplan.errors import InputError

LAYERS, HIDDEN, HEADS, FFN, VOCAB, POSITIONS, EXPERTS = 100_000, 2**20, 2**16, 2**24, 2**24, 2**27, 2**16
GPUS, BATCH, STEPS, REPEAT, RANK = 2**20, 2**24, 2**40, 10_000, 2**20
_FINITE = {"allow_inf_nan": False}


class KeywordGroup:
    """A group of options declared like a pydantic model (annotation, `Field(...)` with bounds and description), but
    not built into one: `model_fields` holds the same FieldInfo objects a model has, without the ~4 ms per class a
    model's validator costs every CLI start.  Values are validated one by one, only when the API is called."""

    model_fields: dict[str, FieldInfo] = {}

    def __init_subclass__(cls) -> None:
        hints = cls.__dict__.get("__annotations__", {})  # real objects: this module has no `from __future__`
        fields: dict[str, FieldInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "model_fields", {}))
        for name in cls.__dict__.get("__annotations__", {}):
            default = cls.__dict__.get(name, ...)
            fields[name] = FieldInfo.from_annotated_attribute(hints[name], default)
        cls.model_fields = fields


class ModelKeywords(KeywordGroup):
    """Which model (the CLI's MODEL argument and --setup)."""

    model: Union[str, Any] = Field(description="a built-in profile (`memplan.models()`), a Hugging Face config.json "
                                               "(or its folder), a parameter count such as '7B', or a ModelSpec")
    setup: str | None = Field(None, description="a setup file read first, the keywords given override it: "
                                                "memplan's own (`save_setup`) or an engine's (DeepSpeed, accelerate, "
                                                "torchtitan, axolotl, HF TrainingArguments, Megatron-LM)")
    download: bool | None = Field(None, description="model is a Hugging Face hub id: fetch its config.json (no "
                                                    "weights) with huggingface_hub first")


class ArchitectureKeywords(KeywordGroup):
    """Build an architecture from a bare count, or override a family config's sizes."""

    layers: int | None = Field(None, ge=1, le=LAYERS, json_schema_extra={"bound": "layers"}, description="Transformer layers (builds or overrides an "
                                                                  "architecture)")
    hidden: int | None = Field(None, ge=1, le=HIDDEN, json_schema_extra={"bound": "hidden"}, description="Hidden size")
    heads: int | None = Field(None, ge=1, le=HEADS, json_schema_extra={"bound": "heads"}, description="Attention heads")
    kv_heads: int | None = Field(None, ge=1, le=HEADS, json_schema_extra={"bound": "heads"}, description="Key/value heads (GQA/MQA)")
    head_dim: int | None = Field(None, ge=1, le=HEADS, json_schema_extra={"bound": "head_dim"}, description="Head dimension (default hidden/heads)")
    ffn: int | None = Field(None, ge=1, le=FFN, json_schema_extra={"bound": "ffn"}, description="MLP intermediate size")
    vocab: int | None = Field(None, ge=1, le=VOCAB, json_schema_extra={"bound": "vocab"}, description="Vocabulary size")
    max_positions: int | None = Field(None, ge=1, le=POSITIONS, json_schema_extra={"bound": "positions"}, description="Maximum positions (context)")
    mlp: Literal["gelu", "swiglu"] | None = Field(None, description="MLP kind (models built from flags)")
    norm: Literal["layernorm", "rmsnorm"] | None = Field(None, description="Norm kind (models built from flags)")
    tied: bool | None = Field(None, description="Tie input embeddings and LM head")
    experts: int | None = Field(None, ge=0, le=EXPERTS, json_schema_extra={"bound": "experts"}, description="MoE routed experts per layer")
    top_k: int | None = Field(None, ge=1, le=EXPERTS, json_schema_extra={"bound": "experts"}, description="MoE experts per token")
    num_labels: int | None = Field(None, ge=1, le=VOCAB, json_schema_extra={"bound": "vocab"},
                                   description="A sequence-classification score head of this many labels in place of "
                                               "the LM head (1: a reward or value model, as TRL builds them)")


class RecipeKeywords(KeywordGroup):
    """Precision recipe and optimizer."""

    precision: str | None = Field(None, min_length=1, description="Recipe: fp32, amp-bf16, amp-fp16, bf16-mixed, "
                                                                  "fp16-mixed, bf16, fp8-mixed",
                                     json_schema_extra={"shown_default": "bf16-mixed"})
    weights_dtype: str | None = Field(None, min_length=1, description="Override the stored weights' dtype")
    grads_dtype: str | None = Field(None, min_length=1, description="Override the gradients' dtype (fp32: "
                                                                    "Megatron's 18 B/param)")
    master_dtype: str | None = Field(None, min_length=1, description="Override the master weights: fp32 or none "
                                                                     "(fp32 + master: 20 B/param)")
    states_dtype: str | None = Field(None, min_length=1, description="Override the optimizer states' dtype")
    optimizer: str | None = Field(None, min_length=1, description="adamw, adam, sgd, sgd-momentum, lion, adafactor, "
                                                                  "adamw-8bit",
                                     json_schema_extra={"shown_default": "adamw"})


class LoraKeywords(KeywordGroup):
    """LoRA / QLoRA fine-tuning (a frozen base)."""

    lora_rank: int | None = Field(None, ge=1, le=RANK, json_schema_extra={"bound": "rank"}, description="Fine-tune with LoRA adapters of this rank "
                                                                   "(frozen base)")
    lora_targets: str | None = Field(None, min_length=1, description="Comma-separated modules for LoRA (default: "
                                                                     "PEFT's for the family; all-linear)",
                                     json_schema_extra={"text": "a comma-separated list of module names"})
    quantize_base: Literal["nf4", "int8"] | None = Field(None, description="QLoRA: quantised frozen base")
    lora_alpha: float | None = Field(None, gt=0, **_FINITE, description="LoRA alpha (API only; default: the "
                                                                        "family's)")
    lora_dropout: float | None = Field(None, ge=0, lt=1, **_FINITE, description="LoRA dropout (API only)")


class EstimateKeywords(KeywordGroup):
    """`estimate`'s own options."""

    gpu: str | None = Field(None, min_length=1, description="GPU profile name (`memplan.gpus()`), for the verdict")
    mode: Literal["training", "inference"] | None = Field(None, description="training (default) or inference "
                                                                            "(serving)")
    max_micro_batch: bool | None = Field(None, description="Training: the largest micro-batch that fits on gpu")
    max_seq: bool | None = Field(None, description="Training: the longest sequence that fits on gpu")
    calibration: str | None = Field(None, min_length=1, description="A `memplan profile` record to calibrate with")
    engine: Literal["plain", "deepspeed", "megatron", "fsdp", "vllm", "hf", "sglang"] | None = Field(
        None, description="Accounting convention of a real engine (plain, deepspeed, megatron, fsdp); with "
                          "mode='inference': vllm (default), sglang or hf")


class ServingKeywords(KeywordGroup):
    """Serving (`estimate(mode='inference')`, `estimate_inference`), named as vLLM names them."""

    batch: int | None = Field(None, ge=1, le=BATCH, description="Inference: concurrent sequences (vllm: checked "
                                                                "against the KV blocks and max_num_seqs)")
    context: int | None = Field(None, ge=1, le=POSITIONS, description="Inference: tokens per sequence, prompt + "
                                                                      "generated")
    prompt: int | None = Field(None, ge=1, le=POSITIONS, description="Inference: prompt tokens per sequence")
    output: int | None = Field(None, ge=0, le=POSITIONS, description="Inference: generated tokens per sequence "
                                                                     "(context = prompt + output)")
    kv_cache_dtype: str | None = Field(None, min_length=1, description="Inference: KV cache dtype as vLLM names it: "
                                                                       "auto, bfloat16, float16, fp8, fp8_e4m3, "
                                                                       "fp8_e5m2")
    kv_dtype: str | None = Field(None, min_length=1, description="Inference: alias of kv_cache_dtype (bf16, fp16, "
                                                                 "fp8)")
    quantization: str | None = Field(None, min_length=1, description="Inference: vLLM's --quantization (fp8, awq, "
                                                                     "gptq, compressed-tensors, mxfp4, ...)")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, **_FINITE,
                                                 description="vllm: fraction of the GPU's memory vLLM may use")
    max_model_len: int | None = Field(None, ge=1, le=POSITIONS, description="vllm: longest request vLLM admits")
    max_num_seqs: int | None = Field(None, ge=1, le=BATCH, description="vllm: sequences per scheduler step")
    max_num_batched_tokens: int | None = Field(None, ge=1, le=POSITIONS,
                                               description="vllm: tokens per step, the chunked-prefill size")
    block_size: int | None = Field(None, ge=1, le=1 << 20, description="vllm: tokens per KV block")
    enforce_eager: bool | None = Field(None, description="vllm: no CUDA graphs")
    mem_fraction_static: float | None = Field(None, gt=0, le=1, **_FINITE,
                                              description="sglang: (weights + KV pool) as a share of the memory free "
                                                          "before the load")
    enable_expert_parallel: bool | None = Field(None, description="vllm: shard MoE experts over the TP x DP ranks")
    vllm_version: str | None = Field(None, min_length=1, description="vllm: the release whose accounting to "
                                                                     "reproduce")
    vllm_entrypoint: Literal["serve", "llm"] | None = Field(None, description="vllm: `vllm serve` or the offline LLM "
                                                                              "class")
    prefill_chunk: int | None = Field(None, ge=1, le=POSITIONS, description="hf: chunked prefill size in tokens")
    int4_group: int | None = Field(None, ge=1, le=1 << 20, description="int4 weights: quantisation group size "
                                                                       "(API only)")
    max_batch: bool | None = Field(None, description="Inference: the most concurrent sequences that fit")
    max_context: bool | None = Field(None, description="Inference: the longest context that fits")


class WalkKeywords(KeywordGroup):
    """The op walk's inputs, shared by time and plan."""

    tokens: float | str | None = Field(None, description="Tokens to train on: 300e9 or '300B'")
    steps: int | None = Field(None, ge=1, le=STEPS, description="Optimizer steps (with global_batch)")
    kernel_scale: float | None = Field(None, gt=0, **_FINITE, description="Multiplies every kernel efficiency of the "
                                                                          "op walk")
    system: str | None = Field(None, min_length=1, description="A `memplan bench --system` record of your GPU")
    execution: str | None = Field(None, min_length=1, description="Execution profile (profiles/execution/), e.g. "
                                                                  "megatron-core, pytorch; default: the engine's")
    overlap: Literal["auto", "none", "dp", "all"] | None = Field(None, description="auto (from the execution "
                                                                                   "profile), none, dp or all")
    interconnect: str | None = Field(None, min_length=1, description="Intra-node link profile (default: the GPU's)")
    internode: str | None = Field(None, min_length=1, description="Inter-node link profile (default: the GPU's)")
    cpu_bandwidth: float | None = Field(None, gt=0, **_FINITE, description="Host memory GB/s per node, for the CPU "
                                                                           "optimizer step of offload layouts")
    price: float | None = Field(None, ge=0, **_FINITE, description="USD per GPU-hour (default: the GPU profile's "
                                                                   "labelled price)")


class TimeKeywords(WalkKeywords):
    """`time`'s own options."""

    gpu: str = Field(min_length=1, description="GPU profile name (`memplan.gpus()`)")
    global_batch: int | None = Field(None, ge=1, le=BATCH, description="Sequences per optimizer step")
    achieved_tflops: float | None = Field(None, gt=0, **_FINITE, description="Measured end to end: hardware "
                                                                             "TFLOP/s per GPU over the whole step")
    mfu: float | None = Field(None, gt=0, le=1, **_FINITE, description="Measured end to end: model FLOPs / (step x "
                                                                       "dense peak)")
    measured: str | None = Field(None, min_length=1, description="A `memplan profile --device cuda` record")
    causal_flops: bool | None = Field(None, description="Count attention FLOPs over the causal half only")


class PlanKeywords(WalkKeywords):
    """`plan`'s own options."""

    gpu: str = Field(min_length=1, description="GPU profile name (`memplan.gpus()`)")
    global_batch: int = Field(ge=1, le=BATCH, description="Sequences per optimizer step (required)")
    by: Literal["time", "cost"] | None = Field(None, description="Rank by step time or by GPU-seconds per step")
    top: int | None = Field(None, ge=1, le=REPEAT, description="Candidates to keep")
    min_gpus: bool | None = Field(None, description="Find the fewest GPUs on which any strategy fits")
    max_gpus: int | None = Field(None, ge=1, le=GPUS, description="With min_gpus: give up above this many GPUs; "
                                                                  "with scale: the largest count tried")
    scale: bool | None = Field(None, description="Also try 2x, 4x, ... gpus up to max_gpus")
    max_micro_batch: int | None = Field(None, ge=1, le=BATCH, description="Largest micro-batch to consider")
    cpu_memory: int | str | None = Field(None, description="CPU RAM per node, bytes or '1TiB'  [default: 1 TiB]")
    reference: bool | None = Field(None, description="The layout keywords describe a layout to rank and explain")
    pin: dict[str, Any] | None = Field(None, description="Layout dimensions to fix, e.g. {'tp': 8} (the CLI pins "
                                                         "the layout flags given)")
    emit: Literal["deepspeed", "accelerate", "torchtitan", "megatron"] | None = Field(
        None, description="Write the best layout in that engine's own format")
    emit_to: str | None = Field(None, min_length=1, description="File for emit (default: the engine's "
                                                                "conventional name, here)")
    force: bool | None = Field(None, description="Overwrite the emit file if it exists")


class ServeKeywords(KeywordGroup):
    """`serve`'s own options: capacity planning for a request rate under latency targets."""

    gpu: str = Field(min_length=1, description="GPU profile name (`memplan.gpus()`)")
    engine: Literal["vllm", "sglang"] | None = Field(None, description="Serving engine whose memory accounting "
                                                                       "sets the KV capacity  [default: vllm]")
    rate: float | None = Field(None, gt=0, le=1e9, **_FINITE, description="Requests per second, all replicas "
                                                                          "together (Poisson arrivals)")
    concurrency: int | None = Field(None, ge=1, le=BATCH, description="Instead of rate: a benchmark's fixed "
                                                                      "concurrency (closed loop), one replica")
    prompt: int | None = Field(None, ge=1, le=POSITIONS, description="Prompt tokens per request (the mean)")
    output: int | None = Field(None, ge=1, le=POSITIONS, description="Output tokens per request (the mean)")
    prompt_p90: int | None = Field(None, ge=1, le=POSITIONS, description="90th percentile of prompt tokens  "
                                                                         "[default: the mean]")
    output_p90: int | None = Field(None, ge=1, le=POSITIONS, description="90th percentile of output tokens  "
                                                                         "[default: the mean]")
    trace: str | None = Field(None, min_length=1, description="CSV or JSONL of requests: prompt_tokens, "
                                                              "output_tokens[, arrival_s] (instead of the lengths)")
    ttft_ms: float | None = Field(None, gt=0, le=1e9, **_FINITE, description="Target time to first token, ms")
    tpot_ms: float | None = Field(None, gt=0, le=1e9, **_FINITE, description="Target time per output token, ms")
    percentile: Literal["p50", "p90"] | None = Field(None, description="Which percentile the targets bound  "
                                                                       "[default: p90]")
    tp: int | None = Field(None, ge=1, le=GPUS, description="Pin the tensor parallel size (else 1, 2, 4, 8 "
                                                            "searched)")
    mode: Literal["both", "aggregated", "disaggregated"] | None = Field(
        None, description="Prefill and decode in the same replicas, in separate ones (P:D), or both searched  "
                          "[default: both]")
    max_gpus: int | None = Field(None, ge=1, le=GPUS, description="Most GPUs to consider  [default: 4096]")
    prefix_hit_rate: float | None = Field(None, ge=0, lt=1, **_FINITE, description="Share of prompt tokens "
                                                                                   "served from the prefix cache")
    draft: str | None = Field(None, min_length=1, description="Speculative decoding: the draft model (profile or "
                                                              "config); without it, n-gram/MTP (no draft cost)")
    num_speculative_tokens: int | None = Field(None, ge=1, le=64, description="Speculative decoding: tokens "
                                                                              "drafted per step")
    acceptance_rate: float | None = Field(None, ge=0, le=1, **_FINITE, description="Speculative decoding: share "
                                                                                   "of drafted tokens accepted")


class ProfileKeywords(KeywordGroup):
    """`profile`'s own options."""

    gpu: str | None = Field(None, min_length=1, description="GPU profile name, for the estimate beside it")
    device: Literal["cuda", "cpu", "fake"] | None = Field(None, description="cuda, cpu or fake tensors "
                                                                            "[default: fake]")
    model_source: Literal["hf", "reference"] | None = Field(None, description="Hugging Face transformers or "
                                                                              "memplan's reference decoder")
    factory: str | None = Field(None, min_length=1, description="MODULE:FUNCTION building your nn.Module")
    optimizer_impl: Literal["for-loop", "foreach", "fused"] | None = Field(None, description="torch.optim "
                                                                                             "implementation")
    warmup_steps: int | None = Field(None, ge=1, le=REPEAT, description="Warm-up steps before the one measured")
    timed_steps: int | None = Field(None, ge=1, le=REPEAT, description="cuda: steps timed with CUDA events")


# ---- which fields each function takes, in the order help() shows them ---------------------------------------
def _spec_fields() -> dict[str, tuple[type, str]]:
    from memplan.spec.layout import Layout
    from memplan.spec.training import Workload

    out: dict[str, tuple[type, str]] = {}
    for model in (Layout, Workload):
        for name in model.model_fields:
            out[name] = (model, name)
    return out


LAYOUT_FIRST = ("gpus", "zero", "tp", "pp", "micro_batch", "seq", "grad_accum", "recompute", "attention")
# the serving keywords `serve` passes to the engine's memory accounting
SERVE_SERVING = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "kv_cache_dtype", "quantization",
                 "gpu_memory_utilization", "vllm_version")
SERVING_LAYOUT = ("gpus", "gpus_per_node", "tp", "pp", "ep", "etp", "engine", "attention", "seq")


def _group(model: type, skip: tuple[str, ...] = ()) -> list[str]:
    return [n for n in model.model_fields if n not in skip]


@lru_cache(maxsize=None)
def _training() -> tuple[str, ...]:
    spec = list(_spec_fields())
    return (*LAYOUT_FIRST, *[n for n in spec if n not in LAYOUT_FIRST], *_group(RecipeKeywords),
            *_group(LoraKeywords), *_group(ArchitectureKeywords))


@lru_cache(maxsize=None)
def keywords(function: str) -> tuple[str, ...]:
    """The keyword names `function` takes after MODEL, in help() order (the positional gpu first)."""
    t = _training()
    if function == "build_setup":
        return ("setup", *t, "download")
    if function == "estimate":
        return ("gpu", "setup", *t, "download", *_group(EstimateKeywords, ("gpu", "engine")), *_group(ServingKeywords))
    if function == "compare":
        return ("gpu", "setup", *t, "download")
    if function == "estimate_inference":
        serving = [n for n in SERVING_LAYOUT]
        return ("gpu", *serving, "precision", "weights_dtype", *_group(ServingKeywords),
                *_group(ArchitectureKeywords))
    if function == "time":
        return ("gpu", "setup", *t, "download", *_group(TimeKeywords, ("gpu",)))
    if function == "plan":
        return ("gpu", "setup", *t, "download", *_group(PlanKeywords, ("gpu",)))
    if function == "serve":
        return ("gpu", *_group(ServeKeywords, ("gpu",)), *SERVE_SERVING)
    if function == "profile":
        lora = set(LoraKeywords.model_fields)
        return ("gpu", "setup", "download", *[n for n in t if n != "optimizer_impl" and n not in lora],
                *_group(ProfileKeywords, ("gpu",)))
    raise KeyError(function)


# the keywords a function takes positionally too (after MODEL), as the API always has
POSITIONAL = {"estimate": ("gpu",), "compare": ("gpu",), "estimate_inference": ("gpu",), "time": ("gpu",),
              "plan": ("gpu",), "profile": ("gpu",), "build_setup": (), "serve": ("gpu",)}
_OWN = {"estimate": (EstimateKeywords, ServingKeywords), "compare": (EstimateKeywords,),
        "estimate_inference": (EstimateKeywords, ServingKeywords), "time": (TimeKeywords,),
        "plan": (PlanKeywords,), "profile": (ProfileKeywords,), "build_setup": (),
        "serve": (ServeKeywords, ServingKeywords)}
_SHARED = (ModelKeywords, RecipeKeywords, LoraKeywords, ArchitectureKeywords)


def field_of(function: str, name: str):
    """The pydantic FieldInfo that defines keyword `name` of `function`."""
    for model in (*_OWN[function], *_SHARED):
        if name in model.model_fields:
            return model.model_fields[name]
    spec = _spec_fields()
    if name in spec:
        model, key = spec[name]
        return model.model_fields[key]
    raise KeyError(name)


def _optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if annotation is Any or (args and type(None) in args):
        return annotation
    try:
        return annotation | None
    except TypeError:
        return typing.Optional[annotation]


@lru_cache(maxsize=None)
def signature(function: str, returns: str | None = None) -> inspect.Signature:
    """MODEL, the positional keywords (gpu), then every keyword as keyword-only, annotated; a required field
    (time's and plan's gpu, plan's global_batch) has no default, every other keyword defaults to None (not given:
    the field's default applies)."""
    P = inspect.Parameter
    params = []
    for name in keywords(function):
        field = field_of(function, name)
        kind = P.POSITIONAL_OR_KEYWORD if name in POSITIONAL[function] else P.KEYWORD_ONLY
        if field.is_required():
            params.append(P(name, kind, annotation=field.annotation))
        else:
            params.append(P(name, kind, annotation=_optional(field.annotation), default=None))
    # a positional parameter without a default cannot follow one with a default: MODEL is required there
    required_positional = any(p.default is P.empty and p.kind is P.POSITIONAL_OR_KEYWORD for p in params)
    model = (P("model", P.POSITIONAL_OR_KEYWORD, annotation="str | ModelSpec") if required_positional else
             P("model", P.POSITIONAL_OR_KEYWORD, annotation="str | ModelSpec | None", default=None))
    return inspect.Signature([model, *params], return_annotation=returns or inspect.Signature.empty)


def _non_none(annotation: Any) -> Any:
    """`int | None` -> int; `Literal[...] | None` -> the Literal; anything else as it is."""
    if typing.get_origin(annotation) is Literal:
        return annotation
    args = tuple(a for a in typing.get_args(annotation) if a is not type(None))
    if len(args) != len(typing.get_args(annotation)) and args:
        return args[0] if len(args) == 1 else Union[args]
    return annotation


def _type_text(annotation: Any) -> str:
    annotation = _non_none(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) is not dict:
        return " | ".join(_type_text(a) for a in args)
    if annotation is Any:
        return "ModelSpec"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def shown_default(field) -> Any:
    """The default a user is told about: the field's, or for a field left unset (None) the value used then."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("shown_default", field.default)


def _default_text(field) -> str:
    if field.is_required():
        return "  (required)"
    default = shown_default(field)
    if field.default_factory is not None or default is None or default is ... or callable(default):
        return ""
    return f"  [default: {default!r}]"


def keyword_doc(function: str) -> str:
    """The docstring section listing every keyword: name (type): description [default]."""
    lines = ["Keywords (generated from the option fields the CLI flags come from; not given = the default):"]
    for name in keywords(function):
        field = field_of(function, name)
        key = (name, id(field))
        if key not in _LINES:  # the same field in several functions: its lines are made once
            desc = (field.description or "").rstrip(".")
            _LINES[key] = _wrap(f"{name} ({_type_text(field.annotation)}): {desc}.{_default_text(field)}")
        lines.append(_LINES[key])
    return "\n".join(lines)


_LINES: dict[tuple[str, int], str] = {}


def _wrap(text: str, width: int = 108) -> str:
    """Indented 4, continued at 8, at most `width` characters of text a line (textwrap costs ~10x more)."""
    out, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "    " + "\n        ".join(out)


@lru_cache(maxsize=None)
def _adapter(function: str, name: str):
    from typing import Annotated

    from pydantic import TypeAdapter

    if name == "model":
        return None
    field = field_of(function, name)
    ann = _non_none(field.annotation)
    return TypeAdapter(Annotated[(ann, *field.metadata)]) if field.metadata else TypeAdapter(ann)


def validate(function: str, given: dict[str, Any]) -> dict[str, Any]:
    """Each keyword checked against its field: the value as the field converts it, or InputError(name)."""
    from pydantic import ValidationError

    from memplan.field_errors import expected_words
    from memplan.userfiles import format_json_value

    out = {}
    for name, value in given.items():
        adapter = _adapter(function, name)
        if adapter is None or value is None:
            out[name] = value
            continue
        if isinstance(value, bool) and _non_none(field_of(function, name).annotation) is not bool:
            kind = _non_none(field_of(function, name).annotation)
            words = {int: "a whole number", float: "a number", str: "a string"}.get(kind, _type_text(kind))
            raise InputError(name, f"must be {words}, got {value!r}")
        try:
            out[name] = adapter.validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            problem = expected_words(err)
            if "input" in err:
                problem += f", got {format_json_value(err['input'])}"
            raise InputError(name, problem) from None
    return out


# ---- the type stub IDEs read (memplan/__init__.pyi): the same signatures, written out -----------------------
def _source(annotation: Any) -> str:
    """An annotation as stub source: int | None, Literal['a', 'b'] | None, dict[str, Any] | None, ..."""
    if isinstance(annotation, str):
        return annotation.strip("'\"")
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is Union or type(annotation).__name__ == "UnionType":
        return " | ".join(_source(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[" + ", ".join(_source(a) for a in args) + "]"
    return annotation.__name__


def _stub_signature(sig: inspect.Signature) -> str:
    parts, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        stars = "**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else ""
        star = star or bool(stars)
        text = stars + p.name + (f": {_source(p.annotation)}" if p.annotation is not p.empty else "")
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    ret = f" -> {_source(sig.return_annotation)}" if sig.return_annotation is not sig.empty else ""
    if len(parts) <= 3:
        return "(" + ", ".join(parts) + ")" + ret
    return "(\n" + "".join(f"    {p},\n" for p in parts) + ")" + ret


if __name__ == "__main__":  # the generator lives above the API it reads (memplan/stub.py); kept as documented
    from memplan.stub import stub_text

    print(stub_text(), end="")
