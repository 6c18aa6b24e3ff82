"""accelerate's config YAML (`accelerate config` / `accelerate launch --config_file`): read it, or write one.

Keys are accelerate's (1.15): commands/config/config_args.py `ClusterConfig` (distributed_type, num_processes =
processes on all machines together, num_machines, mixed_precision, fsdp_config, deepspeed_config,
megatron_lm_config, parallelism_config), commands/config/cluster.py (what `accelerate config` writes in each),
utils/launch.py (how each key reaches the run).  The batch size is the script's DataLoader's and is never in
this file.

mixed_precision without DeepSpeed is torch.autocast over the weights as the script loads them; memplan assumes
fp32 weights (amp-bf16/amp-fp16), the case the AMP recipe is made for.  Under FSDP (sharded), bf16 is FSDP's
MixedPrecision(Policy)(param_dtype=bf16) over parameters accelerate upcasts to fp32, plus autocast: memplan's
fsdp-bf16 (engines/fsdp.py; accelerate 16cb6eb utils/dataclasses.py set_mixed_precision, fsdp_utils.py).  Under DeepSpeed it becomes DeepSpeed's
bf16/fp16 section (bf16-mixed/fp16-mixed: fp32 master weights in DeepSpeed's optimizer).
"""
from __future__ import annotations

from typing import Any

import memplan.setupfiles._fsdp as _fsdp
import memplan.setupfiles._source as _source
import memplan.setupfiles.deepspeed as deepspeed
from memplan.setupfiles._collect import Collector
from memplan.setupfiles.results import EmittedSetup, EngineLayout

AMP = {"bf16": "amp-bf16", "fp16": "amp-fp16", "no": "fp32", "fp8": "fp8-mixed"}
DEEPSPEED_PRECISION = {"bf16": "bf16-mixed", "fp16": "fp16-mixed", "no": "fp32", "fp8": "fp8-mixed"}
# accelerate utils/dataclasses.py DistributedType: the multi-device kinds are all DDP
DDP_KINDS = {"multi_gpu", "multi_npu", "multi_mlu", "multi_sdaa", "multi_musa", "multi_xpu", "multi_hpu",
             "multi_neuron", "multi_cpu"}
KINDS = {"no", "fsdp", "deepspeed", "megatron_lm", *DDP_KINDS}

REASONS = {k: "where and how processes start, not what a step holds" for k in (
    "compute_environment", "machine_rank", "main_process_ip", "main_process_port", "rdzv_backend", "same_network",
    "main_training_function", "gpu_ids", "enable_cpu_affinity", "debug", "tpu_env", "tpu_use_cluster",
    "tpu_use_sudo", "tpu_name", "tpu_zone", "tpu_vm", "commands", "command_file", "mpirun_config")}
REASONS.update({
    "downcast_bf16": "TPU only",
    "dynamo_config": "torch.compile: memplan models eager kernels",
    "deepspeed_config.zero3_init_flag": "model construction, before the training step",
    "deepspeed_config.zero3_save_16bit_model": "checkpoint format, not training memory",
    "deepspeed_config.gradient_clipping": "clipping reuses the gradients in place",
    "deepspeed_config.deepspeed_multinode_launcher": "how processes start",
    "deepspeed_config.offload_optimizer_nvme_path": "where NVMe offload lives, not how much",
    "deepspeed_config.offload_param_nvme_path": "where NVMe offload lives, not how much",
    "megatron_lm_config.megatron_lm_gradient_clipping": "clipping reuses the gradients in place",
    "fp8_config": "fp8 recipe details are not modelled (memory is counted as bf16-mixed)",
})


