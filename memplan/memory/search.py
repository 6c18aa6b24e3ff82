"""The largest micro-batch, or the longest sequence, that fits a GPU with everything else fixed.

`required` grows monotonically with either (every activation term is a non-negative polynomial in b and s), so
a doubling search then a bisection finds the boundary in O(log n) estimates.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memplan.errors import MemplanError
from memplan.memory.estimate import estimate_memory
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup

if TYPE_CHECKING:
    from memplan.memory.calibration import Calibration

SEQ_CEILING = 1 << 22  # 4M tokens: beyond any context trained today; the search stops there


def largest_fitting(fits: Callable[[int], bool], ceiling: int) -> int:
    """The largest n in [1, ceiling] with fits(n), assuming fits is monotone; 0 when even 1 does not fit.

    Doubling until the first failure, then bisection: O(log n) calls (also used by the measured
    `memplan profile --find-max-batch`, where each call is a real step)."""
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= ceiling and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, ceiling + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _with_workload(setup: TrainingSetup, **changes) -> TrainingSetup:
    return setup.model_copy(update={"workload": setup.workload.model_copy(update=changes)})


def _with_layout(setup: TrainingSetup, **changes) -> TrainingSetup:
    return setup.model_copy(update={"layout": setup.layout.replace(**changes)})


def _fits(setup: TrainingSetup, gpu: GPUSpec, calibration) -> bool:
    return bool(estimate_memory(setup, gpu, calibration=calibration).fits)


def max_micro_batch(setup: TrainingSetup, gpu: GPUSpec, calibration: "Calibration | None" = None,
                    ceiling: int = 1 << 20) -> int:
    """The largest micro-batch (sequence, model, parallelism fixed) whose step fits `gpu`; 0 if none does."""
    if setup.model.architecture is None:
        raise MemplanError("--max-micro-batch needs an architecture (activations grow with the batch): use a "
                           "profile name or a config.json")
    return largest_fitting(lambda b: _fits(_with_layout(setup, micro_batch=b), gpu, calibration), ceiling)


def max_seq(setup: TrainingSetup, gpu: GPUSpec, calibration: "Calibration | None" = None) -> int:
    """The longest sequence (micro-batch fixed) whose step fits `gpu`; 0 if none does.

    Learned position embeddings cap it at the model's max_positions; rotary/ALiBi models are searched up to
    SEQ_CEILING (the answer may exceed what the model was trained for: that is the user's call)."""
    a = setup.model.architecture
    if a is None:
        raise MemplanError("--max-seq needs an architecture (activations grow with the sequence): use a profile "
                           "name or a config.json")
    ceiling = a.max_positions if a.embeddings.learned_positions else SEQ_CEILING
    return largest_fitting(lambda s: _fits(_with_workload(setup, seq=s), gpu, calibration), ceiling)
