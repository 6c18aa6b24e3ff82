"""Reading the engines' own config files into setup keywords.

Each file below is written the way its engine documents or writes it (the accelerate and TrainingArguments
files are produced by accelerate's and transformers' own classes); the expected keywords follow from each
engine's semantics as cited in memplan/setupfiles/<format>.py, not from memplan's output.  Two invariants
hold for every file: each value read names a key that is in the file (or is marked as the engine's default),
and every key in the file is either read or listed as ignored with a reason.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from memplan.setupfiles import SetupFileReading, detect_format, read_setup_file
from memplan.setupfiles import _source


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        elif value is not None:
            yield f"{prefix}{key}"


def check_accounted(reading: SetupFileReading) -> None:
    """Every value read names a key of its file; every key of every file is read or ignored (nothing silent)."""
    data = {}
    for f in reading.files:
        if f.endswith(".sh"):
            continue
        data[f] = _source.load(f)[0]
    for r in reading.read:
        if r.default or r.key.startswith("(") or r.file not in data:
            continue
        node = data[r.file]
        for part in r.key.split("."):
            assert isinstance(node, dict) and part in node, f"{r.field} from {r.key}: no such key in {r.file}"
            node = node[part]
    for f, d in data.items():
        covered = {(x.file, x.key) for x in reading.read} | {(x.file, x.key) for x in reading.ignored}
        keys = {k for fl, k in covered if fl == f}
        for leaf in leaves(d):
            parts = leaf.split(".")
            assert any(".".join(parts[:i]) in keys for i in range(1, len(parts) + 1)) or \
                any(k.startswith(leaf + ".") for k in keys), f"{f}: {leaf} neither read nor ignored"
    for i in reading.ignored:
        assert i.reason


# ---- DeepSpeed --------------------------------------------------------------------------------------------------
DS_ZERO3_OFFLOAD = """
{
  "train_batch_size": 512,
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 2,
  "bf16": {"enabled": true},
  "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "weight_decay": 0.1}},
  "zero_optimization": {
    "stage": 3,
    "offload_optimizer": {"device": "cpu", "pin_memory": true},
    "offload_param": {"device": "cpu", "pin_memory": false},
    "overlap_comm": true, "contiguous_gradients": true, "stage3_max_live_parameters": 1e9
  },
  "gradient_clipping": 1.0,
  "steps_per_print": 100,
  "wall_clock_breakdown": false
}
"""


def test_deepspeed_zero3_offload(tmp_path):
    r = read_setup_file(write(tmp_path, "ds_config.json", DS_ZERO3_OFFLOAD))
    assert r.format == "deepspeed"
    assert r.setup.given() == {
        "engine": "deepspeed", "zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu", "pin_memory": False,
        "micro_batch": 4, "grad_accum": 2, "global_batch": 512,
        "gpus": 64,  # DeepSpeed: train_batch_size = micro * gas * data-parallel size -> 512 / (4 * 2)
        "precision": "bf16-mixed", "optimizer": "adamw",
    }  # no optimizer_impl: an offloaded optimizer steps in DeepSpeedCPUAdam
    assert {i.key for i in r.ignored} >= {"optimizer.params", "gradient_clipping", "zero_optimization.overlap_comm"}
    check_accounted(r)


def test_deepspeed_defaults_are_deepspeeds(tmp_path):
    """bf16/fp16 absent: DeepSpeed trains in fp32; no zero_optimization: stage 0; no gas: 1."""
    r = read_setup_file(write(tmp_path, "ds.json", '{"train_micro_batch_size_per_gpu": 2}'))
    assert r.setup.given() == {"engine": "deepspeed", "zero": 0, "micro_batch": 2, "grad_accum": 1,
                               "precision": "fp32"}
    assert all(x.default for x in r.read if x.field in ("zero", "grad_accum", "precision"))


def test_deepspeed_auto_values_are_listed_not_guessed(tmp_path):
    r = read_setup_file(write(tmp_path, "ds.json", """
        {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 2}}"""))
    assert r.setup.given() == {"engine": "deepspeed", "zero": 2}
    auto = {i.key for i in r.ignored if i.reason.startswith("'auto'")}
    assert auto == {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "bf16.enabled"}


def test_deepspeed_legacy_and_autotp(tmp_path):
    r = read_setup_file(write(tmp_path, "ds.json", """
        {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
         "fp16": {"enabled": true, "loss_scale": 0}, "tensor_parallel": {"autotp_size": 2},
         "optimizer": {"type": "Adam", "params": {"torch_adam": true}},
         "zero_optimization": {"stage": 2, "cpu_offload": true}}"""))
    s = r.setup
    assert (s.precision, s.tp, s.gpus, s.offload_optimizer, s.optimizer) == ("fp16-mixed", 2, 16, "cpu", "adam")


# ---- accelerate -------------------------------------------------------------------------------------------------
def test_accelerate_fsdp_file_written_by_accelerate(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    path = tmp_path / "fsdp.yaml"
    ClusterConfig(compute_environment="LOCAL_MACHINE", distributed_type="FSDP", mixed_precision="bf16",
                  use_cpu=False, debug=False, num_processes=16, num_machines=2,
                  fsdp_config={"fsdp_version": 2, "fsdp_reshard_after_forward": False, "fsdp_offload_params": True,
                               "fsdp_activation_checkpointing": True, "fsdp_auto_wrap_policy":
                                   "TRANSFORMER_BASED_WRAP", "fsdp_state_dict_type": "SHARDED_STATE_DICT"},
                  ).to_yaml_file(path)
    r = read_setup_file(path)
    assert r.format == "accelerate"
    assert r.setup.given() == {"gpus": 16, "gpus_per_node": 8, "engine": "fsdp", "zero": 2,
                               "offload_params": "cpu", "offload_optimizer": "cpu", "recompute": "full",
                               "precision": "fsdp-bf16"}
    check_accounted(r)


def test_accelerate_fsdp1_strategy_names(tmp_path):
    r = read_setup_file(write(tmp_path, "a.yaml", """
        distributed_type: FSDP
        num_processes: 8
        fsdp_config:
          fsdp_sharding_strategy: HYBRID_SHARD
          fsdp_offload_params: false
        """))
    assert r.setup.zero == 3 and any("HYBRID_SHARD" in w and "within a node" in w for w in r.warnings)


def test_accelerate_deepspeed_file_fills_auto_from_accelerate(tmp_path):
    write(tmp_path, "configs/zero2.json", """
        {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 2,
         "offload_optimizer": {"device": "cpu", "pin_memory": true}}}""")
    path = write(tmp_path, "configs/accelerate_ds.yaml", """
        compute_environment: LOCAL_MACHINE
        distributed_type: DEEPSPEED
        deepspeed_config:
          deepspeed_config_file: zero2.json
          zero3_init_flag: false
        mixed_precision: bf16
        num_machines: 1
        num_processes: 4
        """)
    r = read_setup_file(path)
    assert r.setup.given() == {"gpus": 4, "gpus_per_node": 4, "engine": "deepspeed", "zero": 2,
                               "offload_optimizer": "cpu", "pin_memory": True, "precision": "bf16-mixed"}
    assert [Path(f).name for f in r.files] == ["accelerate_ds.yaml", "zero2.json"]
    precision = next(x for x in r.read if x.field == "precision")
    assert precision.file.endswith("zero2.json") and "accelerate config" in precision.note
    check_accounted(r)


def test_accelerate_inline_deepspeed_and_megatron(tmp_path):
    r = read_setup_file(write(tmp_path, "ds.yaml", """
        distributed_type: DEEPSPEED
        deepspeed_config:
          zero_stage: 3
          offload_optimizer_device: nvme
          offload_param_device: nvme
          gradient_accumulation_steps: 8
        mixed_precision: fp16
        num_processes: 8
        """))
    assert (r.setup.zero, r.setup.offload_optimizer, r.setup.offload_params, r.setup.grad_accum,
            r.setup.precision) == (3, "nvme", "nvme", 8, "fp16-mixed")
    m = read_setup_file(write(tmp_path, "mlm.yaml", """
        distributed_type: MEGATRON_LM
        megatron_lm_config:
          megatron_lm_tp_degree: 4
          megatron_lm_pp_degree: 2
          megatron_lm_num_micro_batches: 8
          megatron_lm_sequence_parallelism: true
          megatron_lm_recompute_activations: true
          megatron_lm_use_distributed_optimizer: true
        mixed_precision: bf16
        num_processes: 32
        num_machines: 4
        """))
    assert m.setup.given() == {"gpus": 32, "gpus_per_node": 8, "engine": "megatron", "tp": 4, "pp": 2,
                               "grad_accum": 8, "sequence_parallel": True, "recompute": "selective", "zero": 1,
                               "precision": "bf16-mixed"}


def test_accelerate_keys_are_accelerates():
    """Every top-level key the reader names is a ClusterConfig field; FSDP/DeepSpeed/Megatron keys are the
    `accelerate launch` arguments they become (commands/launch.py copies fsdp_config.x to args.fsdp_x)."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    from memplan.setupfiles import accelerate, _fsdp

    fields = set(ClusterConfig.__dataclass_fields__)
    assert {k.split(".")[0] for k in accelerate.REASONS} <= fields
    dests = {a.dest for a in launch_command_parser()._actions}
    fsdp_keys = {f"fsdp_{n}" for n in ("version", "sharding_strategy", "reshard_after_forward", "offload_params",
                                       "activation_checkpointing", *_fsdp.REASONS) if n not in
                 ("cpu_offload", "final_state_dict_type", "mixed_precision_policy")}
    ds_keys = {"zero_stage", "offload_optimizer_device", "offload_param_device", "gradient_accumulation_steps",
               "deepspeed_config_file", "zero3_init_flag", "zero3_save_16bit_model", "gradient_clipping"}
    mlm = {f"megatron_lm_{n}" for n in ("tp_degree", "pp_degree", "num_micro_batches", "sequence_parallelism",
                                        "recompute_activations", "use_distributed_optimizer")}
    par = {f"parallelism_config_{n}" for n in ("tp_size", "cp_size", "sp_size", "dp_replicate_size", "dp_shard_size")}
    assert (fsdp_keys | ds_keys | mlm | par) - dests == set()


