"""The HF Trainer's TrainingArguments as JSON (`TrainingArguments.to_json_string()`, or a hand-written file that
HfArgumentParser.parse_json_file reads): read it into setup keywords.

Fields and defaults are transformers 5.24's training_args.py: per_device_train_batch_size 8,
gradient_accumulation_steps 1, bf16/fp16 False, optim "adamw_torch_fused" (torch >= 2.8), gradient_checkpointing
(alias of activation_checkpointing), deepspeed (a path or the settings; the Trainer fills its "auto" values from
these arguments: integrations/deepspeed.py trainer_config_process), fsdp + fsdp_config (`_process_fsdp_args`).

Precision: bf16/fp16 are torch.autocast over the weights as the script loaded them.  transformers 5 loads a
checkpoint in its own dtype by default (from_pretrained dtype="auto"), bf16 for today's models, so bf16=True is
memplan's pure bf16 recipe (weights, gradients and torch AdamW's states in bf16); fp16=True needs fp32 weights
(GradScaler refuses fp16 gradients), so amp-fp16.  Under DeepSpeed the ds_config decides (bf16-mixed).
"""
from __future__ import annotations

import memplan.setupfiles._fsdp as _fsdp
import memplan.setupfiles.deepspeed as deepspeed
from memplan.setupfiles._collect import Collector

# transformers training_args.py OptimizerNames -> (memplan optimizer, optimizer_impl or None)
LEGACY_OPTIM = {"adamw_hf"}  # transformers < 5: transformers.AdamW, a per-parameter loop
OPTIM = {
    "adamw_torch": ("adamw", "foreach"), "adamw_torch_fused": ("adamw", "fused"), "adamw_hf": ("adamw", "for-loop"),
    "adamw_bnb_8bit": ("adamw-8bit", None), "adamw_8bit": ("adamw-8bit", None), "paged_adamw_8bit": ("adamw-8bit", None),
    "paged_adamw_32bit": ("adamw", None), "adafactor": ("adafactor", None), "sgd": ("sgd", "foreach"),
    "lion_32bit": ("lion", None), "paged_lion_32bit": ("lion", None),
}
FSDP_WORDS = {"full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2", "offload", "auto_wrap"}

REASONS = {key: "a hyper-parameter, logging, evaluation or data-loading setting" for key in (
    "output_dir", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_steps", "logging_steps", "logging_strategy", "save_steps", "save_strategy", "eval_strategy", "eval_steps", "seed",
    "report_to", "run_name", "dataloader_num_workers", "per_device_eval_batch_size", "save_total_limit")}
REASONS.update({"torch_compile": "torch.compile: memplan models eager kernels",
                "tf32": "TF32 matmuls change speed, not memory",
                "gradient_checkpointing_kwargs": "use_reentrant and the like do not change what is saved",
                "activation_checkpointing_kwargs": "use_reentrant and the like do not change what is saved"})


def optimizer(c: Collector, key: str) -> None:
    """An HF `optim` name (also axolotl's `optimizer`)."""
    name = c.text(key)
    if name is None:
        c.default("optimizer", "adamw", key, "TrainingArguments.optim defaults to adamw_torch_fused (torch >= 2.8)")
        c.default("optimizer_impl", "fused", key, "adamw_torch_fused: torch.optim.AdamW(fused=True)")
        return
    known = OPTIM.get(name.strip().lower())
    if known is None:
        c.ignore(key, f"no memplan optimizer for {name!r}; pass --optimizer")
        c.warn(f"{c.path}: {key} {name!r} has no memplan counterpart; the states follow --optimizer (default adamw)")
        return
    c.set("optimizer", known[0], key, note=f"{name}" + (" (bitsandbytes, paged)" if name.startswith("paged") else ""))
    if known[1]:
        c.set("optimizer_impl", known[1], key)


