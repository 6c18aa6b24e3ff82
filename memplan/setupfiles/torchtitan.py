"""torchtitan's job TOML (`--job.config_file`): read it, or write one.

Field names and defaults are torchtitan's JobConfig as of pytorch/torchtitan@238fa9953e4aec2a62582121564273d7cbb1e9f1
(torchtitan/config/job_config.py, the last commit before the TOML files became Python configs in #2386,
Feb 2026; torchtitan 0.2.x reads these files; on newer main the same keys are `--section.key` overrides):
- [training] local_batch_size 8 (older files: batch_size), global_batch_size -1 (= local * data-parallel
  degree; more is gradient accumulation, train.py), seq_len 2048, dtype float32, mixed_precision_param
  bfloat16 (FSDP's MixedPrecisionPolicy, or torch.autocast under DDP/one GPU), enable_cpu_offload.
- [parallelism] data_parallel_replicate_degree 1, data_parallel_shard_degree -1 (the GPUs left over),
  tensor/pipeline/context/expert degrees 1, fsdp_reshard_after_forward "default" (reshard, except with PP:
  models/llama3/infra/parallelize.py apply_fsdp), pipeline_parallel_schedule "1F1B",
  pipeline_parallel_microbatch_size 1 (local_batch_size / it = microbatches, distributed/pipeline_parallel.py).
  TP shards the norms' activations along the sequence (SequenceParallel in apply_tp).
- [activation_checkpoint] mode "selective" with selective_ac_option "2" (every 2nd layer) by default: memplan
  --recompute full --recompute-every 2; "op" is op-level SAC, --recompute selective-op (engines/torchtitan.py).
- [optimizer] name AdamW, implementation fused.
"""
from __future__ import annotations

import re

from typing import Any

from memplan.errors import MemplanError
from memplan.setupfiles._collect import Collector
from memplan.setupfiles.results import EmittedSetup, EngineLayout

# Reading: model.name/flavor find a profile as `<name>-<flavor>` through its aliases (llama3-8B -> llama-3-8b).
# Writing needs torchtitan's own names (models/llama3/__init__.py; its flavors are Llama 3.1's shapes).
FLAVORS = {"llama-3-8b": ("llama3", "8B"), "llama-3.1-8b": ("llama3", "8B"), "llama-3-70b": ("llama3", "70B"),
           "llama-3.1-405b": ("llama3", "405B")}
MULTI_STAGE = {"interleaved1f1b", "loopedbfs", "interleavedzerobubble", "zbvzerobubble", "dualpipev",
               "pipelineschedulemulti"}  # torch.distributed.pipelining.schedules PipelineScheduleMulti subclasses
SINGLE_STAGE = {"1f1b", "gpipe", "pipelineschedulesingle"}
DTYPES = {"bfloat16": "bf16", "float32": "fp32", "bf16": "bf16", "fp32": "fp32"}

REASONS = {
    "job": "run bookkeeping", "profiling": "profiling", "metrics": "logging", "checkpoint": "checkpointing",
    "lr_scheduler": "the learning-rate schedule does not change memory or time",
    "optimizer.lr": "a hyper-parameter", "optimizer.eps": "a hyper-parameter",
    "optimizer.weight_decay": "a hyper-parameter", "optimizer.early_step_in_backward": "not modelled",
    "training.dataset": "the data", "training.dataset_path": "the data", "training.steps": "run length",
    "training.max_norm": "clipping reuses the gradients in place", "training.dataloader": "the data loader",
    "training.gc_freq": "garbage collection", "training.mixed_precision_reduce": "reduction dtype",
    "compile": "torch.compile: memplan models eager kernels", "validation": "evaluation, not the training step",
    "comm": "timeouts and tracing", "fault_tolerance": "not modelled", "experimental": "not modelled",
    "debug": "not modelled", "memory_estimation": "torchtitan's own estimator",
    "model.hf_assets_path": "tokenizer files", "model.tokenizer_path": "tokenizer files",
    "quantize": "fp8/mx quantized training is not modelled",
    "parallelism.context_parallel_rotate_method": "how CP communicates, not what it holds",
    "parallelism.context_parallel_load_balancer": "how CP communicates, not what it holds",
    "parallelism.disable_loss_parallel": "not modelled", "parallelism.enable_async_tensor_parallel": "not modelled",
    "activation_checkpoint.preserve_rng_state": "not modelled", "activation_checkpoint.early_stop": "not modelled",
}