# ---- torchtitan -------------------------------------------------------------------------------------------------
TITAN_8B = """
# a preset in the shape of torchtitan/models/llama3/train_configs/llama3_8b.toml
[job]
dump_folder = "./outputs"
description = "Llama 3 8B training"

[model]
name = "llama3"
flavor = "8B"
hf_assets_path = "./assets/hf/Llama-3.1-8B"

[optimizer]
name = "AdamW"
lr = 3e-4
eps = 1e-8

[training]
local_batch_size = 1
seq_len = 8192
max_norm = 1.0
steps = 1000
dataset = "c4"

[parallelism]
data_parallel_replicate_degree = 1
data_parallel_shard_degree = 8
tensor_parallel_degree = 1
pipeline_parallel_degree = 1
context_parallel_degree = 1

[activation_checkpoint]
mode = "selective"
selective_ac_option = "op"

[compile]
enable = false
"""


def test_torchtitan_llama3_8b(tmp_path):
    r = read_setup_file(write(tmp_path, "llama3_8b.toml", TITAN_8B))
    assert r.format == "torchtitan"
    assert r.setup.given() == {
        "engine": "fsdp", "tp": 1, "pp": 1, "cp": 1, "ep": 1, "gpus": 8, "zero": 3, "seq": 8192, "micro_batch": 1,
        "grad_accum": 1, "precision": "fsdp-bf16", "recompute": "selective-op", "optimizer": "adamw",
        "optimizer_impl": "fused", "model": "llama-3-8b"}
    check_accounted(r)


