"""The Python API: the same pydantic results the CLI prints as JSON, built through memplan/setups.py.

    >>> import memplan
    >>> est = memplan.estimate("llama-2-7b", gpu="a100-80gb", gpus=8, zero=3, micro_batch=4, seq=4096,
    ...                        recompute="full")
    >>> est.fits, est.peak_phase
    (True, 'backward')
    >>> lora = memplan.estimate("llama-3-8b", gpu="a100-80gb", lora_rank=16, seq=2048)
    >>> lora.per_gpu.model_states < 20 * 2**30
    True
    >>> serve = memplan.estimate("llama-3-70b", gpu="h100-sxm", gpus=4, tp=4, mode="inference", batch=32,
    ...                          context=4096)
    >>> serve.per_gpu.kv_cache > 0
    True
    >>> memplan.estimate("llama-2-7b", gpu="a100-80gb", gpus=8, zero=3, max_micro_batch=True,
    ...                  seq=4096).max_micro_batch > 0
    True
    >>> t = memplan.time("gpt3-175b", gpu="a100-80gb", gpus=1024, tp=8, pp=8, recompute="full",
    ...                  global_batch=1536, seq=2048, tokens=300e9, achieved_tflops=140)
    >>> 32 < t.days < 36
    True
    >>> p = memplan.plan("llama-2-7b", gpu="a100-80gb", gpus=8, global_batch=64, seq=4096)
    >>> p.candidates[0].layout.gpus
    8

Keyword arguments are the CLI flag names with '-' as '_' (precision, optimizer, gpus, tp, pp, cp, ep, zero,
offload_optimizer, offload_params, engine, micro_batch, seq, grad_accum, recompute, attention, lora_rank, ...).
Each function's signature and the keyword list in its docstring are generated from the typed option fields the
CLI flags come from (memplan/keywords.py, spec/layout.py Layout, spec/training.py Workload), so `help()`, an IDE
and `inspect.signature` show every option with its type and default.  A bad value raises `InputError` naming the
keyword; an unknown keyword is an error with a did-you-mean:

    >>> memplan.estimate("llama-2-7b", zero=5)
    Traceback (most recent call last):
    ...
    memplan.errors.InputError: zero must be at most 3, got 5
    >>> memplan.estimate("llama-2-7b", micro_bach=4)
    Traceback (most recent call last):
    ...
    memplan.errors.InputError: unknown keyword argument 'micro_bach' of estimate; did you mean 'micro_batch' or ...?

A result prints as one line, renders in a notebook as the CLI's table, and has `.to_dataframe()` (pandas):

    >>> est
    MemoryEstimate(llama-2-7b on 8 x a100-80gb: ... GiB per GPU required, fits, peak in backward)

`profile` imports torch only when called.
"""
from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

import memplan.keywords as _kw
from memplan.errors import InputError, MemplanError, did_you_mean, keyword_wording
from memplan.setups import TRAINING_KEYS, check_keys, resolve_gpu, training_setup

if TYPE_CHECKING:
    from memplan.results.capacity import CapacityPlan
    from memplan.results.inference import InferenceEstimate
    from memplan.results.memory import Comparison, MemoryEstimate
    from memplan.results.plan import PlanResult
    from memplan.results.profile import ProfileResult
    from memplan.results.rl import RLPlan
    from memplan.results.time import TimeEstimate
    from memplan.results.views import Table
    from memplan.spec.setup import TrainingSetup

__all__ = ["estimate", "estimate_inference", "compare", "time", "plan", "serve", "profile", "rl", "build_setup",
           "load_setup", "save_setup", "models", "gpus", "InputError", "MemplanError"]


def _under_cli() -> bool:
    """True inside a `memplan` command: the CLI validated its flags with its own types and words errors as flags."""
    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click is not None else None
    # memplan's own commands only: an API call from a user's click application is an API call
    return ctx is not None and getattr(ctx.command.callback, "__module__", "").startswith("memplan.cli")