def read(c: Collector) -> None:
    c.set("engine", "fsdp", "(format)", note="torchtitan: FSDP2 (fully_shard) with TP/PP/CP/EP from torch")
    degrees = {name: c.integer(f"parallelism.{key}", minimum=minimum) for name, key, minimum in (
        ("replicate", "data_parallel_replicate_degree", 1), ("shard", "data_parallel_shard_degree", -1),
        ("tp", "tensor_parallel_degree", 1), ("pp", "pipeline_parallel_degree", 1),
        ("cp", "context_parallel_degree", 1), ("ep", "expert_parallel_degree", 1))}
    replicate, shard = degrees["replicate"] or 1, degrees["shard"] if degrees["shard"] is not None else -1
    if shard == 0 or shard < -1:
        raise c.error("parallelism.data_parallel_shard_degree", f"-1 (the GPUs left over) or at least 1, got {shard}")
    tp, pp, cp = degrees["tp"] or 1, degrees["pp"] or 1, degrees["cp"] or 1
    for name, field in (("tp", "tp"), ("pp", "pp"), ("cp", "cp"), ("ep", "ep")):
        key = {"tp": "tensor", "pp": "pipeline", "cp": "context", "ep": "expert"}[name]
        c.set(field, degrees[name] or 1, f"parallelism.{key}_parallel_degree", default=degrees[name] is None,
              note="" if degrees[name] is not None else "JobConfig default 1")
    if tp > 1:
        c.set("sequence_parallel", True, "parallelism.tensor_parallel_degree",
              note="torchtitan's TP plan shards the norms' activations along the sequence (SequenceParallel)")
    _data_parallel(c, replicate, shard, tp, pp, cp)
    dp = replicate * shard if shard > 0 else None
    _batch(c, dp, pp)
    _pipeline(c, pp)
    _precision(c, fsdp=shard != 1 or cp > 1, other=tp > 1 or pp > 1)
    _recompute(c)
    _optimizer(c)
    _model(c)
    c.finish(REASONS)


def _data_parallel(c: Collector, replicate: int, shard: int, tp: int, pp: int, cp: int) -> None:
    key = "parallelism.data_parallel_shard_degree"
    c.consult_all("gpus", key, "parallelism.data_parallel_replicate_degree", note="the data-parallel degree")
    if shard > 0:
        c.set("gpus", replicate * shard * cp * tp * pp, key,
              note=f"replicate {replicate} x shard {shard} x cp {cp} x tp {tp} x pp {pp}")
    else:
        c.warn(f"{c.path}: {key} is -1 (the GPUs left over at launch): pass --gpus (NGPU x nodes)")
    if shard == 1 and cp == 1:
        c.set("zero", 0, key, note="no FSDP: " + ("DDP" if replicate > 1 else "one data-parallel rank"))
        return
    if replicate > 1:
        c.warn(f"{c.path}: replicate {replicate} x shard {shard} is HSDP: states are sharded over {shard} GPUs, "
               f"memplan shards them over all {replicate * shard} data-parallel GPUs")
    policy = c.text("parallelism.fsdp_reshard_after_forward", choices={"default": "default", "always": "always",
                                                                        "never": "never"})
    reshard = policy == "always" or (policy in (None, "default") and pp == 1)
    c.set("zero", 3 if reshard else 2, "parallelism.fsdp_reshard_after_forward", default=policy is None,
          note=f"{policy or 'default'}: reshard_after_forward={reshard} (ZeRO-{3 if reshard else 2})"
               + (" ('default' keeps parameters gathered under PP)" if policy in (None, "default") and pp > 1 else ""))
    if c.boolean("training.enable_cpu_offload"):
        note = "FSDP2 CPUOffloadPolicy: parameters, gradients and optimizer states on CPU"
        c.set("offload_params", "cpu", "training.enable_cpu_offload", note=note)
        c.set("offload_optimizer", "cpu", "training.enable_cpu_offload", note=note)
    c.consult("training.enable_cpu_offload", "offload_params", "false: no offload")