def test_torchtitan_pipeline_hsdp_and_accumulation(tmp_path):
    r = read_setup_file(write(tmp_path, "pp.toml", """
        [model]
        name = "llama3"
        flavor = "70B"
        [training]
        local_batch_size = 16
        global_batch_size = 128
        seq_len = 4096
        enable_cpu_offload = false
        [parallelism]
        data_parallel_replicate_degree = 2
        data_parallel_shard_degree = 2
        tensor_parallel_degree = 8
        pipeline_parallel_degree = 4
        pipeline_parallel_schedule = "Interleaved1F1B"
        pipeline_parallel_microbatch_size = 2
        [activation_checkpoint]
        mode = "full"
        """))
    s = r.setup
    assert (s.gpus, s.tp, s.pp, s.sequence_parallel, s.virtual_stages) == (2 * 2 * 8 * 4, 8, 4, True, 2)
    # 128 / (16 * dp 4) = 2 accumulation steps of 16 / 2 = 8 microbatches
    assert (s.micro_batch, s.grad_accum, s.global_batch) == (2, 16, 128)
    assert s.zero == 2  # fsdp_reshard_after_forward "default" keeps parameters gathered under PP
    assert s.recompute == "full" and s.model == "llama-3-70b"
    assert any("HSDP" in w for w in r.warnings)