def _choices() -> dict[str, tuple]:
    import typing

    out = {}
    for fn in _kw.POSITIONAL:
        for name in _kw.keywords(fn):
            ann = _kw._non_none(_kw.field_of(fn, name).annotation)
            if typing.get_origin(ann) is typing.Literal:
                out[name] = typing.get_args(ann)
    return out


def _public(name: str, returns: str, example: str):
    """The API function `name`: its signature and keyword list generated from the option fields (memplan/keywords.py),
    every keyword checked against its field, a setup= file read first, and errors worded with keywords."""
    sig = _kw.signature(name, returns)
    names = tuple(sig.parameters)

    def wrap(f):
        @functools.wraps(f)
        def call(*args: Any, **kwargs: Any):
            if _under_cli():  # the CLI's own path: flags already checked, errors keep the flag wording
                return f(*args, **kwargs)
            for key in kwargs:
                if key not in sig.parameters:
                    text = did_you_mean(key, names, "keyword argument").replace(f"{key!r}", f"{key!r} of {name}", 1)
                    raise InputError(key, "is not a keyword of " + name, keyword_text=text, flag_text=text)
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise MemplanError(f"{name}(): {exc}") from None
            given = {k: v for k, v in bound.arguments.items() if v is not None}
            try:
                given = _kw.validate(name, given)
                if "setup" in given:
                    given = _with_setup_file(given)
                if given.pop("download", False):
                    from memplan.catalog import download_config

                    given["model"] = download_config(given.get("model"))
                if "model" not in given:
                    raise MemplanError("model is needed: a profile name, a config.json, a parameter count, or a "
                                       "setup= file that names the model")
                return f(**given)
            except InputError as exc:
                exc.args = (exc.keyword_message(),)
                raise
            except MemplanError as exc:
                exc.args = (keyword_wording(str(exc), names, _choices()),)
                raise

        call.__signature__ = sig  # type: ignore[attr-defined]
        call.__doc__ = f"{(f.__doc__ or '').rstrip()}\n\n{_kw.keyword_doc(name)}\n\nExample:\n\n{example}\n"
        return call

    return wrap


def _with_setup_file(given: dict[str, Any]) -> dict[str, Any]:
    """setup=FILE: the file's setup first, the keywords given override it (the CLI's --setup)."""
    from memplan.setups import load_setup_file

    loaded = load_setup_file(given.pop("setup"))
    base = dict(loaded.kwargs)
    if "model" in given:
        base.pop("model", None)
    if loaded.warnings:  # what the reader could not express: kept in the answer's `warnings`
        base["warnings"] = list(loaded.warnings)
    return {**base, **given}

# serving keywords (setups.SERVING_KEYS); the first four mark a call as serving in estimate()
INFERENCE_KEYS = ("batch", "context", "kv_dtype", "prefill_chunk", "weights_dtype", "prompt", "output",
                  "kv_cache_dtype", "quantization", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
                  "max_num_batched_tokens", "block_size", "enforce_eager", "vllm_version", "vllm_entrypoint",
                  "enable_expert_parallel", "int4_group")