def read(c: Collector) -> None:
    kind = c.text("distributed_type")
    if kind is None:
        raise c.error("distributed_type", "missing; accelerate needs it (NO, MULTI_GPU, FSDP, DEEPSPEED, "
                                          "MEGATRON_LM)")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise c.error("distributed_type", f"{c.get('distributed_type')!r} is not a GPU layout memplan models "
                                          "(NO, MULTI_GPU, FSDP, DEEPSPEED, MEGATRON_LM)")
    c.consult("distributed_type", "engine", kind.upper())
    _processes(c, kind)
    mixed = c.text("mixed_precision", choices={k: k for k in AMP})
    if kind == "deepspeed":
        _deepspeed(c, mixed)
    elif kind == "megatron_lm":
        _megatron(c, mixed)
    else:
        if kind == "fsdp":
            _fsdp.read(c, "fsdp_config", source="accelerate")
            _parallelism(c)
        else:
            c.set("engine", "plain", "distributed_type", note="DDP" if kind in DDP_KINDS else "one process")
            c.set("zero", 0, "distributed_type", note="no sharding")
        if mixed == "bf16" and kind == "fsdp" and (c.kwargs.get("zero") or 0) >= 2:
            c.set("precision", "fsdp-bf16", "mixed_precision",
                  note="FSDP's MixedPrecision(Policy)(param_dtype=bf16, reduce_dtype=bf16) over parameters upcast to "
                       "fp32 (accelerate utils/dataclasses.py FullyShardedDataParallelPlugin.set_mixed_precision, "
                       "utils/fsdp_utils.py fsdp2_prepare_model): fp32 shards, bf16 gathered parameters and "
                       "activations (autocast over bf16 weights casts nothing)")
        elif mixed is not None:
            c.set("precision", AMP[mixed], "mixed_precision",
                  note="torch.autocast over the weights as loaded; assumed fp32 (load the model in bf16 and it is "
                       "--precision bf16)" if mixed in ("bf16", "fp16") else "")
        else:
            c.default("precision", "fp32", "mixed_precision", "accelerate's default mixed_precision is 'no'")
    if c.boolean("use_cpu"):
        c.warn(f"{c.path}: use_cpu is true: the run trains on CPU; memplan's GPU figures describe a GPU run")
    c.consult("use_cpu", "engine", "false: a GPU run")
    c.finish(REASONS)