def test_torchtitan_default_ac_is_every_second_layer(tmp_path):
    # JobConfig's default: mode selective, selective_ac_option "2" = every 2nd block fully checkpointed (issue 21:
    # modelled as --recompute full --recompute-every 2, no longer a warning)
    r = read_setup_file(write(tmp_path, "t.toml", '[parallelism]\ntensor_parallel_degree = 2\n'), format="torchtitan")
    assert (r.setup.recompute, r.setup.recompute_every) == ("full", 2)
    assert r.setup.micro_batch == 8 and r.setup.seq == 2048  # JobConfig defaults
    assert any("-1" in w for w in r.warnings) and r.setup.gpus is None


# torchtitan/config/job_config.py @238fa9953e4aec2a62582121564273d7cbb1e9f1: the fields this module reads
JOBCONFIG = {
    "job": {"config_file", "dump_folder", "description", "print_config", "save_config_file", "custom_config_module"},
    "model": {"name", "flavor", "hf_assets_path", "tokenizer_path", "converters", "print_after_conversion"},
    "optimizer": {"name", "lr", "eps", "weight_decay", "implementation", "early_step_in_backward"},
    # batch_size: the name of local_batch_size before pytorch/torchtitan@8570415c3 (#1238, 2025-06-05)
    "training": {"dataset", "dataset_path", "local_batch_size", "batch_size", "global_batch_size", "seq_len", "max_norm", "steps",
                 "enable_cpu_offload", "dtype", "mixed_precision_param", "mixed_precision_reduce", "gc_freq",
                 "gc_debug", "dataloader"},
    "parallelism": {"data_parallel_replicate_degree", "data_parallel_shard_degree", "fsdp_reshard_after_forward",
                    "tensor_parallel_degree", "disable_loss_parallel", "enable_async_tensor_parallel",
                    "pipeline_parallel_degree", "pipeline_parallel_layers_per_stage", "pipeline_parallel_schedule",
                    "pipeline_parallel_microbatch_size", "context_parallel_degree", "context_parallel_load_balancer",
                    "context_parallel_rotate_method", "expert_parallel_degree"},
    "activation_checkpoint": {"mode", "selective_ac_option", "early_stop", "preserve_rng_state"},
}
JOBCONFIG_SECTIONS = {"job", "profiling", "metrics", "model", "optimizer", "lr_scheduler", "training", "parallelism",
                      "checkpoint", "activation_checkpoint", "compile", "quantize", "comm", "memory_estimation",
                      "fault_tolerance", "experimental", "validation", "debug"}


def test_torchtitan_keys_are_jobconfigs():
    import inspect
    import re

    from memplan.setupfiles import torchtitan

    source = inspect.getsource(torchtitan)
    used = set(re.findall(r'"((?:job|model|optimizer|training|parallelism|activation_checkpoint)\.[a-z_]+)"', source))
    used |= {k for k in torchtitan.REASONS if "." in k}
    assert used, "the reader names its keys"
    for key in used:
        section, name = key.split(".", 1)
        assert name in JOBCONFIG[section], key
    assert {k for k in torchtitan.REASONS if "." not in k} <= JOBCONFIG_SECTIONS


