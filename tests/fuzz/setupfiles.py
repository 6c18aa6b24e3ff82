"""Setup-file mutations per reader (issue 18): a real-looking file of each engine's format (DeepSpeed, accelerate,
torchtitan, axolotl, HF TrainingArguments, Megatron launch script, memplan's own), then one to three mutations of
its parsed settings or of its text: a value replaced by a wrong type or an odd number (NaN, 1e400, a 5,000-digit
integer, a Unicode digit, a huge string, a deep list), a key dropped, duplicated or unknown, nesting made deep, a
Megatron variable-expansion chain, a big file.  Every one must end in an answer or one `memplan: error:` line.

Pure data: the generator returns the file's text, written by tests/fuzz/files.py `materialize`.
"""
from __future__ import annotations

import json
import random
import re

# ---- a template per reader: the keys each reader looks at (memplan/setupfiles/*.py) --------------------------
DEEPSPEED = {
    "train_batch_size": 64, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
    "bf16": {"enabled": True, "bf16_master_weights_and_grads": False},
    "fp16": {"enabled": False, "loss_scale": 0},
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "torch_adam": False}},
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True, "ratio": 1},
                          "offload_param": {"device": "none"}, "reduce_bucket_size": 5e8, "overlap_comm": True},
    "tensor_parallel": {"autotp_size": 1}, "sequence_parallel_size": 1, "gradient_clipping": 1.0,
    "torch_autocast": {"enabled": False, "dtype": "bfloat16"}, "steps_per_print": 10,
}
ACCELERATE = {
    "compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP", "mixed_precision": "bf16",
    "num_processes": 8, "num_machines": 1, "use_cpu": False, "main_training_function": "main",
    "fsdp_config": {"fsdp_version": 2, "fsdp_sharding_strategy": "FULL_SHARD", "fsdp_offload_params": False,
                    "fsdp_activation_checkpointing": True, "fsdp_reshard_after_forward": True,
                    "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"},
    "deepspeed_config": {"zero_stage": 2, "offload_optimizer_device": "cpu", "gradient_accumulation_steps": 4},
    "megatron_lm_config": {"megatron_lm_tp_degree": 2, "megatron_lm_pp_degree": 1},
    "parallelism_config": {"tp_size": 1, "dp_replicate_size": 1},
}
TORCHTITAN = {
    "job": {"dump_folder": "./outputs"}, "model": {"name": "llama3", "flavor": "8B", "converters": []},
    "optimizer": {"name": "AdamW", "lr": 3e-4, "implementation": "fused"},
    "lr_scheduler": {"warmup_steps": 200},
    "training": {"local_batch_size": 1, "global_batch_size": 8, "seq_len": 8192, "dtype": "float32",
                 "mixed_precision_param": "bfloat16", "enable_cpu_offload": False},
    "parallelism": {"data_parallel_replicate_degree": 1, "data_parallel_shard_degree": 8,
                    "tensor_parallel_degree": 1, "pipeline_parallel_degree": 1, "context_parallel_degree": 1,
                    "expert_parallel_degree": 1, "fsdp_reshard_after_forward": "default",
                    "pipeline_parallel_microbatch_size": 1, "pipeline_parallel_schedule": "1F1B"},
    "activation_checkpoint": {"mode": "selective", "selective_ac_option": "op"},
}
AXOLOTL = {
    "base_model": "NousResearch/Llama-2-7b-hf", "load_in_8bit": False, "load_in_4bit": True,
    "datasets": [{"path": "mhenrichsen/alpaca_2k_test", "type": "alpaca"}], "adapter": "qlora",
    "sequence_len": 4096, "sample_packing": True, "lora_r": 32, "lora_alpha": 16, "lora_dropout": 0.05,
    "lora_target_linear": True, "lora_target_modules": ["q_proj", "v_proj"], "gradient_accumulation_steps": 4,
    "micro_batch_size": 2, "optimizer": "paged_adamw_32bit", "bf16": "auto", "gradient_checkpointing": True,
    "flash_attention": True,
}
HF_TRAINER = {
    "output_dir": "out", "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 16, "optim": "adamw_torch_fused", "bf16": True, "fp16": False,
    "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "eval_strategy": "no", "logging_strategy": "steps", "save_strategy": "steps", "max_steps": -1,
    "fsdp": "", "fsdp_config": {"min_num_params": 0, "xla": False}, "deepspeed": None,
}
MEMPLAN_OWN = {"model": {"name": "llama-2-7b"}, "layout": {"gpus": 8, "zero": 3, "micro_batch": 2, "tp": 1},
               "workload": {"seq": 2048}, "optimizer": {"name": "adamw"}}
