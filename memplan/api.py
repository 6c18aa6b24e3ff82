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
offload_optimizer, offload_params, engine, micro_batch, seq, grad_accum, recompute, attention, lora_rank, ...);
an unknown one is an error with a did-you-mean.  `profile` imports torch only when called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memplan.errors import MemplanError
from memplan.keywords import check as _check_types
from memplan.setups import TRAINING_KEYS, check_keys, resolve_gpu, training_setup

if TYPE_CHECKING:
    from memplan.results.inference import InferenceEstimate
    from memplan.results.memory import Comparison, MemoryEstimate
    from memplan.results.plan import PlanResult
    from memplan.results.profile import ProfileResult
    from memplan.results.time import TimeEstimate
    from memplan.spec.setup import TrainingSetup

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


def build_setup(model: str, **kwargs: Any) -> "TrainingSetup":
    """TrainingSetup from a model name/count/config path and CLI-style keyword arguments."""
    return training_setup(model, **_check_types(kwargs))


def estimate(model: str, gpu: str | None = None, *, mode: str = "training", calibration: str | None = None,
             max_micro_batch: bool = False, max_seq: bool = False, max_batch: bool = False,
             max_context: bool = False, **kwargs: Any) -> "MemoryEstimate | InferenceEstimate":
    """Memory per GPU for training (default), fine-tuning (lora_rank=...) or serving (mode="inference") MODEL."""
    if mode not in ("training", "inference"):
        raise MemplanError(f"mode must be 'training' or 'inference', got {mode!r}")
    kwargs = _check_types(kwargs)  # issue 18: a wrong type is one line naming the keyword
    _check_types({"calibration": calibration, "max_micro_batch": max_micro_batch, "max_seq": max_seq,
                  "max_batch": max_batch, "max_context": max_context}, flags={"max_micro_batch"})
    gpu_spec = resolve_gpu(gpu)
    if (max_micro_batch or max_seq or max_batch or max_context) and gpu_spec is None:
        raise MemplanError("max_micro_batch/max_seq/max_batch/max_context need gpu=NAME to fit against")
    if mode == "inference":
        if max_micro_batch or max_seq or calibration:
            raise MemplanError("max_micro_batch, max_seq and calibration are training options")
        return estimate_inference(model, gpu, max_batch=max_batch, max_context=max_context, **kwargs)
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


def estimate_inference(model: str, gpu: str | None = None, *, max_batch: bool = False, max_context: bool = False,
                       **kwargs: Any) -> "InferenceEstimate":
    """Serving memory per GPU.  engine="vllm" (default): vLLM's startup accounting (weights, peak activation,
    non-torch, CUDA graphs, KV blocks, max concurrency, whether it starts), with vLLM's settings as keywords
    (gpu_memory_utilization, max_model_len, max_num_seqs, max_num_batched_tokens, block_size, kv_cache_dtype,
    quantization, vllm_version); engine="hf": transformers generate (weights, DynamicCache, prefill workspace).
    max_batch / max_context: the most concurrent sequences at the context, the longest max-model-len that fits."""
    from memplan.memory.inference import estimate_inference as _estimate
    from memplan.setups import serving_setup

    check_keys(kwargs, (*TRAINING_KEYS[1:], *INFERENCE_KEYS))
    kwargs = _check_types(kwargs)
    _check_types({"max_batch": max_batch, "max_context": max_context})
    setup = serving_setup(model, **kwargs)
    return _estimate(setup, resolve_gpu(gpu), max_batch=max_batch, max_context=max_context)


TIME_KEYS = ("tokens", "steps", "global_batch", "mfu", "achieved_tflops", "measured", "kernel_scale", "system",
             "execution", "overlap", "interconnect", "internode", "price", "causal_flops", "cpu_bandwidth")


def time(model: str, gpu: str, **kwargs: Any) -> "TimeEstimate":
    """Step time, days, GPU-hours and cost of training MODEL on GPU (tokens=300e9 or steps=N): the op walk, or
    an end-to-end achieved_tflops / mfu / measured record; kernel_scale, system, execution, overlap as the CLI."""
    from memplan.perf.time import estimate_time

    kwargs = _check_types(kwargs)
    opts = {k: kwargs.pop(k) for k in TIME_KEYS if k in kwargs}
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


def plan(model: str, gpu: str, **kwargs: Any) -> "PlanResult":
    """Search the layouts that fit and rank them by the op walk (global_batch=... required).  `pin={"tp": 8}`
    fixes dimensions; other layout keywords describe the base setup; `reference=True` ranks the layout those
    keywords describe (e.g. a paper's) among the candidates and explains its rank."""
    from memplan.perf.plan import plan as _plan
    from memplan.perf.time import layout_for_batch
    from memplan.spec.units import parse_bytes

    kwargs = _check_types(kwargs, whole={"max_micro_batch"})
    opts = {k: kwargs.pop(k) for k in PLAN_KEYS if k in kwargs}
    if "global_batch" not in opts:
        raise MemplanError("plan needs global_batch=B (sequences per optimizer step)")
    gpu_spec = _need_gpu(gpu)
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
        cpu = parse_bytes(cpu)
    if "cpu_bandwidth" in opts:
        opts["cpu_bandwidth_gbps"] = opts.pop("cpu_bandwidth")
    if opts.pop("reference", False):
        opts["reference"] = layout_for_batch(setup.layout, opts["global_batch"])
    return _plan(setup, gpu_spec, gpus=gpus, cpu_memory_bytes=cpu, fixed=opts.pop("pin", None), **opts)


PROFILE_KEYS = ("device", "model_source", "factory", "optimizer_impl", "warmup_steps", "timed_steps")


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


def _need_gpu(gpu: str | None):
    spec = resolve_gpu(gpu)
    if spec is None:
        raise MemplanError("this needs gpu=NAME (see `memplan gpus`)")
    return spec


def __getattr__(name: str):
    raise AttributeError(f"module 'memplan' has no attribute {name!r}")