# ---- axolotl ----------------------------------------------------------------------------------------------------
AXOLOTL_QLORA = """
        base_model: NousResearch/Llama-2-7b-hf
        model_type: LlamaForCausalLM
        load_in_8bit: false
        load_in_4bit: true
        datasets:
          - path: mhenrichsen/alpaca_2k_test
            type: alpaca
        adapter: qlora
        sequence_len: 4096
        sample_packing: true
        lora_r: 32
        lora_alpha: 16
        lora_dropout: 0.05
        lora_target_linear: true
        gradient_accumulation_steps: 4
        micro_batch_size: 2
        optimizer: paged_adamw_32bit
        learning_rate: 0.0002
        bf16: auto
        gradient_checkpointing: true
        flash_attention: true
        """


def test_axolotl_qlora(tmp_path):
    r = read_setup_file(write(tmp_path, "qlora.yml", AXOLOTL_QLORA))
    assert r.format == "axolotl"
    assert r.setup.given() == {
        "model": "NousResearch/Llama-2-7b-hf", "seq": 4096, "micro_batch": 2, "grad_accum": 4, "lora_rank": 32,
        "lora_targets": "all-linear", "quantize_base": "nf4", "recompute": "full", "attention": "flash",
        "optimizer": "adamw", "precision": "bf16", "lora_alpha": 16.0, "lora_dropout": 0.05}
    check_accounted(r)


def test_axolotl_deepspeed_path_beside_the_yaml(tmp_path):
    write(tmp_path, "deepspeed_configs/zero3_bf16.json", """
        {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": true},
         "bf16": {"enabled": "auto"}, "gradient_accumulation_steps": "auto",
         "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto"}""")
    path = write(tmp_path, "full.yml", """
        base_model: meta-llama/Meta-Llama-3-8B
        sequence_len: 8192
        micro_batch_size: 1
        gradient_accumulation_steps: 8
        lora_target_modules: [q_proj, v_proj]
        bf16: true
        deepspeed: deepspeed_configs/zero3_bf16.json
        """)
    r = read_setup_file(path)
    s = r.setup
    assert (s.engine, s.zero, s.precision, s.micro_batch, s.grad_accum) == ("deepspeed", 3, "bf16-mixed", 1, 8)
    assert s.lora_rank is None and s.lora_targets is None  # no adapter: target modules alone do nothing
    assert len(r.files) == 2
    check_accounted(r)