MEGATRON = """#!/bin/bash
GPUS_PER_NODE=8
NNODES=2
TP=2
PP=2
torchrun --nproc_per_node $GPUS_PER_NODE --nnodes ${NNODES} pretrain_gpt.py \\
    --num-layers 32 --hidden-size 4096 --num-attention-heads 32 \\
    --tensor-model-parallel-size $TP --pipeline-model-parallel-size ${PP} \\
    --sequence-parallel --micro-batch-size 2 --global-batch-size 128 --seq-length 4096 \\
    --recompute-granularity full --recompute-method uniform --recompute-num-layers 1 \\
    --use-distributed-optimizer --bf16 --optimizer sgd --sgd-momentum 0.9 \\
    --decoder-first-pipeline-num-layers 16 --expert-model-parallel-size 1
"""
READERS = {  # reader -> (file name, template)
    "deepspeed": ("ds_config.json", DEEPSPEED), "accelerate": ("accelerate.yaml", ACCELERATE),
    "torchtitan": ("train.toml", TORCHTITAN), "axolotl": ("axolotl.yml", AXOLOTL),
    "hf_trainer": ("training_args.json", HF_TRAINER), "megatron": ("pretrain_gpt.sh", MEGATRON),
    "memplan": ("setup.json", MEMPLAN_OWN),
}

# what a setting can be turned into: wrong types, odd numbers, sizes no parser or reader should choke on
ODD_VALUES = [-1, 0, 1, 2**31, 10**19, 10**30, 3.5, 1e400, -1e400, float("nan"), True, False, None, "", "x", "auto",
              "\u00b2", "\u0663", "1e400", "NaN", " 8 ", [], [1], [[1]], {}, {"a": 1}, "cpu", "none", "bf16",
              "FULL_SHARD", "x" * 20_000, "full", "selective", "op", 8, 64]


def _big_int_text() -> str:
    return "1" + "0" * 5000


def _deep(rng: random.Random):
    depth = rng.choice([65, 120])  # deeper: _text_mutation (the writers here recurse too)
    node: object = 1
    for _ in range(depth):
        node = [node] if rng.random() < 0.5 else {"a": node}
    return node


def _pick_path(rng: random.Random, data) -> list:
    """A path (list of keys) to one node of nested dicts/lists, biased to leaves."""
    path: list = []
    node = data
    while isinstance(node, (dict, list)) and node:
        key = rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
        path.append(key)
        node = node[key]
        if isinstance(node, (dict, list)) and node and rng.random() < 0.25:
            break
    return path


def mutate(rng: random.Random, data):
    """One change to parsed settings (a copy): a value replaced, dropped, an unknown key, deep nesting."""
    data = json.loads(json.dumps(data))
    path = _pick_path(rng, data)
    if not path:
        return data
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    r = rng.random()
    if r < 0.75:
        parent[key] = rng.choice(ODD_VALUES)
    elif r < 0.85:
        parent.pop(key) if isinstance(parent, dict) else parent.pop(key)
    elif r < 0.93 and isinstance(parent, dict):
        parent["unknown_setting_\u03bb"] = rng.choice(ODD_VALUES)
    else:
        parent[key] = _deep(rng)
    return data


# ---- writing the settings back as text -------------------------------------------------------------------------
def _json_text(data) -> str:
    return json.dumps(data, allow_nan=True)


def _yaml_text(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**9)


def _toml_scalar(v) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else "inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        items = [_toml_scalar(x) for x in v]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    if isinstance(v, dict):
        items = [(k, _toml_scalar(x)) for k, x in v.items()]
        return "{" + ", ".join(f"{json.dumps(str(k))} = {i}" for k, i in items if i is not None) + "}"
    return None  # TOML has no null: the key is left out


def _toml_text(data: dict) -> str:
    lines = []
    for k, v in data.items():
        if not isinstance(v, dict):
            s = _toml_scalar(v)
            if s is not None:
                lines.append(f"{json.dumps(str(k))} = {s}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(str(k))}]")
            for k2, v2 in v.items():
                s = _toml_scalar(v2)
                if s is not None:
                    lines.append(f"{json.dumps(str(k2))} = {s}")
    return "\n".join(lines) + "\n"


