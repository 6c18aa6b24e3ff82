"""axolotl's training YAML: read it into setup keywords.

Fields and defaults are axolotl's (axolotl-ai-cloud/axolotl@067b021c8b87a9e5e380b9173c704cf7340e30f5,
src/axolotl/utils/schemas/: model.py base_model/base_model_config, peft.py adapter/lora_r/lora_target_modules/
lora_target_linear/load_in_4bit/8bit, training.py micro_batch_size 1, gradient_accumulation_steps 1, batch_size,
optimizer adamw_torch_fused, config.py sequence_len 512, bf16 "auto", gradient_checkpointing,
flash_attention/sdp_attention, deepspeed (a path or the settings), fsdp/fsdp_config/fsdp_version,
tensor_parallel_size, context_parallel_size).  axolotl trains through the HF Trainer: the model is loaded in
the bf16/fp16 dtype it chose (utils/config/__init__.py: cfg.torch_dtype), DeepSpeed's "auto" values are filled
from these fields, and `batch_size` (when gradient_accumulation_steps is not given) is micro_batch_size *
gradient_accumulation_steps per GPU.
"""
from __future__ import annotations

import os

from pathlib import Path

import memplan.setupfiles.deepspeed as deepspeed
import memplan.setupfiles.hf_trainer as hf_trainer
from memplan.setupfiles._collect import Collector

REASONS = {key: "data, logging, evaluation, checkpointing or a hyper-parameter" for key in (
    "datasets", "test_datasets", "val_set_size", "dataset_prepared_path", "output_dir", "learning_rate",
    "lr_scheduler", "warmup_steps", "warmup_ratio", "num_epochs", "max_steps", "logging_steps", "saves_per_epoch",
    "evals_per_epoch", "eval_steps", "save_steps", "special_tokens", "tokenizer_type", "model_type",
    "train_on_inputs", "group_by_length", "hub_model_id", "strict", "trust_remote_code", "early_stopping_patience",
    "resume_from_checkpoint", "local_rank", "weight_decay", "max_grad_norm", "chat_template", "wandb_project",
    "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "seed", "save_total_limit", "plugins",
    "eval_sample_packing", "lr_scheduler_kwargs", "optim_args", "dataloader_num_workers")}
REASONS.update({
    "sample_packing": "packing fills sequences up to sequence_len; memplan counts full sequences",
    "pad_to_sequence_len": "memplan counts full sequences of sequence_len",
    "lora_fan_in_fan_out": "a layout detail of the adapter weights", "lora_modules_to_save": "not modelled",
    "tf32": "TF32 matmuls change speed, not memory", "torch_compile": "torch.compile: memplan models eager kernels",
    "xformers_attention": "memory-efficient attention: memplan counts sdpa's", "bnb_config_kwargs": "not modelled",
})


