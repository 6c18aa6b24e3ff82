"""Flag combinations that mean nothing: refused with one line before any work, never silently ignored."""
from __future__ import annotations

from memplan.errors import MemplanError


def check_flag_combinations(training: dict, lora: dict | None = None, pp_searched: bool = False) -> None:
    """`training`: the training-setup flags (memplan.cli.options names); `lora`: estimate's LoRA flags.

    `pp_searched`: plan searches the pipeline size when --pp is not given, so interleaving can apply there.
    """
    stages, pp = training.get("virtual_stages") or 1, training.get("pp") or 1
    if stages > 1 and pp == 1 and not pp_searched:
        raise MemplanError(f"--virtual-stages {stages} needs --pp 2 or more: interleaved 1F1B splits each pipeline "
                           "rank's layers into model chunks, and with --pp 1 there is no pipeline")
    lora = lora or {}
    if lora.get("lora_targets") and lora.get("lora_rank") is None:
        raise MemplanError("--lora-targets needs --lora-rank R (e.g. --lora-rank 16): without a rank there are "
                           "no adapters to place")
