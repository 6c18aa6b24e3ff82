"""The Python API's keywords checked for their type before anything reads them (issue 18: "API types").

The CLI's click types (memplan/cli/types.py) check every flag; the API passes what a caller gives, and a value of
the wrong type reached code that assumed the flag's type: `precision=1.5` failed in `.lower()`, `lora_targets=[..]`
in a set, `causal_flops="x"` in a pydantic model of the result (a ValidationError traceback).  `check` refuses
such a value in one MemplanError that names the keyword (not the CLI flag) and says what it must be; a whole
float (8.0) is taken as the integer.  Ranges stay with the code that knows them (Layout, Workload, the readers).
"""
from __future__ import annotations

import math
import os
from typing import Any

from memplan.errors import MemplanError

MAX_INT = 1 << 50  # above every bound a keyword has (Layout, Workload, cli/types.py BOUNDS); past it, int -> float
#                    conversions (10**400) overflow

TEXT = {"precision", "optimizer", "weights_dtype", "grads_dtype", "master_dtype", "states_dtype", "lora_targets",
        "quantize_base", "mlp", "norm", "kv_cache_dtype", "kv_dtype", "quantization", "vllm_version",
        "vllm_entrypoint", "engine", "attention", "recompute", "offload_optimizer", "offload_params", "overlap",
        "execution", "interconnect", "internode", "by", "implementation", "optimizer_impl", "mode"}
PATHS = {"system", "measured", "calibration"}
WHOLE = {"layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "max_positions", "experts", "top_k",
         "lora_rank", "batch", "context", "prompt", "output", "prefill_chunk", "max_model_len", "max_num_seqs",
         "max_num_batched_tokens", "block_size", "int4_group", "gpus", "gpus_per_node", "tp", "pp", "cp", "ep",
         "etp", "micro_batch", "grad_accum", "seq", "virtual_stages", "first_stage_layers", "last_stage_layers",
         "zero", "top", "max_gpus", "steps", "global_batch"}
# the whole numbers that may be 0 (every other one is at least 1, as the CLI's types say)
ZERO_OK = {"zero", "output", "first_stage_layers", "last_stage_layers", "experts"}
REAL = {"lora_alpha", "lora_dropout", "gpu_memory_utilization", "tokens", "mfu", "achieved_tflops", "kernel_scale",
        "price", "cpu_bandwidth", "cpu_bandwidth_gbps"}
FLAGS = {"tied", "sequence_parallel", "enforce_eager", "enable_expert_parallel", "causal_flops", "causal",
         "min_gpus", "scale", "reference", "max_seq", "max_batch", "max_context", "pin_memory"}


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("inf" if value > 0 else "-inf")
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} of {len(text):,} characters"


def check(kwargs: dict[str, Any], whole: frozenset[str] | set[str] = frozenset(),
          flags: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """`kwargs` with each known keyword's value checked (None = not given, left alone); `whole`/`flags` override
    the kind of a keyword in one function (plan's max_micro_batch is a number, estimate's a yes/no)."""
    out = dict(kwargs)
    for key, value in kwargs.items():
        if value is None:
            continue
        kind = "whole" if key in whole else "flag" if key in flags else (
            "whole" if key in WHOLE else "real" if key in REAL else "flag" if key in FLAGS else
            "text" if key in TEXT else "path" if key in PATHS else None)
        if kind == "whole":
            out[key] = _whole(key, value, 0 if key in ZERO_OK else 1)
        elif kind == "real":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MemplanError(f"keyword {key} must be a finite number, got {_show(value)}")
        elif kind == "flag":
            if not isinstance(value, bool):
                raise MemplanError(f"keyword {key} must be True or False, got {_show(value)}")
        elif kind == "text":
            if not isinstance(value, str):
                raise MemplanError(f"keyword {key} must be a string, got {_show(value)}")
        elif kind == "path":
            if not isinstance(value, (str, os.PathLike)):
                raise MemplanError(f"keyword {key} must be a file path, got {_show(value)}")
    return out


def _whole(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MemplanError(f"keyword {key} must be a whole number, got {_show(value)}")
    if value < minimum:
        raise MemplanError(f"keyword {key} must be at least {minimum}, got {value}")
    if abs(value) > MAX_INT:
        raise MemplanError(f"keyword {key} must be at most {MAX_INT:,}, got a number of {len(str(abs(value)))} "
                           "digits")
    return value


__all__ = ["check"]