def _megatron_text(rng: random.Random) -> str:
    text = MEGATRON
    kind = rng.choice(["number", "number", "flag", "bomb", "unicode", "drop", "big", "quote", "long"])
    numbers = list(re.finditer(r"(?<=[ =])\d+\b", text))
    if kind == "number" and numbers:
        m = rng.choice(numbers)
        odd = rng.choice(["-1", "0", "1e400", "x", "9" * 30, _big_int_text(), "3.5", "$UNSET", "\u00b2", "\u0663",
                          "${TP", "''", "0x10", "8" * 10])
        return text[:m.start()] + odd + text[m.end():]
    if kind == "flag":
        flag = rng.choice(["--tensor-model-parallel-size", "--micro-batch-size", "--global-batch-size",
                           "--data-parallel-sharding-strategy", "--recompute-granularity", "--sgd-momentum",
                           "--nnodes", "--nproc-per-node", "--use-megatron-fsdp", "--fp8-format", "--optimizer"])
        value = rng.choice(["", "=", "=x", " nan", " inf", " 1e400", " optim_grads", " bogus", " -5", "=\u00b2"])
        return text.rstrip().rstrip("\\") + f" {flag}{value}\n"
    if kind == "bomb":
        n = rng.choice([12, 20, 30])
        chain = "V0=xxxxxxxx\n" + "".join(f"V{i + 1}=$V{i}$V{i}$V{i}$V{i}\n" for i in range(n))
        return chain + text.replace("--micro-batch-size 2", f"--micro-batch-size $V{n}")
    if kind == "unicode":
        return text.replace("TP=2", "TP=\u00b2")
    if kind == "drop":
        lines = text.splitlines()
        lines.pop(rng.randrange(len(lines)))
        return "\n".join(lines) + "\n"
    if kind == "big":  # over the 1 MiB launch-script limit
        return text + ("# " + "x" * 1000 + "\n") * 1100
    if kind == "quote":
        return text.replace("--bf16", rng.choice(["'--bf16", '"--bf16', "--bf16 \\"]))
    return text.replace("pretrain_gpt.py", "pretrain_gpt.py " + " ".join(["--lr 1e-4"] * rng.choice([10, 5000])))


def _text_mutation(rng: random.Random, text: str, syntax: str) -> str:
    """A change to the text itself: a 5,000-digit number, deep brackets, a duplicated key, cut in half."""
    kind = rng.choice(["big_int", "deep", "cut", "dup", "bom_nul"])
    numbers = list(re.finditer(r"(?<=[ :=\[])\d+\b", text))
    if kind == "big_int" and numbers:
        m = rng.choice(numbers)
        return text[:m.start()] + _big_int_text() + text[m.end():]
    if kind == "deep":
        depth = rng.choice([65, 1000, 5000])
        key = {"json": '"deep_\u03bb": ', "yaml": "deep_x: ", "toml": "deep_x = "}[syntax]
        value = "[" * depth + "1" + "]" * depth
        if syntax == "json":
            return text.replace("{", "{" + key + value + ", ", 1)
        if syntax == "toml":
            return key + value + "\n" + text
        return key + value + "\n" + text
    if kind == "cut":
        return text[: rng.randrange(1, max(2, len(text)))]
    if kind == "dup" and syntax != "toml":
        lines = text.splitlines()
        i = rng.randrange(len(lines))
        return "\n".join(lines[: i + 1] + lines[i:]) + "\n"
    return text.replace(":", ":\u0000", 1) if rng.random() < 0.5 else text


_SAVED: dict[str, dict] = {}


def _saved_setup(model: str) -> dict:
    """What --save-setup writes for `model` (memplan's own format): the architecture spelled out."""
    if model not in _SAVED:
        from memplan.setups import training_setup

        _SAVED[model] = training_setup(model, gpus=8, zero=3, micro_batch=2).model_dump(mode="json",
                                                                                        exclude_none=True)
    return _SAVED[model]


def setup_file_case(rng: random.Random, reader: str | None = None) -> tuple[str, str, str]:
    """(file name, text, what was done) for one reader's file, mutated."""
    reader = reader or rng.choice(sorted(READERS))
    name, template = READERS[reader]
    if reader == "memplan" and rng.random() < 0.8:
        template = _saved_setup(rng.choice(["llama-2-7b", "mixtral-8x7b", "gemma-2-9b", "qwen3-0.6b"]))
    if reader == "megatron":
        return name, _megatron_text(rng), "megatron script"
    syntax = {"json": "json", "yaml": "yaml", "yml": "yaml", "toml": "toml"}[name.rsplit(".", 1)[1]]
    data = template
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        data = mutate(rng, data)
        done.append("settings")
    text = {"json": _json_text, "yaml": _yaml_text, "toml": _toml_text}[syntax](data)
    if rng.random() < 0.15:
        text = _text_mutation(rng, text, syntax)
        done.append("text")
    return name, text, f"{reader}: {' + '.join(done)}"