def _batch(c: Collector, dp: int | None, pp: int) -> None:
    key = "training.local_batch_size" if c.has("training.local_batch_size") else "training.batch_size"
    local = c.integer(key)
    seq = c.integer("training.seq_len")
    c.set("seq", seq or 2048, "training.seq_len", default=seq is None, note="" if seq else "JobConfig default")
    if local is None:
        local, key_note = 8, "JobConfig default"
        c.use("training.local_batch_size")
    else:
        key_note = ""
    glob = c.integer("training.global_batch_size", minimum=None)
    accum = 1
    if glob is not None and glob > 0:
        c.set("global_batch", glob, "training.global_batch_size")
        if dp is not None:
            if glob % (local * dp):
                raise c.error("training.global_batch_size", f"{glob} is not a multiple of local_batch_size * "
                                                            f"data-parallel degree = {local} * {dp}")
            accum = glob // (local * dp)
        else:
            c.warn(f"{c.path}: global_batch_size {glob} with an unknown data-parallel degree: gradient "
                   "accumulation follows from --gpus")
    else:
        c.consult("training.global_batch_size", "grad_accum", "<= 0: local batch x data-parallel degree")
    if pp > 1:
        micro = c.integer("parallelism.pipeline_parallel_microbatch_size") or 1
        if local % micro:
            raise c.error("parallelism.pipeline_parallel_microbatch_size",
                          f"local_batch_size {local} is not a multiple of it ({micro})")
        c.set("micro_batch", micro, "parallelism.pipeline_parallel_microbatch_size",
              default=not c.has("parallelism.pipeline_parallel_microbatch_size"),
              note="the pipeline's microbatch (JobConfig default 1)" if not
              c.has("parallelism.pipeline_parallel_microbatch_size") else "the pipeline's microbatch")
        c.set("grad_accum", local // micro * accum, key, default=bool(key_note),
              note=f"{local // micro} microbatches per step (local_batch_size / microbatch size)"
                   + (f" x {accum} accumulation steps" if accum > 1 else ""))
        c.use(key)
    else:
        c.consult("parallelism.pipeline_parallel_microbatch_size", "micro_batch", "applies with PP only")
        c.set("micro_batch", local, key, default=bool(key_note), note=key_note)
        c.set("grad_accum", accum, "training.global_batch_size", default=glob is None or glob <= 0,
              note="global_batch_size / (local_batch_size * data-parallel degree)" if accum > 1 else
              "no gradient accumulation (global = local x data-parallel degree)")


def _pipeline(c: Collector, pp: int) -> None:
    key = "parallelism.pipeline_parallel_schedule"
    raw = c.text(key)
    c.consult_all("virtual_stages", key, "parallelism.pipeline_parallel_layers_per_stage")
    if pp == 1:
        return
    schedule = (raw or "1F1B").lower()
    if schedule not in MULTI_STAGE | SINGLE_STAGE:
        raise c.error(key, f"{raw!r} is not a torch.distributed.pipelining schedule (1F1B, GPipe, Interleaved1F1B, "
                           "LoopedBFS, InterleavedZeroBubble, ZBVZeroBubble, DualPipeV)")
    if schedule == "gpipe":
        c.warn(f"{c.path}: GPipe keeps every microbatch's activations until the backward; memplan counts 1F1B's")
    if schedule in MULTI_STAGE:
        if c.has("parallelism.pipeline_parallel_layers_per_stage"):
            c.warn(f"{c.path}: pipeline_parallel_layers_per_stage sets the stages per rank from the model's layer "
                   "count; memplan assumes torchtitan's default of 2 (pass --virtual-stages)")
        c.set("virtual_stages", 2, key, note=f"{raw}: a multi-stage schedule, 2 stages per rank by default")
    else:
        c.set("virtual_stages", 1, key, default=raw is None, note=f"{raw or '1F1B'}: one stage per rank")


def _precision(c: Collector, fsdp: bool, other: bool) -> None:
    dtype = c.text("training.dtype", choices=DTYPES)
    param = c.text("training.mixed_precision_param", choices=DTYPES)
    c.consult_all("precision", "training.dtype", "training.mixed_precision_param")
    if dtype == "bf16":
        c.set("precision", "bf16", "training.dtype", note="parameters, gradients and optimizer states in bf16")
    elif (param or "bf16") == "fp32":
        c.set("precision", "fp32", "training.mixed_precision_param")
    elif fsdp:
        c.set("precision", "fsdp-bf16", "training.mixed_precision_param", default=param is None,
              note="FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): fp32 sharded parameters, bf16 "
                   "all-gathered ones and bf16 activations, no autocast (parallelize.py apply_fsdp)"
                   + ("" if param else " (JobConfig defaults)"))
    elif not other:
        c.set("precision", "amp-bf16", "training.mixed_precision_param", default=param is None,
              note="fp32 parameters (training.dtype), bf16 compute: torch.autocast under DDP or one GPU "
                   "(maybe_enable_amp)" + ("" if param else " (JobConfig defaults)"))
    else:
        c.set("precision", "fp32", "training.mixed_precision_param",
              note="mixed precision applies through FSDP or autocast under DDP/one GPU only; TP/PP without FSDP "
                   "trains in training.dtype")
    converters = c.get("model.converters", []) or []
    if isinstance(converters, str):
        converters = [converters]
    if not isinstance(converters, list):
        raise c.error("model.converters", f"expected a list of names, got {c.show(converters)}")
    if "float8" in converters or "mx" in converters:
        c.warn(f"{c.path}: model.converters {c.show(converters)}: quantized training is not modelled")