def read(c: Collector) -> None:
    micro = c.integer("per_device_train_batch_size")
    c.set("micro_batch", micro or 8, "per_device_train_batch_size", default=micro is None,
          note="" if micro else "TrainingArguments default 8")
    accum = c.integer("gradient_accumulation_steps")
    c.set("grad_accum", accum or 1, "gradient_accumulation_steps", default=accum is None)
    optimizer(c, "optim")
    ckpt_key = "activation_checkpointing" if c.has("activation_checkpointing") else "gradient_checkpointing"
    ckpt = c.boolean(ckpt_key)
    c.set("recompute", "full" if ckpt else "none", ckpt_key, default=ckpt is None,
          note="model.gradient_checkpointing_enable(): every decoder layer checkpointed" if ckpt else "")
    c.consult_all("recompute", "activation_checkpointing", "gradient_checkpointing")
    bf16, fp16 = c.boolean("bf16"), c.boolean("fp16")
    if bf16 and fp16:
        raise c.error("bf16", "bf16 and fp16 are both true; the Trainer accepts one")
    if c.has("deepspeed"):
        auto = {"train_micro_batch_size_per_gpu": micro or 8, "gradient_accumulation_steps": accum or 1,
                "bf16.enabled": bool(bf16), "fp16.enabled": bool(fp16)}
        deepspeed.read_referenced(c, "deepspeed", auto=auto, auto_source="TrainingArguments")
        c.consult_all("precision", "bf16", "fp16", note="fills the DeepSpeed config's 'auto'")
    else:
        _precision(c, bf16, fp16)
        fsdp = c.get("fsdp", None)
        if fsdp not in (None, False, "", []):
            _fsdp_args(c, fsdp)
        else:
            c.consult_all("engine", "fsdp", "fsdp_config", note="FSDP is off")
            c.set("engine", "plain", "fsdp", note="no deepspeed or fsdp: the Trainer wraps the model in DDP")
            c.set("zero", 0, "fsdp", note="DDP: every GPU holds all the states")
    c.finish(REASONS)


def _precision(c: Collector, bf16, fp16) -> None:
    if bf16:
        c.set("precision", "bf16", "bf16", note="autocast over weights loaded in bf16 (from_pretrained dtype='auto'); "
              "weights loaded in fp32 make it --precision amp-bf16")
    elif fp16:
        c.set("precision", "amp-fp16", "fp16", note="fp16 autocast + GradScaler over fp32 weights")
    else:
        c.consult_all("precision", "bf16", "fp16", note="both off")
        c.warn(f"{c.path}: bf16 and fp16 are off: the run trains in the dtype the script loads the model in "
               "(--precision bf16 for a bf16 checkpoint loaded as is, fp32 if loaded in fp32)")


def _fsdp_args(c: Collector, fsdp) -> None:
    """fsdp: true / "full_shard auto_wrap offload" / [..] (legacy), with fsdp_config (its keys with or without the
    fsdp_ prefix, or a path to a JSON file)."""
    cfg = c.get("fsdp_config", None)
    if isinstance(cfg, str):
        import os
        from pathlib import Path

        import memplan.setupfiles._source as _source

        # os.path.exists: False (not an OSError) for a name the OS refuses; _source.load then says what is wrong
        beside = Path(c.path).parent / cfg
        path = beside if not Path(cfg).is_absolute() and os.path.exists(beside) else Path(cfg)
        data, _ = _source.load(path)
        sub = Collector(str(path), data)
        _fsdp.read(sub, "", source="the HF Trainer")
        sub.finish()
        c.consult("fsdp_config", "engine", f"FSDP settings in {path}")
        c.merge(sub)
    elif isinstance(cfg, dict):
        _fsdp.read(c, "fsdp_config", source="the HF Trainer")
    else:
        _fsdp.read(c, "fsdp_config", cfg={}, source="the HF Trainer")
    if isinstance(fsdp, bool):
        c.consult("fsdp", "engine")
        return
    words = fsdp.split() if isinstance(fsdp, str) else list(fsdp) if isinstance(fsdp, list) else None
    if words is None or not all(isinstance(w, str) for w in words) or not set(w.lower() for w in words) <= FSDP_WORDS:
        raise c.error("fsdp", f"expected true or words from {', '.join(sorted(FSDP_WORDS))}, got {c.show(fsdp)}")
    for word in (w.lower() for w in words):
        if word in _fsdp.STRATEGIES and c.is_default("zero"):  # fsdp_config's own setting wins (setdefault)
            zero = _fsdp.STRATEGIES[word]
            c.set("zero", zero, "fsdp", note=f"{word} = ZeRO-{zero}" if zero else "no_shard = DDP")
            if word in _fsdp.HYBRID:
                c.warn(f"{c.path}: fsdp {word}: sharded within a node only; memplan shards over every data-parallel GPU")
        elif word == "offload":
            note = "CPUOffload: parameters and gradients on CPU, the optimizer steps there"
            c.set("offload_params", "cpu", "fsdp", note=note)
            c.set("offload_optimizer", "cpu", "fsdp", note=note)
    c.consult("fsdp", "zero")