def test_axolotl_lora_modules_and_base_model_config(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    r = read_setup_file(write(tmp_path, "lora.yaml", """
        base_model: some/private-model
        base_model_config: ./cfg
        adapter: lora
        lora_r: 16
        lora_target_modules:
          - q_proj
          - k_proj
          - v_proj
        load_in_8bit: true
        batch_size: 16
        micro_batch_size: 4
        fsdp_config:
          fsdp_version: 2
          reshard_after_forward: true
          offload_params: false
        """), format="axolotl")
    s = r.setup
    assert s.model == str(tmp_path / "cfg") and s.lora_targets == "q_proj,k_proj,v_proj"
    assert (s.quantize_base, s.grad_accum, s.engine, s.zero) == ("int8", 4, "fsdp", 3)


# src/axolotl/utils/schemas/{config,model,peft,training,fsdp}.py @067b021c8b87a9e5e380b9173c704cf7340e30f5
AXOLOTL_FIELDS = {
    "base_model", "base_model_config", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "lora_target_linear", "lora_fan_in_fan_out", "lora_modules_to_save", "load_in_4bit", "load_in_8bit",
    "sequence_len", "micro_batch_size", "gradient_accumulation_steps", "batch_size", "gradient_checkpointing",
    "activation_offloading", "flash_attention", "sdp_attention", "xformers_attention", "optimizer", "bf16", "fp16",
    "bfloat16", "float16", "float32", "tf32", "deepspeed", "fsdp", "fsdp_config", "fsdp_version",
    "tensor_parallel_size", "context_parallel_size", "sequence_parallel_degree", "dp_shard_size",
    "dp_replicate_size", "sample_packing", "pad_to_sequence_len", "torch_compile", "bnb_config_kwargs",
    "datasets", "test_datasets", "val_set_size", "dataset_prepared_path", "output_dir", "learning_rate",
    "lr_scheduler", "warmup_steps", "warmup_ratio", "num_epochs", "max_steps", "logging_steps", "saves_per_epoch",
    "evals_per_epoch", "eval_steps", "save_steps", "special_tokens", "tokenizer_type", "model_type",
    "train_on_inputs", "group_by_length", "hub_model_id", "strict", "trust_remote_code", "early_stopping_patience",
    "resume_from_checkpoint", "local_rank", "weight_decay", "max_grad_norm", "chat_template", "wandb_project",
    "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "seed", "save_total_limit", "plugins",
    "eval_sample_packing", "lr_scheduler_kwargs", "optim_args", "dataloader_num_workers",
}


def keys_named_in(module) -> set[str]:
    """The file keys a reader module looks up (first argument of the Collector's look-ups, third of set())."""
    import inspect
    import re

    source = inspect.getsource(module)
    keys = set(re.findall(r'c\.(?:integer|boolean|text|get|has|mapping|ignore|consult)\("([A-Za-z0-9_.\-]+)"', source))
    keys |= set(re.findall(r'c\.(?:set|default)\("[a-z_]+", [^,()]+, "([A-Za-z0-9_.\-]+)"', source))
    for args in re.findall(r'c\.consult_all\("[a-z_]+", ([^)]*)\)', source):
        keys |= set(re.findall(r'"([A-Za-z0-9_.\-]+)"', args.split("note=")[0]))
    return keys


def test_axolotl_keys_are_axolotls():
    from memplan.setupfiles import axolotl

    named = keys_named_in(axolotl)
    assert {"base_model", "lora_r", "sequence_len", "micro_batch_size"} <= named
    assert named - AXOLOTL_FIELDS == set()
    assert set(axolotl.REASONS) <= AXOLOTL_FIELDS


# ---- HF TrainingArguments ---------------------------------------------------------------------------------------
def _training_args_json(tmp_path, **kw) -> Path:
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], **kw)
    path = tmp_path / "training_args.json"
    path.write_text(args.to_json_string())
    return path


def test_hf_training_arguments_json(tmp_path):
    path = _training_args_json(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=16,
                               activation_checkpointing=True, optim="adamw_torch")
    r = read_setup_file(path)
    assert r.format == "hf-trainer"
    assert r.setup.given() == {"micro_batch": 4, "grad_accum": 16, "optimizer": "adamw", "optimizer_impl": "foreach",
                               "recompute": "full", "engine": "plain", "zero": 0}
    assert any("bf16 and fp16 are off" in w for w in r.warnings)
    check_accounted(r)


def test_hf_training_arguments_with_inline_deepspeed(tmp_path):
    ds = {"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}, "offload_optimizer":
                                {"device": "cpu"}},
          "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}
    path = write(tmp_path, "args.json", json.dumps({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 8,
                                                    "bf16": True, "optim": "adamw_torch_fused", "deepspeed": ds}))
    r = read_setup_file(path)
    assert r.setup.given() == {"micro_batch": 2, "grad_accum": 8, "optimizer": "adamw", "optimizer_impl": "fused",
                               "recompute": "none", "engine": "deepspeed", "zero": 3, "offload_params": "cpu",
                               "offload_optimizer": "cpu", "precision": "bf16-mixed"}
    assert next(x for x in r.read if x.field == "precision").key == "deepspeed.bf16.enabled"
    check_accounted(r)