# The whiteboard table: (label, overrides). Same model, GPU count and optimizer; only the strategy changes.
COMPARE_STRATEGIES = [
    ("fp32 (DDP)", {"precision": "fp32", "zero": 0}),
    ("mixed precision (DDP)", {"zero": 0}),
    ("ZeRO-1 (P_os)", {"zero": 1}),
    ("ZeRO-2 (P_os+g)", {"zero": 2}),
    ("ZeRO-3 (P_os+g+p)", {"zero": 3}),
    ("ZeRO-3 + CPU offload", {"zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
]


@_public("build_setup", "TrainingSetup", """    >>> setup = memplan.build_setup("llama-2-7b", gpus=8, zero=3, micro_batch=2, seq=4096)
    >>> setup.layout.zero, setup.seq
    (3, 4096)""")
def build_setup(model: str, **kwargs: Any) -> "TrainingSetup":
    """TrainingSetup from a model name/count/config path and CLI-style keyword arguments."""
    return training_setup(model, **kwargs)


@_public("estimate", "MemoryEstimate | InferenceEstimate", """    >>> est = memplan.estimate("llama-2-7b", gpu="a100-80gb", gpus=8, zero=3, micro_batch=4, seq=4096,
    ...                        recompute="full")
    >>> est.fits, est.per_gpu.required < 40 * 2**30
    (True, True)
    >>> est                                  # one line; a notebook shows the CLI's table, est.to_dataframe() rows
    MemoryEstimate(llama-2-7b on 8 x a100-80gb: ... GiB per GPU required, fits, peak in backward)""")
def estimate(model: str, gpu: str | None = None, *, mode: str = "training", calibration: str | None = None,
             max_micro_batch: bool = False, max_seq: bool = False, max_batch: bool = False,
             max_context: bool = False, **kwargs: Any) -> "MemoryEstimate | InferenceEstimate":
    """Memory per GPU for training (default), fine-tuning (lora_rank=...) or serving (mode="inference") MODEL."""
    if mode not in ("training", "inference"):
        raise MemplanError(f"mode must be 'training' or 'inference', got {mode!r}")
    gpu_spec = resolve_gpu(gpu)
    if (max_micro_batch or max_seq or max_batch or max_context) and gpu_spec is None:
        raise MemplanError("max_micro_batch/max_seq/max_batch/max_context need gpu=NAME to fit against")
    if mode == "inference":
        if max_micro_batch or max_seq or calibration:
            raise MemplanError("max_micro_batch, max_seq and calibration are training options")
        return estimate_inference.__wrapped__(model, gpu, max_batch=max_batch, max_context=max_context,  # type: ignore
                                              **kwargs)
    if max_batch or max_context or any(k in kwargs for k in INFERENCE_KEYS[:4]):
        raise MemplanError("batch/context/max_batch/max_context are serving options: pass mode='inference'")
    from memplan.memory.estimate import estimate_memory

    setup = training_setup(model, **kwargs)
    cal = _calibration(calibration)
    est = estimate_memory(setup, gpu_spec, calibration=cal)
    if est.fits is False and gpu_spec is not None:
        from memplan.hints import smallest_change

        hint = smallest_change(setup, gpu_spec)
        est.hint = f"{hint.change} ({hint.why}: {hint.required / 2**30:,.2f} GiB per GPU)" if hint else None
    if max_micro_batch or max_seq:
        from memplan.hints import why_nothing_fits
        from memplan.memory.search import max_micro_batch as _mmb, max_seq as _ms

        if max_micro_batch:
            est.max_micro_batch = _mmb(setup, gpu_spec, calibration=cal)
            if est.max_micro_batch == 0:
                est.notes.append(why_nothing_fits(setup, gpu_spec, "micro-batch"))
        if max_seq:
            est.max_seq = _ms(setup, gpu_spec, calibration=cal)
            if est.max_seq == 0:
                est.notes.append(why_nothing_fits(setup, gpu_spec, "sequence length"))
    return est


def _calibration(path: str | None):
    if path is None:
        return None
    from memplan.memory.calibration import load_calibration

    return load_calibration(path)


@_public("compare", "Comparison", """    >>> rows = memplan.compare("llama-2-7b", gpu="a100-80gb", gpus=8, seq=2048)
    >>> [r.strategy for r in rows.strategies][:3]
    ['fp32 (DDP)', 'mixed precision (DDP)', 'ZeRO-1 (P_os)']""")
def compare(model: str, gpu: str | None = None, **kwargs: Any) -> "Comparison":
    """One estimate per strategy (fp32, mixed precision, ZeRO-1/2/3, ZeRO-3 + offload): the whiteboard table."""
    from memplan.memory.estimate import estimate_memory
    from memplan.results.memory import Comparison, StrategyEstimate

    gpu_spec = resolve_gpu(gpu)
    rows = []
    for label, overrides in COMPARE_STRATEGIES:
        opts = {**kwargs, "offload_optimizer": None, "offload_params": None, **overrides}
        rows.append(StrategyEstimate(strategy=label, estimate=estimate_memory(
            training_setup(model, **{k: v for k, v in opts.items() if v is not None}), gpu_spec)))
    return Comparison(strategies=rows)


@_public("estimate_inference", "InferenceEstimate", """    >>> serve = memplan.estimate_inference("llama-3-8b", gpu="h100-sxm", batch=8, context=8192)
    >>> serve.per_gpu.kv_cache > 0
    True""")
def estimate_inference(model: str, gpu: str | None = None, *, max_batch: bool = False, max_context: bool = False,
                       **kwargs: Any) -> "InferenceEstimate":
    """Serving memory per GPU.  engine="vllm" (default): vLLM's startup accounting (weights, peak activation,
    non-torch, CUDA graphs, KV blocks, max concurrency, whether it starts), with vLLM's settings as keywords
    (gpu_memory_utilization, max_model_len, max_num_seqs, max_num_batched_tokens, block_size, kv_cache_dtype,
    quantization, vllm_version); engine="hf": transformers generate (weights, DynamicCache, prefill workspace).
    max_batch / max_context: the most concurrent sequences at the context, the longest max-model-len that fits."""
    from memplan.answers.inference import estimate_inference as _estimate
    from memplan.setups import serving_setup

    if kwargs.get("mem_fraction_static") is not None:  # SGLang's name for the fraction vLLM calls
        if kwargs.get("engine") != "sglang":               # gpu_memory_utilization (memplan/memory/sglang.py)
            raise MemplanError("mem_fraction_static is SGLang's: pass engine='sglang' (vLLM's is "
                               "gpu_memory_utilization)")
        kwargs["gpu_memory_utilization"] = kwargs.pop("mem_fraction_static")
    kwargs.pop("mem_fraction_static", None)
    check_keys(kwargs, (*TRAINING_KEYS[1:], *INFERENCE_KEYS))
    setup = serving_setup(model, **kwargs)
    return _estimate(setup, resolve_gpu(gpu), max_batch=max_batch, max_context=max_context)


TIME_KEYS = ("tokens", "steps", "global_batch", "mfu", "achieved_tflops", "measured", "kernel_scale", "system",
             "execution", "overlap", "interconnect", "internode", "price", "causal_flops", "cpu_bandwidth")


@_public("time", "TimeEstimate", """    >>> t = memplan.time("gpt2", "a100-80gb", gpus=8, micro_batch=16, global_batch=512, seq=1024, tokens="10B")
    >>> t.steps
    19074""")
def time(model: str, gpu: str, **kwargs: Any) -> "TimeEstimate":
    """Step time, days, GPU-hours and cost of training MODEL on GPU (tokens=300e9 or steps=N): the op walk, or
    an end-to-end achieved_tflops / mfu / measured record; kernel_scale, system, execution, overlap as the CLI."""
    from memplan.answers.time import estimate_time

    opts = {k: kwargs.pop(k) for k in TIME_KEYS if k in kwargs}
    if opts.get("tokens") is not None:
        opts["tokens"] = _count("tokens", opts["tokens"])
    gpu_spec = _need_gpu(gpu)
    setup = training_setup(model, **kwargs)
    if "causal_flops" in opts:
        opts["causal"] = opts.pop("causal_flops")
    if "cpu_bandwidth" in opts:
        opts["cpu_bandwidth_gbps"] = opts.pop("cpu_bandwidth")
    return estimate_time(setup, gpu_spec, **opts)


PLAN_KEYS = ("global_batch", "by", "top", "min_gpus", "max_gpus", "scale", "max_micro_batch", "cpu_memory", "tokens",
             "steps", "kernel_scale", "system", "execution", "overlap", "interconnect", "internode", "price",
             "cpu_bandwidth", "pin", "reference")
EMIT_KEYS = ("emit", "emit_to", "force")
# layout keywords that, given to plan, pin that dimension of the search (cli/plan.py PINNABLE: a test keeps them equal)
PINNABLE = ("tp", "pp", "cp", "ep", "etp", "sequence_parallel", "virtual_stages", "first_stage_layers",
            "last_stage_layers", "zero", "offload_optimizer", "offload_params", "micro_batch", "recompute")


@_public("plan", "PlanResult", """    >>> p = memplan.plan("llama-2-7b", "a100-80gb", gpus=8, global_batch=64, seq=4096, top=3)
    >>> len(p.candidates), p.candidates[0].layout.gpus
    (3, 8)""")
def plan(model: str, gpu: str, **kwargs: Any) -> "PlanResult":
    """Search the layouts that fit and rank them by the op walk (global_batch=... required).  As on the CLI, a
    layout keyword given (tp, pp, cp, ep, zero, micro_batch, recompute, offload_*, ...) pins that dimension and
    the others are searched (`pin={"tp": 8}` says the same explicitly); `reference=True` instead ranks the layout
    those keywords describe (e.g. a paper's) among the candidates and explains its rank.  `emit="deepspeed"` (or
    accelerate, torchtitan, megatron) also writes the best layout in that engine's format to `emit_to` (default:
    the engine's conventional file name in the current folder), as `memplan plan --emit` does."""
    from memplan.perf.plan import plan as _plan
    from memplan.perf.time import layout_for_batch
    from memplan.spec.units import parse_bytes

    opts = {k: kwargs.pop(k) for k in PLAN_KEYS if k in kwargs}
    emit = {k: kwargs.pop(k) for k in EMIT_KEYS if k in kwargs}
    if emit.get("emit_to") and not emit.get("emit"):
        raise MemplanError("emit_to needs emit='deepspeed'|'accelerate'|'torchtitan'|'megatron'")
    if opts.get("tokens") is not None:
        opts["tokens"] = _count("tokens", opts["tokens"])
    if "global_batch" not in opts:
        raise MemplanError("plan needs global_batch=B (sequences per optimizer step)")
    gpu_spec = _need_gpu(gpu)
    # as on the CLI: a layout keyword given pins that dimension of the search (the base setup keeps only what is
    # searched); with reference=True the keywords describe the layout to rank instead
    pinned = {} if opts.get("reference") else {k: kwargs.pop(k) for k in PINNABLE if k in kwargs}
    fixed = {**pinned, **(opts.pop("pin", None) or {})} or None
    setup = training_setup(model, **kwargs)
    from memplan.perf.plan import check_options

    check_options(**{k: v for k, v in opts.items() if k in ("global_batch", "top", "max_gpus", "steps",
                                                            "max_micro_batch")})  # before max_gpus bounds a loop
    gpus = [setup.layout.gpus]
    if opts.pop("scale", False):
        while gpus[-1] * 2 <= opts.get("max_gpus", 4096):
            gpus.append(gpus[-1] * 2)
    cpu = opts.pop("cpu_memory", None)
    if isinstance(cpu, str):
        try:
            cpu = parse_bytes(cpu)
        except MemplanError:
            raise InputError("cpu_memory", f"must be a size such as '1TiB' or bytes, got {cpu!r}") from None
    if cpu is not None and not 0 < cpu <= 2**60:
        raise InputError("cpu_memory", f"must be a positive size up to 1 EiB, got {cpu!r}")
    if "cpu_bandwidth" in opts:
        opts["cpu_bandwidth_gbps"] = opts.pop("cpu_bandwidth")
    if opts.pop("reference", False):
        opts["reference"] = layout_for_batch(setup.layout, opts["global_batch"])
    result = _plan(setup, gpu_spec, gpus=gpus, cpu_memory_bytes=cpu, fixed=fixed, **opts)
    if emit.get("emit"):
        emit_plan(result, setup, emit["emit"], emit.get("emit_to"), force=bool(emit.get("force")))
    return result


def emit_plan(result: "PlanResult", setup: "TrainingSetup", fmt: str, path: str | None = None,
              force: bool = False):
    """Write the best candidate of `result` in an engine's own config format (memplan/setupfiles) as a new file;
    returns (path written, EmittedSetup).  What the format cannot express is warned about (warnings.warn)."""
    import warnings

    from memplan.setupfiles import emit_setup, write_setup_file

    if not result.candidates:
        raise MemplanError("emit: no layout fits, nothing to write (see the result's `why`)")
    L = result.candidates[0].layout
    layout = dict(model=setup.model.name, gpus=L.gpus, gpus_per_node=L.gpus_per_node, tp=L.tp, pp=L.pp, cp=L.cp,
                  ep=L.ep, first_stage_layers=L.first_stage_layers, last_stage_layers=L.last_stage_layers,
                  zero=L.zero, offload_optimizer=L.offload_optimizer, offload_params=L.offload_params,
                  engine=L.engine if L.engine in ("deepspeed", "fsdp") else None, micro_batch=L.micro_batch,
                  grad_accum=L.grad_accum, recompute=L.recompute, recompute_every=L.recompute_every,
                  sequence_parallel=L.sequence_parallel, virtual_stages=L.virtual_stages,
                  precision=setup.recipe.name,  # with its overrides (Megatron: gradients=bf16)
                  optimizer=setup.optimizer.name, seq=setup.seq)
    target = path or emit_setup(layout, fmt).filename
    written, emitted = write_setup_file(target, layout, fmt, force=force, what="emit_to")
    for w in emitted.warnings:
        warnings.warn(f"{fmt} cannot say: {w}", stacklevel=3)
    return written, emitted


@_public("serve", "CapacityPlan", """    >>> cap = memplan.serve("llama-3.1-8b", "h100-sxm", rate=20, prompt=1024, output=256, ttft_ms=500,
    ...                     tpot_ms=40)
    >>> cap.meets_targets, cap.best.gpus >= 1
    (True, True)""")
def serve(model: str, gpu: str, **kwargs: Any) -> "CapacityPlan":
    """Capacity planning: the serving layout (TP, max_num_seqs, max_num_batched_tokens, replicas, aggregated or
    disaggregated prefill/decode with the P:D ratio) with the fewest GPUs that serves `rate` requests/s of
    `prompt` + `output` tokens (fixed, a mean with prompt_p90/output_p90, or a trace=FILE) within the TTFT/TPOT
    targets, from the roofline and a batching/queueing model; speculative decoding (draft, num_speculative_tokens,
    acceptance_rate) and prefix_hit_rate as inputs.  `.pareto` is the table of output tokens/s per GPU against
    latency; `.assumptions` and `.unknowns` say what the answer rests on.  When no layout meets the targets the
    answer says so, with the closest layout (`.closest`, `.why`)."""
    from memplan.answers.capacity import plan_capacity

    return plan_capacity(model, _need_gpu(gpu), **kwargs)


PROFILE_KEYS = ("device", "model_source", "factory", "optimizer_impl", "warmup_steps", "timed_steps")


@_public("profile", "ProfileResult", """    >>> r = memplan.profile("gpt2", device="fake", micro_batch=1, seq=128)  # doctest: +SKIP
    >>> r  # doctest: +SKIP""")
def profile(model: str, gpu: str | None = None, *, device: str = "fake", model_source: str = "hf",
            factory: str | None = None, optimizer_impl: str | None = None, warmup_steps: int = 1,
            timed_steps: int = 5, **kwargs: Any) -> "ProfileResult":
    """Measure one training step of MODEL (device "cuda", "cpu" or "fake") beside the estimate of that step."""
    from memplan.memory.estimate import estimate_memory
    from memplan.results.profile import ProfileResult

    setup = training_setup(model, **kwargs)
    try:
        from memplan.measure.runner import measure_training_step
    except ImportError as exc:
        raise MemplanError(f"profile needs torch ({exc.name} is missing): `pip install torch`") from None
    measured = measure_training_step(setup, device=device, model_source=factory or model_source,
                                     warmup_steps=warmup_steps, optimizer_impl=optimizer_impl,
                                     cuda_options={"timed_steps": timed_steps} if device == "cuda" else None)
    est = estimate_memory(measured.setup or setup, resolve_gpu(gpu), kernels="cuda" if device == "cuda" else "cpu")
    return ProfileResult.of(measured, est)


def _count(name: str, value: float | str) -> float:
    """tokens=300e9 or '300B': a positive finite count."""
    import math

    from memplan.spec.units import parse_count

    try:
        n = float(parse_count(value)) if isinstance(value, str) else float(value)
    except MemplanError:
        n = math.nan
    if not math.isfinite(n) or n <= 0:
        raise InputError(name, f"must be a positive count such as 300e9 or '300B', got {value!r}")
    return n


def _need_gpu(gpu: str | None):
    spec = resolve_gpu(gpu)
    if spec is None:
        raise MemplanError("this needs gpu=NAME (see `memplan gpus`)")
    return spec


# ---- setup files, listings ----------------------------------------------------------------------------------
class LoadedSetup(dict):
    """What a setup file gave, as the keyword arguments of estimate/time/plan (`memplan.estimate(**loaded)`, or
    override any: `memplan.estimate(**{**loaded, "seq": 4096})`), with what was read and ignored."""

    def __init__(self, path: str, fmt: str, kwargs: dict[str, Any], read: list[str], ignored: list[str],
                 warnings: list[str] | None = None):
        super().__init__(kwargs)
        self.path, self.format, self.read, self.ignored = path, fmt, read, ignored
        self.warnings: list[str] = list(warnings or [])  # what the reader could not express (the CLI prints them)

    def __repr__(self) -> str:
        return (f"LoadedSetup({self.path!r}, {self.format}: {len(self)} keywords, {len(self.ignored)} field(s) "
                f"ignored)")

    def _repr_markdown_(self) -> str:
        from memplan.results.views import markdown_rows

        rows = [[k, getattr(v, "name", v)] for k, v in self.items()]
        text = f"**{self.path}** ({self.format})\n\n" + markdown_rows(["keyword", "value"], rows)
        if self.ignored:
            text += "\n\nignored: " + "; ".join(self.ignored)
        return text


def load_setup(path: str) -> LoadedSetup:
    """Read a setup file: memplan's own (as `save_setup` writes it; JSON/YAML/TOML) or an engine's (DeepSpeed
    ds_config.json, accelerate YAML, torchtitan TOML, axolotl YAML, HF TrainingArguments JSON, Megatron-LM launch
    script), as keyword arguments (the CLI's `--setup FILE`; `setup=FILE` on each function does the same).

        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "ds_config.json")
        >>> _ = open(path, "w").write(json.dumps({"zero_optimization": {"stage": 3}, "bf16": {"enabled": True}}))
        >>> kw = memplan.load_setup(path)
        >>> kw["zero"], kw.format
        (3, 'deepspeed')
        >>> memplan.estimate("llama-2-7b", **kw).setup.layout.zero
        3
    """
    from memplan.setups import load_setup_file

    try:
        f = load_setup_file(path)
    except MemplanError as exc:
        exc.args = (str(exc).replace("--setup", "setup"),)
        raise
    return LoadedSetup(f.path, f.format, f.kwargs, f.read, f.ignored, f.warnings)


def save_setup(path: str, setup: Any, force: bool = False) -> str:
    """Write a setup as memplan's own setup file (JSON, or YAML by extension) that `load_setup`, `setup=` and the
    CLI's `--setup` read back: `setup` is a TrainingSetup (`build_setup`), an estimate (its `.setup`) or
    `load_setup`'s keywords.  An existing file is kept unless force=True.  Returns the path written.

        >>> import os, tempfile
        >>> est = memplan.estimate("llama-2-7b", gpus=8, zero=3, seq=4096)
        >>> path = memplan.save_setup(os.path.join(tempfile.mkdtemp(), "run.yaml"), est)
        >>> memplan.estimate(setup=path).per_gpu.required == est.per_gpu.required
        True
    """
    from memplan.setups import save_setup_file
    from memplan.spec.setup import TrainingSetup

    if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
        raise InputError("path", f"must be a file path, got {type(path).__name__}")
    if isinstance(setup, dict):
        kw = dict(setup)
        setup = build_setup(kw.pop("model", None), **kw)
    value = getattr(setup, "setup", setup)
    if not isinstance(value, TrainingSetup):
        raise InputError("setup", "must be a TrainingSetup (memplan.build_setup), a training estimate or "
                                  f"load_setup's keywords, got {type(setup).__name__}")
    try:
        return save_setup_file(str(path), value, force=force)
    except MemplanError as exc:
        exc.args = (str(exc).replace("--save-setup", "save_setup").replace("--force", "force=True"),)
        raise


def models() -> "Table":
    """The built-in model profiles, one row each (a notebook shows the table; `.to_dataframe()` with pandas).

        >>> rows = memplan.models()
        >>> row = next(r for r in rows if r["name"] == "llama-2-7b")
        >>> row["parameters"], row["layers"]
        (6738415616, 32)
    """
    import memplan.catalog as catalog
    from memplan.results.views import Table

    rows = []
    for key, m in catalog.models().items():
        a, pc = m.architecture, m.parameters
        att = a.first.attention if a else None
        rows.append({"name": key, "parameters": pc.total, "active": pc.active, "family": a.family if a else None,
                     "layers": a.n_layers if a else None, "hidden": a.hidden_size if a else None,
                     "heads": att.heads if att else None, "kv_heads": att.kv_heads if att else None,
                     "vocab": a.vocab_size if a else None})
    return Table("models", rows)


def gpus() -> "Table":
    """The GPU profiles, one row each: memory (bytes and GiB), bandwidth, dense peak TFLOP/s per dtype.

        >>> g = next(r for r in memplan.gpus() if r["name"] == "h100-sxm")
        >>> g["memory_gib"], g["bf16_tflops"]
        (79.6, 989.4)
    """
    import memplan.catalog as catalog
    from memplan.results.views import Table

    rows = []
    for key, g in catalog.gpus().items():
        t = g.peak_tflops
        rows.append({"name": key, "memory_bytes": g.memory_bytes, "memory_gib": round(g.memory_bytes / 2**30, 1),
                     "bandwidth_gbps": g.memory_bandwidth_gbps,
                     **{f"{d}_tflops": t.get(d) for d in ("fp32", "tf32", "bf16", "fp16", "fp8")},
                     "interconnect": g.interconnect})
    return Table("gpus", rows)


def __getattr__(name: str):
    raise AttributeError(f"module 'memplan' has no attribute {name!r}")


def rl(model: Any = None, gpu: str | None = None, **kwargs: Any) -> "RLPlan":
    """RL post-training and preference tuning (GRPO/DAPO/RLOO/PPO, DPO/KTO/ORPO as TRL runs them): memory per
    phase on each GPU (weight sync, rollout, scoring, update), host RAM, time per RL step, the smallest change and
    the fastest layout that fit (docs/rl.md).  Keywords: memplan/answers/rl.py `rl` (the CLI's `memplan rl` flags
    with '_' for '-'); config= reads a TRL GRPOConfig/DPOConfig, verl YAML or OpenRLHF launch script.

        >>> p = memplan.rl("qwen2.5-0.5b", "h100-sxm", prompt_length=256, completion_length=512,
        ...                rollout="vllm-colocate")                                   # doctest: +SKIP
        >>> p.peak_phase, p.fits                                                      # doctest: +SKIP
    """
    from memplan.answers.rl import rl as _rl

    return _rl(model, gpu, **kwargs)