def _processes(c: Collector, kind: str) -> None:
    procs = c.integer("num_processes", minimum=None)
    machines = c.integer("num_machines")
    if kind == "no":
        c.set("gpus", 1, "distributed_type", note="NO: one process")
        c.consult("num_processes", "gpus", "distributed_type NO runs one process")
    elif procs is not None and procs > 0:
        c.set("gpus", procs, "num_processes", note="accelerate counts processes on all machines together")
        if machines:
            if procs % machines:
                raise c.error("num_processes", f"{procs} processes do not split evenly over num_machines {machines}")
            c.set("gpus_per_node", procs // machines, "num_machines", note=f"{procs} / {machines} machines")
    elif procs is not None:
        c.ignore("num_processes", f"{procs}: set at launch (SLURM or --num_processes); pass --gpus")
    if machines is not None:
        c.consult("num_machines", "gpus_per_node")


def _deepspeed(c: Collector, mixed: str | None) -> None:
    ds = c.mapping("deepspeed_config") or {}
    file_key = "deepspeed_config.deepspeed_config_file"
    if ds.get("deepspeed_config_file"):
        # accelerate fills the file's "auto" values from these (utils/dataclasses.py DeepSpeedPlugin)
        auto: dict[str, Any] = {}
        if mixed is not None:
            auto.update({"bf16.enabled": mixed == "bf16", "fp16.enabled": mixed == "fp16"})
        if ds.get("gradient_accumulation_steps") not in (None, "auto"):
            auto["gradient_accumulation_steps"] = ds["gradient_accumulation_steps"]
        deepspeed.read_referenced(c, file_key, auto=auto, auto_source="the accelerate config")
        c.consult("deepspeed_config.gradient_accumulation_steps", "grad_accum", "fills the DeepSpeed file's 'auto'")
        c.consult("mixed_precision", "precision", "fills the DeepSpeed file's bf16/fp16 'auto'")
        return
    c.set("engine", "deepspeed", "distributed_type", note="accelerate's DeepSpeed plugin")
    stage = c.integer("deepspeed_config.zero_stage", minimum=0)
    if stage is not None:
        if stage > 3:
            raise c.error("deepspeed_config.zero_stage", f"ZeRO stages are 0-3, got {stage}")
        c.set("zero", stage, "deepspeed_config.zero_stage")
    for key, field in (("offload_optimizer_device", "offload_optimizer"), ("offload_param_device", "offload_params")):
        device = c.text(f"deepspeed_config.{key}", choices=deepspeed.OFFLOAD)
        if device is not None:
            c.set(field, device, f"deepspeed_config.{key}")
    accum = c.integer("deepspeed_config.gradient_accumulation_steps")
    if accum is not None:
        c.set("grad_accum", accum, "deepspeed_config.gradient_accumulation_steps")
    if mixed is not None:
        c.set("precision", DEEPSPEED_PRECISION[mixed], "mixed_precision",
              note="becomes DeepSpeed's bf16/fp16 section: fp32 master weights and states in DeepSpeed's optimizer")
    else:
        c.default("precision", "fp32", "mixed_precision", "accelerate's default mixed_precision is 'no'")


def _megatron(c: Collector, mixed: str | None) -> None:
    p = "megatron_lm_config.megatron_lm_"
    c.set("engine", "megatron", "distributed_type", note="accelerate's Megatron-LM plugin")
    for name, field in (("tp_degree", "tp"), ("pp_degree", "pp"), ("num_micro_batches", "grad_accum")):
        v = c.integer(p + name)
        if v is not None:
            c.set(field, v, p + name)
    sp = c.boolean(p + "sequence_parallelism")
    if sp is not None:
        c.set("sequence_parallel", sp, p + "sequence_parallelism")
    if c.boolean(p + "recompute_activations"):
        c.set("recompute", "selective", p + "recompute_activations",
              note="Megatron's --recompute-activations is selective recompute (Korthikanti et al. 2022)")
    c.consult(p + "recompute_activations", "recompute", "false: no recompute")
    dist = c.boolean(p + "use_distributed_optimizer")
    if dist is not None:
        c.set("zero", 1 if dist else 0, p + "use_distributed_optimizer", note="the distributed optimizer = ZeRO-1")
    if mixed is not None:
        c.set("precision", DEEPSPEED_PRECISION[mixed], "mixed_precision", note="Megatron's --bf16/--fp16: fp32 main "
                                                                                "weights in the optimizer")


def _parallelism(c: Collector) -> None:
    p = "parallelism_config.parallelism_config_"
    tp = c.integer(p + "tp_size")
    if tp:
        c.set("tp", tp, p + "tp_size")
    for name in ("cp_size", "sp_size"):
        v = c.integer(p + name)
        if v and v > 1:
            c.set("cp", v, p + name, note="sequence sharded over this many GPUs" +
                  (" (DeepSpeed-Ulysses style)" if name == "sp_size" else ""))
        elif v is not None:
            c.consult(p + name, "cp")
    replicate, shard = c.integer(p + "dp_replicate_size"), c.integer(p + "dp_shard_size")
    c.consult_all("zero", p + "dp_replicate_size", p + "dp_shard_size", note="data-parallel sharding")
    if replicate and replicate > 1 and (shard or 1) > 1:
        c.warn(f"{c.path}: dp_replicate_size {replicate} x dp_shard_size {shard} is HSDP: states are sharded over "
               f"{shard} GPUs, memplan shards them over all {replicate * shard} data-parallel GPUs")
    elif replicate and replicate > 1:
        c.set("zero", 0, p + "dp_replicate_size", note="replicated data parallelism only (DDP)")


# ---- emitting ---------------------------------------------------------------------------------------------------
def _plugin(layout: EngineLayout) -> str:
    if layout.engine == "megatron" or layout.pp > 1:
        return "megatron_lm"
    fsdp_can = layout.zero in (2, 3) and layout.offload_optimizer == layout.offload_params and \
        layout.offload_optimizer in ("none", "cpu") and layout.engine in (None, "fsdp", "plain")
    if fsdp_can:
        return "fsdp"
    if layout.zero or layout.engine == "deepspeed" or layout.offload_optimizer != "none":
        return "deepspeed"
    return "multi_gpu" if layout.gpus > 1 else "no"


def emit(layout: EngineLayout) -> EmittedSetup:
    yaml = _source.yaml_module("writing an accelerate config")
    warnings: list[str] = []
    kind = _plugin(layout)
    base = layout.precision.split("[", 1)[0]
    mixed = "bf16" if "bf16" in base else "fp16" if "fp16" in base else "fp8" if "fp8" in base else "no"
    nodes = -(-layout.gpus // layout.gpus_per_node)
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "debug": False,
        "distributed_type": {"no": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED",
                             "megatron_lm": "MEGATRON_LM"}[kind],
        "downcast_bf16": "no", "machine_rank": 0, "main_training_function": "main", "mixed_precision": mixed,
        "num_machines": nodes, "num_processes": layout.gpus, "rdzv_backend": "static", "same_network": True,
        "use_cpu": False,
    }
    if kind == "fsdp":
        config["fsdp_config"] = {
            "fsdp_version": 2, "fsdp_reshard_after_forward": layout.zero == 3,
            "fsdp_offload_params": layout.offload_params == "cpu",
            "fsdp_activation_checkpointing": layout.recompute == "full",
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": True,
        }
        if layout.tp > 1 or layout.cp > 1:
            config["parallelism_config"] = {"parallelism_config_dp_replicate_size": 1,
                                            "parallelism_config_dp_shard_size": layout.dp,
                                            "parallelism_config_tp_size": layout.tp,
                                            "parallelism_config_cp_size": layout.cp}
        if layout.recompute == "selective":
            warnings.append("recompute selective: FSDP's activation checkpointing is per layer (full); "
                            "selective recompute is the model code's")
        if base in ("bf16-mixed", "fp16-mixed", "amp-bf16"):
            warnings.append(f"{base}: accelerate's FSDP mixed precision is FSDP's MixedPrecision(Policy) over fp32 "
                            "parameters (memplan reads this file back as fsdp-bf16 for bf16)")
    elif kind == "deepspeed":
        ds: dict[str, Any] = {"zero_stage": layout.zero, "gradient_accumulation_steps": layout.grad_accum,
                              "offload_optimizer_device": layout.offload_optimizer,
                              "offload_param_device": layout.offload_params, "zero3_init_flag": layout.zero == 3}
        config["deepspeed_config"] = ds
        if layout.tp > 1 or layout.cp > 1:
            warnings.append("tp/cp: accelerate's DeepSpeed plugin sets neither; use a ds_config file "
                            "(--emit deepspeed) with tensor_parallel.autotp_size / sequence_parallel_size")
    elif kind == "megatron_lm":
        config["megatron_lm_config"] = {
            "megatron_lm_tp_degree": layout.tp, "megatron_lm_pp_degree": layout.pp,
            "megatron_lm_num_micro_batches": layout.grad_accum,
            "megatron_lm_sequence_parallelism": layout.sequence_parallel,
            "megatron_lm_recompute_activations": layout.recompute != "none",
            "megatron_lm_use_distributed_optimizer": layout.zero >= 1,
        }
        if layout.recompute == "full":
            warnings.append("recompute full: accelerate's Megatron plugin has only recompute_activations (selective)")
        if layout.zero > 1:
            warnings.append(f"ZeRO-{layout.zero}: Megatron's distributed optimizer shards the optimizer only (ZeRO-1)")
    if layout.ep > 1:
        warnings.append(f"ep {layout.ep}: accelerate's config has no expert parallelism")
    if kind != "megatron_lm" and layout.grad_accum > 1 and kind != "deepspeed":
        warnings.append(f"grad_accum {layout.grad_accum}: set Accelerator(gradient_accumulation_steps="
                        f"{layout.grad_accum}) in the script (no config key outside DeepSpeed)")
    warnings.append(f"micro_batch {layout.micro_batch}: the script's DataLoader batch_size (not in this file)")
    text = yaml.safe_dump(config, sort_keys=False)
    return EmittedSetup(format="accelerate", text=text, filename="accelerate_config.yaml", warnings=warnings)