def test_hf_training_arguments_fsdp(tmp_path):
    path = write(tmp_path, "args.json", json.dumps({
        "per_device_train_batch_size": 1, "bf16": True, "fsdp": "shard_grad_op auto_wrap offload",
        "fsdp_config": {"version": 1, "activation_checkpointing": True, "transformer_layer_cls_to_wrap":
                        ["LlamaDecoderLayer"]}}))
    s = read_setup_file(path, format="hf").setup
    assert (s.engine, s.zero, s.offload_params, s.offload_optimizer, s.recompute, s.precision) == (
        "fsdp", 2, "cpu", "cpu", "full", "bf16")


def test_hf_keys_are_training_arguments():
    transformers = pytest.importorskip("transformers")
    from transformers.training_args import OptimizerNames

    from memplan.setupfiles import hf_trainer

    fields = set(transformers.TrainingArguments.__dataclass_fields__)
    read = keys_named_in(hf_trainer) | {"optim"}  # optimizer(c, "optim") passes its key
    assert {"per_device_train_batch_size", "deepspeed", "fsdp_config"} <= read
    assert (read | set(hf_trainer.REASONS)) - fields == set()
    assert set(hf_trainer.OPTIM) - hf_trainer.LEGACY_OPTIM <= {o.value for o in OptimizerNames}
    assert not hf_trainer.LEGACY_OPTIM & {o.value for o in OptimizerNames}


# ---- Megatron-LM ------------------------------------------------------------------------------------------------
def test_megatron_launch_script(tmp_path):
    r = read_setup_file(write(tmp_path, "train_gpt.sh", """
        #!/bin/bash
        export CUDA_DEVICE_MAX_CONNECTIONS=1
        GPUS_PER_NODE=8
        TP=2
        torchrun --nproc_per_node $GPUS_PER_NODE --nnodes 2 pretrain_gpt.py \\
            --num-layers 32 --hidden-size 4096 --num-attention-heads 32 \\
            --tensor-model-parallel-size ${TP} \\
            --pipeline-model-parallel-size 2 \\
            --sequence-parallel \\
            --micro-batch-size 2 --global-batch-size 128 --seq-length 4096 \\
            --recompute-activations \\
            --use-distributed-optimizer \\
            --bf16 \\
            --lr 3e-4  # a comment
        """))
    assert r.format == "megatron"
    assert r.setup.given() == {
        "engine": "megatron", "gpus_per_node": 8, "gpus": 16, "tp": 2, "pp": 2, "micro_batch": 2,
        "global_batch": 128, "seq": 4096, "zero": 1, "recompute": "selective", "sequence_parallel": True,
        "precision": "bf16-mixed", "optimizer": "adamw",
        "grad_accum": 16,  # 128 / (2 * dp 4)
    }


def test_detection_by_content(tmp_path):
    assert detect_format({"zero_optimization": {"stage": 1}}) == "deepspeed"
    assert detect_format({"distributed_type": "FSDP"}) == "accelerate"
    assert detect_format({"parallelism": {}, "training": {}}) == "torchtitan"
    assert detect_format({"base_model": "x", "sequence_len": 2}) == "axolotl"
    assert detect_format({"per_device_train_batch_size": 2}) == "hf-trainer"
    assert detect_format({"model": "x"}) is None


@pytest.mark.parametrize("name, text", [("ds_config.json", DS_ZERO3_OFFLOAD), ("llama3_8b.toml", TITAN_8B),
                                        ("qlora.yml", AXOLOTL_QLORA)])
def test_a_reading_builds_a_setup(tmp_path, name, text):
    """The keywords are the setup builder's own (memplan.setups), and what a file says builds a setup."""
    from memplan import setups

    kw = read_setup_file(write(tmp_path, name, text)).setup.setup_kwargs()
    assert set(kw) <= set(setups.TRAINING_KEYS)
    setup = setups.training_setup(kw.pop("model", "llama-2-7b"), **kw)
    for field in ("gpus", "zero", "micro_batch", "grad_accum", "recompute"):
        if field in kw:
            assert getattr(setup.layout, field) == kw[field]
    assert setup.recipe.name == kw["precision"]
