"""DeepSpeed's ds_config.json: read it into setup keywords, or write one for a layout.

Keys and defaults are DeepSpeed's (deepspeed 0.19.8): runtime/config.py (batch sizes: train_batch_size =
train_micro_batch_size_per_gpu * gradient_accumulation_steps * data-parallel size, `_batch_assertion`),
runtime/zero/config.py `DeepSpeedZeroConfig` (stage 0 by default, reduce_bucket_size 5e8),
runtime/zero/offload_config.py (offload device none|cpu|nvme, pin_memory), runtime/precision_config.py
(bf16/fp16 `enabled`, off by default: fp32 training), runtime/tensor_parallel/config.py (`autotp_size`).
"auto" is the HF Trainer's and accelerate's placeholder: they fill it from their own arguments
(transformers integrations/deepspeed.py `HfTrainerDeepSpeedConfig.trainer_config_process`); a caller that
knows those arguments passes them as `auto`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from memplan.setupfiles._collect import AUTO, Collector
from memplan.setupfiles.results import EmittedSetup, EngineLayout

OFFLOAD = {"none": "none", "cpu": "cpu", "nvme": "nvme"}
# DeepSpeed runtime/config.py DEEPSPEED_OPTIMIZERS -> memplan optimizer.  LAMB keeps Adam's two moments (You et
# al. 2020, Algorithm 2), so the same state bytes; the 1-bit/0-1 variants keep extra error-feedback buffers.
OPTIMIZERS = {"adam": "adam", "adamw": "adamw", "lion": "lion", "lamb": "adamw"}
DEFAULT_REDUCE_BUCKET = 500_000_000  # DeepSpeedZeroConfig.reduce_bucket_size, what memplan's overheads count
NVME_PATH = "/local_nvme"  # the DeepSpeed docs' example mount point
AUTO_REASON = "'auto': the HF Trainer or accelerate fills it in from its own arguments; give those, or the value"

REASONS = {
    "optimizer.params": "optimizer hyper-parameters do not change memory or time",
    "scheduler": "the learning-rate schedule does not change memory or time",
    "activation_checkpointing": "configures deepspeed.checkpointing, which only the model code switches on; "
                                "recompute is what the model does (--recompute)",
    "fp16": "loss-scaling settings do not change memory",
    "bf16": "bf16 sub-settings beyond enabled/master/states are not modelled",
    "gradient_clipping": "clipping reuses the gradients in place",
    "zero_optimization": "bucket, prefetch and persistence sizes: memplan counts the default reduce bucket (5e8) "
                         "and two layers of gathered ZeRO-3 parameters in flight (memory/states.py)",
    "zero_optimization.offload_optimizer": "NVMe staging buffers and partial offload are not modelled",
    "zero_optimization.offload_param": "NVMe staging buffers are not modelled",
    "steps_per_print": "logging", "wall_clock_breakdown": "logging", "tensorboard": "logging",
    "wandb": "logging", "csv_monitor": "logging", "comms_logger": "logging", "flops_profiler": "profiling",
}


def read(c: Collector, auto: dict[str, Any] | None = None, auto_source: str = "") -> None:
    """Fill `c` from a ds_config.  `auto`: the values the trainer substitutes for "auto" (by key)."""
    auto = auto or {}
    c.set("engine", "deepspeed", "(format)", note="a DeepSpeed config: DeepSpeed's accounting of ZeRO states")

    def value(key: str, getter, **kw):
        v = getter(key, auto=True, **kw)
        if v != AUTO:
            return v
        if key in auto:
            c.use(key)
            return auto[key]
        c.ignore(key, AUTO_REASON)
        return None

    def note(key: str, text: str) -> str:
        return f"'auto' -> {auto_source}" if c.get(key, None) == AUTO else text

    _zero(c, value, note)
    _batch(c, value, note)
    _precision(c, value, note)
    _optimizer(c)
    tp = c.integer("tensor_parallel.autotp_size", minimum=0)
    if tp:
        c.set("tp", tp, "tensor_parallel.autotp_size", note="DeepSpeed AutoTP (runtime/tensor_parallel/config.py)")
    sp = c.integer("sequence_parallel_size")
    if sp and sp > 1:
        c.set("cp", sp, "sequence_parallel_size",
              note="DeepSpeed-Ulysses: the sequence sharded over this many GPUs, as context parallelism shards it")
    c.finish(REASONS)


def _zero(c: Collector, value, note) -> None:
    stage = value("zero_optimization.stage", c.integer, minimum=0)
    if stage is None:
        c.default("zero", 0, "zero_optimization.stage", "DeepSpeedZeroConfig.stage defaults to 0 (no ZeRO)")
    elif stage > 3:
        raise c.error("zero_optimization.stage", f"ZeRO stages are 0-3, got {stage}")
    else:
        c.set("zero", stage, "zero_optimization.stage", note=note("zero_optimization.stage", ""))
    for what, field in (("optimizer", "offload_optimizer"), ("param", "offload_params")):
        key = f"zero_optimization.offload_{what}"
        device = value(f"{key}.device", c.text, choices=OFFLOAD)
        if device is not None:
            c.set(field, device, f"{key}.device", note=note(f"{key}.device", ""))
        pin = value(f"{key}.pin_memory", c.boolean)
        if pin is not None and device not in (None, "none"):
            c.set("pin_memory", pin, f"{key}.pin_memory")
        else:
            c.consult(f"{key}.pin_memory", "pin_memory", "nothing offloaded: nothing pinned")
    ratio = c.get("zero_optimization.offload_optimizer.ratio", None)
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio < 1:
        c.warn(f"{c.path}: zero_optimization.offload_optimizer.ratio {ratio}: only part of the optimizer is "
               "offloaded; memplan offloads all of it (GPU memory is underestimated)")
    # ZeRO-Offload's first spelling (DeepSpeed < 0.3.15), still accepted by DeepSpeedZeroConfig
    if c.boolean("zero_optimization.cpu_offload"):
        c.set("offload_optimizer", "cpu", "zero_optimization.cpu_offload", note="deprecated spelling of "
              "offload_optimizer.device = cpu")
    if c.boolean("zero_optimization.cpu_offload_param"):
        c.set("offload_params", "cpu", "zero_optimization.cpu_offload_param", note="deprecated spelling of "
              "offload_param.device = cpu")
    bucket = c.get("zero_optimization.reduce_bucket_size", None)
    if isinstance(bucket, (int, float)) and not isinstance(bucket, bool) and math.isfinite(bucket) \
            and int(bucket) != DEFAULT_REDUCE_BUCKET and stage in (1, 2, 3):
        c.warn(f"{c.path}: zero_optimization.reduce_bucket_size {bucket:g} differs from DeepSpeed's default "
               f"{DEFAULT_REDUCE_BUCKET:g}, which memplan counts for the reduce bucket")


def _batch(c: Collector, value, note) -> None:
    micro = value("train_micro_batch_size_per_gpu", c.integer)
    accum = value("gradient_accumulation_steps", c.integer)
    total = value("train_batch_size", c.integer)
    if micro is not None:
        c.set("micro_batch", micro, "train_micro_batch_size_per_gpu",
              note=note("train_micro_batch_size_per_gpu", ""))
    if accum is not None:
        c.set("grad_accum", accum, "gradient_accumulation_steps", note=note("gradient_accumulation_steps", ""))
    elif c.get("gradient_accumulation_steps", None) is None and not (total and micro):
        # runtime/config.py _set_batch_related_parameters: a gas that is not given is 1 (unless the other two are)
        c.default("grad_accum", 1, "gradient_accumulation_steps", "DeepSpeed sets 1 when it is not given")
    if total is None:
        return
    c.set("global_batch", total, "train_batch_size", note=note("train_batch_size", ""))
    if micro is not None and accum is not None:
        if total % (micro * accum):
            raise c.error("train_batch_size", f"{total} is not train_micro_batch_size_per_gpu * "
                                              f"gradient_accumulation_steps ({micro} * {accum}) times a GPU count; "
                                              "DeepSpeed would refuse it (_batch_assertion)")
        dp = total // (micro * accum)
        tp = c.integer("tensor_parallel.autotp_size", minimum=0) or 1
        sp = c.integer("sequence_parallel_size") or 1
        others = "".join(f", times {k} {v}" for k, v in (("autotp_size", tp), ("sequence_parallel_size", sp)) if v > 1)
        c.set("gpus", dp * tp * sp, "train_batch_size",
              note=f"data-parallel size {total} / ({micro} * {accum}) = {dp}{others}")


def _precision(c: Collector, value, note) -> None:
    bf16 = value("bf16.enabled", c.boolean)
    if bf16 is None:
        bf16 = value("bfloat16.enabled", c.boolean)  # the old spelling (precision_config.BFLOAT16_OLD)
    fp16 = value("fp16.enabled", c.boolean)
    autocast = c.boolean("torch_autocast.enabled")
    if bf16 and fp16:
        raise c.error("bf16.enabled", "bf16 and fp16 are both enabled; DeepSpeed accepts one")
    if bf16:
        pure = c.boolean("bf16.bf16_master_weights_and_grads") and c.boolean("bf16.bf16_optimizer_states")
        c.consult_all("precision", "bf16.bf16_master_weights_and_grads", "bf16.bf16_optimizer_states")
        if pure:
            c.set("precision", "bf16", "bf16.enabled", note="bf16_master_weights_and_grads and bf16_optimizer_states: "
                  "no fp32 copy anywhere")
        else:
            c.set("precision", "bf16-mixed", "bf16.enabled",
                  note=note("bf16.enabled", "bf16 weights and gradients, fp32 master weights and optimizer states "
                                            "in DeepSpeed's optimizer"))
    elif fp16:
        c.set("precision", "fp16-mixed", "fp16.enabled", note=note("fp16.enabled", "fp16 weights and gradients, "
                                                                   "fp32 master weights and states, loss scaling"))
    elif autocast:
        dtype = str(c.get("torch_autocast.dtype", "bfloat16")).lower()
        c.consult("torch_autocast.dtype", "precision")
        c.set("precision", "amp-fp16" if "16" in dtype and "b" not in dtype else "amp-bf16", "torch_autocast.enabled",
              note=f"torch.autocast({dtype}) over fp32 weights")
    elif bf16 is not None or fp16 is not None or not (c.has("bf16") or c.has("fp16")):
        c.default("precision", "fp32", "bf16.enabled",
                  "bf16 and fp16 are off by default (DeepSpeedBF16Config/DeepSpeedFP16Config enabled=False): fp32")


def _optimizer(c: Collector) -> None:
    kind = c.get("optimizer.type", None)
    if kind is None:
        return
    if not isinstance(kind, str):
        raise c.error("optimizer.type", f"expected a name such as AdamW, got {kind!r}")
    name = OPTIMIZERS.get(kind.lower())
    if name is None:
        c.ignore("optimizer.type", f"no memplan optimizer for DeepSpeed's {kind!r}; pass --optimizer")
        c.warn(f"{c.path}: optimizer.type {kind!r} has no memplan counterpart; the optimizer's states follow "
               "--optimizer (default adamw)")
        return
    c.set("optimizer", name, "optimizer.type",
          note="LAMB keeps Adam's two moments: the same state bytes as adamw" if kind.lower() == "lamb" else "")
    offloaded = c.get("zero_optimization.offload_optimizer.device", "none") not in ("none", None)
    if name in ("adam", "adamw") and not offloaded:
        torch_adam = c.boolean("optimizer.params.torch_adam")
        c.consult("optimizer.params.torch_adam", "optimizer_impl")
        impl = "foreach" if torch_adam else "fused"
        c.set("optimizer_impl", impl, "optimizer.params.torch_adam", default=torch_adam is None,
              note="torch.optim.AdamW (foreach on CUDA)" if torch_adam else
              "DeepSpeed's FusedAdam (ops/adam/fused_adam.py, multi-tensor apply; torch_adam defaults to false)")


def read_referenced(c: Collector, key: str, auto: dict[str, Any] | None = None, auto_source: str = "") -> None:
    """The DeepSpeed config another engine's file names at `key`: an inline section, or a path (relative to that
    file's folder, else to the current folder, where the engine resolves it when launched from there)."""
    import memplan.setupfiles._source as _source

    raw = c.get(key, None)
    c.use(key)
    if isinstance(raw, dict):
        sub = Collector(c.path, raw)
        read(sub, auto=auto, auto_source=auto_source)
        c.merge(sub, key_prefix=key + ".")
        return
    if not isinstance(raw, str) or not raw.strip():
        raise c.error(key, f"expected the path of a DeepSpeed JSON config (or its settings), got {raw!r}")
    name = Path(raw).expanduser()
    beside = Path(c.path).parent / name
    # os.path.exists: False (not an OSError) for a name the OS refuses (over 255 bytes)
    path = name if name.is_absolute() else beside if os.path.exists(beside) else name
    if not os.path.exists(path):
        raise c.error(key, f"{raw} is neither next to {c.path} nor in the current folder")
    data, _ = _source.load(path)
    sub = Collector(str(path), data)
    read(sub, auto=auto, auto_source=auto_source)
    c.merge(sub)


