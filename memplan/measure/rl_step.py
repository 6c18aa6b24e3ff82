"""Measure one steady-state TRL step (GRPO or DPO) on the CPU with a tiny model built from a config, beside
memplan's RL estimate of the same setup.  Nothing is downloaded: the model is built from a config.json written
here, the tokenizer is a word-level one built in memory (one word = one token), transformers generate (no vLLM).

The step measured is the second optimizer step (the optimizer states exist; gradients were freed by zero_grad):
every live tensor storage on the CPU is counted (memplan.measure.tracker.StorageTracker) from the start of the step
to its end, with the phases TRL runs: rollout (generate), scoring (no-grad log-prob passes), forward/backward (the
policy's loss and backward, DPO's reference forward inside it), optimizer_step.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TinyModel:
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 256
    vocab: int = 2048
    family: str = "qwen2"

    def config(self) -> dict[str, Any]:
        arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[self.family]
        return {"model_type": self.family, "architectures": [arch], "hidden_size": self.hidden,
                "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads, "intermediate_size": self.ffn, "vocab_size": self.vocab,
                "max_position_embeddings": 4096, "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
                "torch_dtype": "bfloat16", "dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
                "pad_token_id": 0, "attention_dropout": 0.0}


@dataclass
class RLMeasurement:
    peak: int
    peak_phase: str
    phases: dict[str, int] = field(default_factory=dict)
    folder: str = ""


def _tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    words.update({f"w{i}": i for i in range(4, vocab)})
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>")


def _text(n: int, seed: int) -> str:
    return " ".join(f"w{4 + (seed * 7 + i * 13) % 1000}" for i in range(n))


def build_folder(tiny: TinyModel, folder: str) -> str:
    """Write config.json, random bf16 weights and the tokenizer to `folder` (a from_pretrained path)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    os.makedirs(folder, exist_ok=True)
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(tiny.config(), f)
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    _tokenizer(tiny.vocab).save_pretrained(folder)
    return folder


class _Phases:
    """Hooks that move the tracker through TRL's phases during the measured step."""

    def __init__(self, tracker) -> None:
        self.t = tracker
        self.active = False

    def set(self, name: str) -> None:
        if self.active and self.t.phase != name:
            self.t.set_phase(name)