def read(c: Collector) -> None:
    _model(c)
    seq = c.integer("sequence_len")
    c.set("seq", seq or 512, "sequence_len", default=seq is None, note="" if seq else "axolotl's default 512")
    micro = c.integer("micro_batch_size")
    c.set("micro_batch", micro or 1, "micro_batch_size", default=micro is None)
    accum = c.integer("gradient_accumulation_steps")
    per_gpu = c.integer("batch_size")
    if accum is None and per_gpu is not None:
        if per_gpu % (micro or 1):
            raise c.error("batch_size", f"{per_gpu} is not a multiple of micro_batch_size {micro or 1}")
        c.set("grad_accum", per_gpu // (micro or 1), "batch_size", note="batch_size / micro_batch_size (per GPU)")
    else:
        c.set("grad_accum", accum or 1, "gradient_accumulation_steps", default=accum is None)
        c.consult("batch_size", "grad_accum", "gradient_accumulation_steps decides")
    _adapter(c)
    _recompute(c)
    attention = "flash" if c.boolean("flash_attention") else "sdpa" if c.boolean("sdp_attention") else None
    c.consult_all("attention", "flash_attention", "sdp_attention")
    if attention:
        c.set("attention", attention, "flash_attention" if attention == "flash" else "sdp_attention")
    hf_trainer.optimizer(c, "optimizer")
    _parallel(c)
    bf16 = c.get("bf16", "auto")
    bf16 = bf16 if bf16 == "auto" else c.boolean("bf16")
    fp16 = c.boolean("fp16")
    if c.has("deepspeed"):
        on = bool(bf16) and not fp16
        auto = {"train_micro_batch_size_per_gpu": micro or 1, "gradient_accumulation_steps": c.kwargs["grad_accum"],
                "bf16.enabled": on, "fp16.enabled": bool(fp16) and not on}
        deepspeed.read_referenced(c, "deepspeed", auto=auto, auto_source="the axolotl config (via the HF Trainer)")
        c.consult_all("precision", "bf16", "fp16", "bfloat16", "float16", note="fills the DeepSpeed config's 'auto'")
    else:
        _precision(c, bf16, fp16)
        if c.has("fsdp") or c.has("fsdp_config"):
            hf_trainer._fsdp_args(c, c.get("fsdp", None) or True)
            c.consult("fsdp_version", "engine")
    c.finish(REASONS)


def _model(c: Collector) -> None:
    for key in ("base_model_config", "base_model"):  # base_model_config, when given, is where the config is
        name = c.text(key)
        if name is None:
            continue
        beside = Path(c.path).parent / Path(name).expanduser()
        # os.path.exists: False (not an OSError) for a name the OS refuses (over 255 bytes)
        value = str(beside) if not Path(name).is_absolute() and os.path.exists(beside) else name
        c.set("model", value, key, note="a path next to this file" if value != name else "")
        c.consult_all("model", "base_model", "base_model_config", note="base_model_config, when given, decides")
        return


def _adapter(c: Collector) -> None:
    adapter = c.text("adapter")
    four, eight = c.boolean("load_in_4bit"), c.boolean("load_in_8bit")
    c.consult_all("quantize_base", "load_in_4bit", "load_in_8bit")
    if adapter is None:
        if four or eight:
            c.warn(f"{c.path}: load_in_{'4' if four else '8'}bit without an adapter: a quantized base only "
                   "trains through adapters; memplan counts a full fine-tune")
        for key in ("lora_r", "lora_target_modules", "lora_target_linear", "lora_alpha", "lora_dropout"):
            c.ignore(key, "no adapter: LoRA settings apply only with adapter: lora or qlora")
        return
    kind = adapter.strip().lower()
    if kind not in ("lora", "qlora"):
        c.ignore("adapter", f"{adapter!r}: memplan models LoRA and QLoRA adapters only")
        c.warn(f"{c.path}: adapter {adapter!r} is not modelled; the estimate is a full fine-tune")
        return
    rank = c.integer("lora_r")
    if rank is None:
        raise c.error("lora_r", f"adapter {adapter} needs the LoRA rank (lora_r)")
    c.set("lora_rank", rank, "lora_r", note=f"adapter {adapter}")
    c.consult("adapter", "lora_rank")
    if c.boolean("lora_target_linear"):
        c.set("lora_targets", "all-linear", "lora_target_linear", note="every linear layer but the LM head (PEFT)")
    elif c.has("lora_target_modules"):
        raw = c.get("lora_target_modules")
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise c.error("lora_target_modules", f"expected module names, got {raw!r}")
        c.set("lora_targets", ",".join(names), "lora_target_modules")
    c.consult_all("lora_targets", "lora_target_linear", "lora_target_modules")
    alpha = c.get("lora_alpha", None)
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise c.error("lora_alpha", f"expected a number, got {alpha!r}")
        c.set("lora_alpha", float(alpha), "lora_alpha", note="scales the update; no memory effect")
    dropout = c.get("lora_dropout", None)
    if dropout is not None:
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise c.error("lora_dropout", f"expected a probability in [0, 1), got {dropout!r}")
        c.set("lora_dropout", float(dropout), "lora_dropout",
              note="PEFT keeps a dropped-out copy of each adapter's input when > 0" if dropout else "")
    if kind == "qlora" or four:
        c.set("quantize_base", "nf4", "load_in_4bit" if four else "adapter",
              note="bitsandbytes 4-bit NF4 (axolotl's bnb_4bit_quant_type default)")
    elif eight:
        c.set("quantize_base", "int8", "load_in_8bit", note="bitsandbytes LLM.int8")


def _recompute(c: Collector) -> None:
    raw = c.get("gradient_checkpointing", None)
    if raw in ("offload", "offload_disk"):
        c.set("recompute", "full", "gradient_checkpointing",
              note=f"{raw}: checkpointed layers, their inputs moved off the GPU")
        c.warn(f"{c.path}: gradient_checkpointing {raw}: the checkpoints live in CPU memory or on disk; memplan "
               "keeps them on the GPU (overestimates the activations)")
        return
    on = c.boolean("gradient_checkpointing")
    c.set("recompute", "full" if on else "none", "gradient_checkpointing", default=on is None,
          note="the HF model's gradient checkpointing: every decoder layer" if on else "")
    if c.get("activation_offloading", False) not in (False, None):
        c.warn(f"{c.path}: activation_offloading moves activations to CPU; memplan keeps them on the GPU")
    c.consult("activation_offloading", "recompute")


def _parallel(c: Collector) -> None:
    tp = c.integer("tensor_parallel_size")
    if tp:
        c.set("tp", tp, "tensor_parallel_size")
    key = "context_parallel_size" if c.has("context_parallel_size") else "sequence_parallel_degree"
    cp = c.integer(key)
    if cp:
        c.set("cp", cp, key, note="the sequence split over this many GPUs (ring attention)")
    c.consult_all("cp", "context_parallel_size", "sequence_parallel_degree")
    shard, replicate = c.integer("dp_shard_size"), c.integer("dp_replicate_size")
    c.consult_all("zero", "dp_shard_size", "dp_replicate_size", note="data-parallel sharding")
    if shard and replicate and replicate > 1:
        c.warn(f"{c.path}: dp_replicate_size {replicate} x dp_shard_size {shard} is HSDP: states are sharded over "
               f"{shard} GPUs, memplan shards them over all data-parallel GPUs")


def _precision(c: Collector, bf16, fp16) -> None:
    c.consult_all("precision", "bf16", "fp16", "bfloat16", "float16", "float32")
    if fp16:
        c.set("precision", "fp16-mixed", "fp16", note="axolotl loads the model in fp16 (cfg.torch_dtype) under the "
                                                      "HF Trainer's fp16 AMP")
    elif bf16 == "auto":
        c.default("precision", "bf16", "bf16", "bf16 'auto' = bf16 on Ampere or newer: the model loaded in bf16, "
                                              "weights, gradients and AdamW states bf16")
    elif bf16 or c.boolean("bfloat16"):
        c.set("precision", "bf16", "bf16" if bf16 else "bfloat16",
              note="the model loaded in bf16 (cfg.torch_dtype): weights, gradients and AdamW states bf16")
    elif c.boolean("float16"):
        c.warn(f"{c.path}: float16 (fp16 without AMP) has no memplan recipe; pass --precision")
    else:
        c.set("precision", "fp32", "bf16", note="bf16 false: the model loaded in fp32")