def _recompute(c: Collector) -> None:
    mode = c.text("activation_checkpoint.mode", choices={"none": "none", "selective": "selective", "full": "full",
                                                         "memory_budget": "memory_budget"})
    option = c.get("activation_checkpoint.selective_ac_option", None)
    c.consult("activation_checkpoint.selective_ac_option", "recompute")
    key = "activation_checkpoint.mode"
    if mode in ("none", "full"):
        c.set("recompute", mode, key)
        return
    if mode == "memory_budget":
        c.ignore(key, "memory_budget: the compiler picks what to save; pass --recompute")
        return
    option = "2" if option is None else str(option).strip().lower()
    default_note = " (JobConfig defaults: mode selective, option 2)" if mode is None else ""
    if option == "op":
        c.set("recompute", "selective-op", key, default=mode is None,
              note="op-level SAC: attention and every other mm saved, the rest recomputed (engines/torchtitan.py)")
    elif re.fullmatch(r"[0-9]{1,9}", option) and int(option) == 1:  # ASCII digits: '²'.isdigit() is true too
        c.set("recompute", "full", key, default=mode is None, note="every layer checkpointed" + default_note)
    elif re.fullmatch(r"[0-9]{1,9}", option) and int(option) > 1:
        note = (f"layer-level SAC: every {option}th TransformerBlock fully checkpointed, the others not "
                f"(ptd_checkpoint_wrapper._count % {option} == 0){default_note}")
        c.set("recompute", "full", key, default=mode is None, note=note)
        c.set("recompute_every", int(option), "activation_checkpoint.selective_ac_option", default=mode is None,
              note=note)
    else:
        raise c.error("activation_checkpoint.selective_ac_option", f"'op' or a positive whole number, got "
                                                                   f"{c.show(option)}")


def _optimizer(c: Collector) -> None:
    name = c.text("optimizer.name")
    names = {"adamw": "adamw", "adam": "adam"}
    if name is None:
        c.default("optimizer", "adamw", "optimizer.name", "JobConfig default AdamW")
    elif name.lower() in names:
        c.set("optimizer", names[name.lower()], "optimizer.name")
    else:
        c.ignore("optimizer.name", f"no memplan optimizer for {name!r}; pass --optimizer")
    impl = c.text("optimizer.implementation", choices={"for-loop": "for-loop", "foreach": "foreach",
                                                       "fused": "fused"})
    c.set("optimizer_impl", impl or "fused", "optimizer.implementation", default=impl is None,
          note="" if impl else "JobConfig default")


def _model(c: Collector) -> None:
    import memplan.catalog as catalog

    name, flavor = c.text("model.name"), c.get("model.flavor", None)
    c.consult_all("model", "model.name", "model.flavor")
    c.consult("model.converters", "precision", "quantized training is not modelled")
    c.ignore("model.print_after_conversion", "logging")
    if name is None or flavor is None:
        return
    flavor = str(flavor)
    if flavor.lower().startswith("debug"):
        c.warn(f"{c.path}: model {name}/{flavor} is torchtitan's debug model; give MODEL yourself")
        return
    candidate = f"{name.replace('_', '-')}-{flavor}"
    try:
        profile = catalog.get_model_profile(candidate)
    except MemplanError:
        c.warn(f"{c.path}: model {name}/{flavor}: no built-in profile ({candidate!r}); give MODEL "
               "(a config.json or a profile name)")
        return
    c.set("model", profile.name, "model.flavor", note=f"torchtitan {name}/{flavor}")