# ---- emitting ---------------------------------------------------------------------------------------------------
def emit(layout: EngineLayout) -> EmittedSetup:
    warnings: list[str] = []
    zero: dict[str, Any] = {"stage": layout.zero}
    for field, key in (("offload_optimizer", "offload_optimizer"), ("offload_params", "offload_param")):
        device = getattr(layout, field)
        if device != "none":
            zero[key] = {"device": device, "pin_memory": True}
            if device == "nvme":
                zero[key]["nvme_path"] = NVME_PATH
    if "nvme" in (layout.offload_optimizer, layout.offload_params):
        warnings.append(f"nvme_path is {NVME_PATH}: point it at each node's local NVMe mount")
    config: dict[str, Any] = {
        "train_batch_size": layout.global_batch,
        "train_micro_batch_size_per_gpu": layout.micro_batch,
        "gradient_accumulation_steps": layout.grad_accum,
        "zero_optimization": zero,
    }
    config.update(_emit_precision(layout.precision, warnings))
    optimizer = {"adamw": "AdamW", "adam": "Adam", "lion": "Lion"}.get(layout.optimizer)
    if optimizer:
        config["optimizer"] = {"type": optimizer}
    else:
        warnings.append(f"DeepSpeed has no built-in {layout.optimizer!r}: the script passes its own optimizer")
    if layout.tp > 1:
        config["tensor_parallel"] = {"autotp_size": layout.tp}
    if layout.cp > 1:
        config["sequence_parallel_size"] = layout.cp
        warnings.append("cp is written as DeepSpeed-Ulysses sequence_parallel_size (all-to-all over heads)")
    if layout.pp > 1:
        warnings.append(f"pipeline parallelism is set in code (deepspeed.pipe.PipelineModule(num_stages={layout.pp})), "
                        "not in ds_config; train_batch_size counts the data-parallel ranks only")
    if layout.recompute != "none":
        warnings.append(f"recompute {layout.recompute}: the model's own checkpointing (e.g. "
                        "model.gradient_checkpointing_enable()); ds_config cannot switch it on")
    if layout.ep > 1:
        warnings.append(f"ep {layout.ep}: DeepSpeed-MoE sets expert parallelism in code (deepspeed.moe.layer.MoE(ep_size=...))")
    return EmittedSetup(format="deepspeed", text=json.dumps(config, indent=2) + "\n", filename="ds_config.json",
                        warnings=warnings)


def _emit_precision(precision: str, warnings: list[str]) -> dict[str, Any]:
    base = precision.split("[", 1)[0]
    if base in ("bf16-mixed", "fp8-mixed"):
        if base == "fp8-mixed":
            warnings.append("fp8 is Transformer Engine's (in the model code); ds_config gets bf16")
        return {"bf16": {"enabled": True}}
    if base == "bf16":
        return {"bf16": {"enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}}
    if base == "fp16-mixed":
        return {"fp16": {"enabled": True}}
    if base in ("amp-bf16", "amp-fp16"):
        return {"torch_autocast": {"enabled": True, "dtype": "bfloat16" if base == "amp-bf16" else "float16"}}
    return {}  # fp32: DeepSpeed's default