def _callback(phases: _Phases, trainer, step: int):
    from transformers import TrainerCallback

    class Measure(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step != step:
                return
            t = phases.t
            for mdl in (trainer.model, getattr(trainer, "ref_model", None)):
                if mdl is None:
                    continue
                t.track(list(mdl.parameters()), "weights")
                t.track(list(mdl.buffers()), "weights")
            t.track_optimizer(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                              else trainer.optimizer)
            t.watch_gradients(trainer.model.parameters())
            t.__enter__()
            phases.active = True
            t.set_phase("rollout" if hasattr(trainer, "_generate") else "forward")

        def on_step_end(self, args, state, control, **kw):
            if phases.active:
                phases.active = False
                phases.t.__exit__(None, None, None)
                phases.t.remove_hooks()

    return Measure()


def _wrap(obj, name: str, before):
    orig = getattr(obj, name)

    def wrapped(*a, **k):
        before(*a, **k)
        return orig(*a, **k)

    setattr(obj, name, wrapped)


def _install(trainer, phases: _Phases) -> None:
    import torch

    if hasattr(trainer, "_generate"):
        _wrap(trainer, "_generate", lambda *a, **k: phases.set("rollout"))
        _wrap(trainer, "_get_per_token_logps_and_entropies",
              lambda *a, **k: phases.set("forward" if torch.is_grad_enabled() else "scoring"))
    else:
        _wrap(trainer, "compute_loss", lambda *a, **k: phases.set("forward"))
    _wrap(trainer.accelerator, "backward", lambda *a, **k: phases.set("backward"))

    def opt_hook(*a, **k):
        phases.set("optimizer_step")

    orig_create = trainer.create_optimizer

    def create(*a, **k):
        opt = orig_create(*a, **k)
        opt.register_step_pre_hook(lambda *x: opt_hook())
        return opt

    trainer.create_optimizer = create


def measure_trl_step(algorithm: str, tiny: TinyModel, *, prompt: int, completion: int, batch: int,
                     generations: int = 2, beta: float | None = None, lora_rank: int | None = None,
                     precompute: bool = False, gradient_checkpointing: bool = True, grad_accum: int = 1,
                     folder: str | None = None) -> RLMeasurement:
    """One measured TRL step on the CPU; `folder` (made if None) holds the model for the estimate to read."""
    import torch
    from datasets import Dataset

    from memplan.measure.tracker import StorageTracker

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    folder = folder or tempfile.mkdtemp(prefix="memplan-rl-")
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        build_folder(tiny, folder)
    peft = None
    if lora_rank:
        from peft import LoraConfig

        peft = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, task_type="CAUSAL_LM")
    common = dict(output_dir=os.path.join(folder, "out"), per_device_train_batch_size=batch, max_steps=2,
                  gradient_accumulation_steps=grad_accum,
                  report_to="none", use_cpu=True, bf16=True, gradient_checkpointing=gradient_checkpointing,
                  save_strategy="no", logging_steps=100, dataloader_num_workers=0, seed=0)
    tok = _tokenizer(tiny.vocab)
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        rows = 4 * batch * grad_accum
        ds = Dataset.from_dict({"prompt": [_text(prompt, i) for i in range(rows)]})
        args = GRPOConfig(num_generations=generations, max_completion_length=completion,
                          beta=0.0 if beta is None else beta,
                          generation_kwargs={"min_new_tokens": completion}, **common)
        trainer = GRPOTrainer(model=folder, reward_funcs=lambda completions, **k: [float(len(c)) for c in completions],
                              args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    elif algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        ds = Dataset.from_dict({"prompt": [_text(prompt, i) for i in range(4 * batch)]})
        args = RLOOConfig(num_generations=generations, max_completion_length=completion,
                          beta=0.05 if beta is None else beta,
                          generation_kwargs={"min_new_tokens": completion}, **common)
        trainer = RLOOTrainer(model=folder, reward_funcs=lambda completions, **k: [float(len(c)) for c in completions],
                              args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    elif algorithm == "dpo":
        from trl import DPOConfig, DPOTrainer

        rows = 4 * batch * grad_accum
        ds = Dataset.from_dict({"prompt": [_text(prompt, i) for i in range(rows)],
                                "chosen": [_text(completion, i + 1) for i in range(rows)],
                                "rejected": [_text(completion, i + 2) for i in range(rows)]})
        args = DPOConfig(max_length=prompt + completion + 2, beta=0.1 if beta is None else beta,
                         precompute_ref_log_probs=precompute, **common)
        trainer = DPOTrainer(model=folder, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    else:
        raise ValueError(f"algorithm {algorithm!r}: grpo, rloo or dpo")
    tracker = StorageTracker("cpu")
    phases = _Phases(tracker)
    _install(trainer, phases)
    trainer.add_callback(_callback(phases, trainer, step=1))
    trainer.train()
    per = {name: peak for name, (peak, _) in tracker.phase_peaks.items()}
    if os.environ.get("MEMPLAN_RL_DEBUG"):
        print({n: s for n, (p, s) in tracker.phase_peaks.items()}, trainer.model.dtype)
    return RLMeasurement(peak=tracker.peak, peak_phase=tracker.peak_phase or "", phases=per, folder=folder)


def estimate_beside(rec: dict[str, Any], config_path: str) -> dict[str, Any]:
    """memplan's estimate of a measured case (a record of benchmarks/rl/trl-cpu.jsonl) with the CPU kernels, without
    the overheads a CPU run has not (CUDA context, allocator reserve): per measured phase, the peak and its phase.
    The measured "forward" phase is the policy's forward and loss (DPO: with the reference forward inside it)."""
    from memplan.answers.rl import rl

    kw: dict[str, Any] = dict(algorithm=rec["algorithm"], per_device_train_batch_size=rec["batch"],
                              gradient_checkpointing=rec.get("gradient_checkpointing", True),
                              gradient_accumulation_steps=rec.get("grad_accum", 1),
                              prompt_length=rec["prompt"])
    if rec["algorithm"] in ("grpo", "rloo"):
        beta = rec.get("beta")
        kw.update(completion_length=rec["completion"], num_generations=rec["generations"],
                  beta=beta if beta is not None else (0.0 if rec["algorithm"] == "grpo" else 0.05))
    else:
        kw.update(max_length=rec["prompt"] + rec["completion"] + 1,
                  precompute_ref_log_probs=rec.get("precompute", False))
    if rec.get("lora_rank"):
        kw.update(policy="lora", lora_rank=rec["lora_rank"])
    p = rl(config_path, None, kernels="cpu", search_changes=False, **kw)
    o = p.overheads
    ph = {x.name: x.total - o for x in p.phases}
    m = {k: v - o for k, v in p.update_moments.items()}
    out = {"rollout": ph.get("rollout"), "scoring": ph.get("scoring"), "backward": m["backward"],
           "optimizer_step": m["optimizer_step"],
           "forward": max(m["loss"], m["forward"], ph.get("reference forward", 0))}
    out = {k: v for k, v in out.items() if v}
    peak_phase = max(out, key=lambda k: out[k])
    return {"phases": out, "peak": out[peak_phase], "peak_phase": peak_phase}