# ---- emitting ---------------------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def emit(layout: EngineLayout) -> EmittedSetup:
    warnings: list[str] = []
    sections: dict[str, dict[str, Any]] = {"job": {"description": f"memplan plan for {layout.model or 'a model'}"}}
    if layout.model in FLAVORS:
        sections["model"] = {"name": FLAVORS[layout.model][0], "flavor": FLAVORS[layout.model][1]}
    elif layout.model:
        warnings.append(f"model {layout.model}: no torchtitan flavor known to memplan; set [model] name/flavor")
    optimizer = {"adamw": "AdamW", "adam": "Adam"}.get(layout.optimizer)
    if optimizer is None:
        warnings.append(f"optimizer {layout.optimizer}: torchtitan builds AdamW/Adam from [optimizer]")
    sections["optimizer"] = {"name": optimizer or "AdamW", "implementation": "fused"}
    dp = layout.dp or 1
    training: dict[str, Any] = {}
    parallelism: dict[str, Any] = {}
    if layout.pp > 1:
        training["local_batch_size"] = layout.micro_batch * layout.grad_accum
        parallelism["pipeline_parallel_microbatch_size"] = layout.micro_batch
        training["global_batch_size"] = layout.micro_batch * layout.grad_accum * dp
    else:
        training["local_batch_size"] = layout.micro_batch
        training["global_batch_size"] = layout.global_batch
    if layout.seq:
        training["seq_len"] = layout.seq
    training.update(_emit_precision(layout.precision, warnings))
    if layout.zero == 1:
        warnings.append("ZeRO-1: FSDP2 has no optimizer-only sharding; written as FSDP with reshard (ZeRO-3)")
    sharded = layout.zero >= 1 and dp > 1
    parallelism.update({"data_parallel_replicate_degree": 1 if sharded else dp,
                        "data_parallel_shard_degree": dp if sharded else 1,
                        "tensor_parallel_degree": layout.tp, "pipeline_parallel_degree": layout.pp,
                        "context_parallel_degree": layout.cp, "expert_parallel_degree": layout.ep})
    if sharded:
        parallelism["fsdp_reshard_after_forward"] = "never" if layout.zero == 2 else "always"
    if layout.pp > 1:
        parallelism["pipeline_parallel_schedule"] = "Interleaved1F1B" if layout.virtual_stages > 1 else "1F1B"
        if layout.virtual_stages > 2:
            warnings.append(f"virtual_stages {layout.virtual_stages}: set parallelism.pipeline_parallel_layers_per_stage"
                            " so that each rank holds that many stages (torchtitan's default is 2)")
    if layout.offload_params == "cpu" and layout.offload_optimizer == "cpu" and sharded:
        training["enable_cpu_offload"] = True
    elif layout.offload_params != "none" or layout.offload_optimizer != "none":
        warnings.append("offload: torchtitan offloads parameters, gradients and optimizer states together "
                        "(training.enable_cpu_offload, with FSDP) and never to NVMe")
    if layout.tp > 1 and not layout.sequence_parallel:
        warnings.append("torchtitan's TP always shards the norms' activations along the sequence (sequence parallel)")
    sections["training"] = training
    sections["parallelism"] = parallelism
    every = {"mode": "selective", "selective_ac_option": str(layout.recompute_every)}
    ac = {"none": {"mode": "none"}, "full": every if layout.recompute_every > 1 else {"mode": "full"},
          "selective": {"mode": "selective", "selective_ac_option": "op"},
          "selective-op": {"mode": "selective", "selective_ac_option": "op"}}[layout.recompute]
    if layout.recompute == "selective":
        warnings.append("recompute selective (Megatron's: attention core only) has no torchtitan spelling; written "
                        "as op-level SAC (memplan --recompute selective-op), which saves less")
    sections["activation_checkpoint"] = ac
    lines = ["# torchtitan job config (JobConfig as of torchtitan 0.2.x: --job.config_file FILE).",
             "# Newer torchtitan main takes Python configs (--module/--config); these keys work there as",
             "# --section.key overrides, e.g. --parallelism.tensor_parallel_degree "
             f"{layout.tp}.  Launch with NGPU={min(layout.gpus, layout.gpus_per_node)} per node"
             f" on {-(-layout.gpus // layout.gpus_per_node)} node(s)."]
    for name, values in sections.items():
        lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    return EmittedSetup(format="torchtitan", text="\n".join(lines) + "\n", filename="torchtitan.toml",
                        warnings=warnings)


def _emit_precision(precision: str, warnings: list[str]) -> dict[str, Any]:
    base = precision.split("[", 1)[0]
    if base == "bf16":
        return {"dtype": "bfloat16", "mixed_precision_param": "bfloat16"}
    if base == "fp32":
        return {"dtype": "float32", "mixed_precision_param": "float32"}
    if base not in ("amp-bf16", "fsdp-bf16"):
        warnings.append(f"precision {precision}: torchtitan keeps fp32 parameters with bf16 compute (memplan "
                        "amp-bf16; the same 16 B/param of states as bf16-mixed); fp16 and fp8 are not torchtitan's")
    return {"dtype": "float32", "mixed_precision_param": "bfloat16"}
