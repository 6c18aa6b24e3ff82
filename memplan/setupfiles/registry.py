"""Which formats there are, how to tell them apart, and the three entry points: read, emit, write.

A format is one module with `read(collector)` and/or `emit(layout)`; adding one is adding it here.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memplan.errors import MemplanError, did_you_mean
import memplan.setupfiles._source as _source
import memplan.setupfiles.accelerate as accelerate
import memplan.setupfiles.axolotl as axolotl
import memplan.setupfiles.deepspeed as deepspeed
import memplan.setupfiles.hf_trainer as hf_trainer
import memplan.setupfiles.megatron as megatron
import memplan.setupfiles.torchtitan as torchtitan
from memplan.setupfiles._collect import Collector
from memplan.setupfiles.results import EmittedSetup, EngineLayout, SetupFileReading, SetupKeywords

READERS: dict[str, Callable[[Collector], None]] = {
    "deepspeed": deepspeed.read, "accelerate": accelerate.read, "torchtitan": torchtitan.read,
    "axolotl": axolotl.read, "hf-trainer": hf_trainer.read, "megatron": megatron.read,
}
EMITTERS: dict[str, Callable[[EngineLayout], EmittedSetup]] = {
    "deepspeed": deepspeed.emit, "accelerate": accelerate.emit, "torchtitan": torchtitan.emit,
    "megatron": megatron.emit,
}
ALIASES = {"ds": "deepspeed", "ds_config": "deepspeed", "hf": "hf-trainer", "trainer": "hf-trainer",
           "training_args": "hf-trainer", "transformers": "hf-trainer", "titan": "torchtitan",
           "megatron-lm": "megatron"}

# Keys only one format writes (from each module's sources).  A file matching none, or two, needs format=.
SIGNATURES: dict[str, set[str]] = {
    "accelerate": {"distributed_type", "compute_environment", "num_processes", "main_training_function"},
    "axolotl": {"base_model", "base_model_config", "datasets", "micro_batch_size", "sequence_len", "adapter",
                "lora_r", "lora_target_modules"},
    "deepspeed": {"zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size", "steps_per_print",
                  "zero_allow_untested_optimizer"},
    "hf-trainer": {"per_device_train_batch_size", "per_device_eval_batch_size", "optim", "eval_strategy",
                   "logging_strategy", "save_strategy"},
    "torchtitan": {"parallelism", "activation_checkpoint", "job", "lr_scheduler"},
}


def format_name(name: str, known: dict[str, Any]) -> str:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in known:
        raise MemplanError(did_you_mean(name, known, "config format"))
    return key


def detect_format(data: dict[str, Any]) -> str | None:
    """The one format whose signature keys the file has the most of; None when none or a tie."""
    scores = {fmt: len(keys & set(data)) for fmt, keys in SIGNATURES.items()}
    if isinstance(data.get("model"), dict) and "flavor" in data["model"]:
        scores["torchtitan"] += 2
    best = max(scores.values())
    winners = [f for f, s in scores.items() if s == best]
    return winners[0] if best and len(winners) == 1 else None


def read_setup_file(path: str | os.PathLike, format: str | None = None) -> SetupFileReading:
    """Read an engine's config file into setup keywords, with what was read from where and what was ignored."""
    fmt = format_name(format, READERS) if format else None
    path_text = str(path)
    text = _source.read_text_bounded(path)
    if fmt == "megatron" or (fmt is None and Path(path_text).suffix.lower() in (".sh", ".bash", ".slurm")):
        fmt, data = "megatron", {"argv": megatron.tokens(text, path_text)}
    else:
        data = _source.parse(path_text, text, _source.sniff_syntax(path_text, text))
        fmt = fmt or detect_format(data)
        if fmt is None:
            raise MemplanError(f"cannot tell which engine's config {path_text} is; name it: format= (or --format) "
                               + ", ".join(READERS))
    c = Collector(path_text, data)
    READERS[fmt](c)
    try:
        setup = SetupKeywords.model_validate(c.kwargs)
    except ValidationError as exc:  # a value out of range (torchrun --nproc_per_node 0 -> gpus 0): the first, plainly
        from memplan.field_errors import field_error_line

        raise MemplanError(field_error_line(exc, path_text)) from None
    return SetupFileReading(path=path_text, format=fmt, setup=setup, read=c.read, ignored=c.ignored,
                            warnings=c.warnings, files=c.files)


def emit_setup(layout: EngineLayout | dict[str, Any], format: str) -> EmittedSetup:
    """The layout in an engine's own format (text, a conventional file name, and what it cannot say)."""
    fmt = format_name(format, EMITTERS)
    if not isinstance(layout, EngineLayout):
        try:
            layout = EngineLayout.model_validate(layout)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise MemplanError(f"layout {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    emitted = EMITTERS[fmt](layout)
    if layout.recompute_every > 1 and fmt != "torchtitan":
        emitted.warnings.append(f"recompute every {layout.recompute_every}th layer: {fmt} has no such setting "
                                "(torchtitan's selective_ac_option does); written as full recompute of every layer")
    return emitted


def write_setup_file(path: str | os.PathLike, layout: EngineLayout | dict[str, Any], format: str,
                     force: bool = False, what: str = "--out") -> tuple[Path, EmittedSetup]:
    """Emit and write: memplan.outfiles.write_new_file (atomic, regular files only, nothing overwritten
    without force; `what` names the flag in its errors)."""
    from memplan.outfiles import resolve_target, write_new_file

    emitted = emit_setup(layout, format)
    resolve_target(path, force, what)  # refuse up front (write_new_file would keep the text under a free name)
    return write_new_file(path, emitted.text, force=force, what=what), emitted
