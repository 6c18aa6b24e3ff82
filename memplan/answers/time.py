"""`memplan time`'s answer: the step, days and cost of a layout (perf/time.py, seconds) with the memory verdict
(memory/estimate.py, bytes) and, when it does not fit, the smallest change that would (hints.py).  Composed here,
above both floors: perf/ computes seconds and imports no verdict."""
from __future__ import annotations

import memplan.perf.time as perf_time
from memplan.results.time import TimeEstimate
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup


def estimate_time(setup: TrainingSetup, gpu: GPUSpec, *, with_memory: bool = True, **options) -> TimeEstimate:
    """perf.time.estimate_time(setup, gpu, **options) (the same keywords), then, `with_memory`, whether the layout
    fits the GPU (memory_required_bytes, fits) and the hint when it does not (fit_hint)."""
    est = perf_time.estimate_time(setup, gpu, **options)
    if with_memory:
        global_batch = options.get("global_batch")
        layout = perf_time.layout_for_batch(setup.layout, global_batch)  # the layout the time is for
        _memory_verdict(est, setup.model_copy(update={"layout": layout}), gpu, global_batch)
    return est


def _memory_verdict(est: TimeEstimate, setup: TrainingSetup, gpu: GPUSpec, global_batch: int | None) -> None:
    from memplan.memory.estimate import estimate_memory

    mem = estimate_memory(setup, gpu)
    est.memory_required_bytes, est.fits = mem.per_gpu.required, mem.fits
    if mem.fits is False:
        from memplan.hints import smallest_change

        L = setup.layout
        hint = smallest_change(setup, gpu)
        change = f"; {hint.change} would ({hint.why})" if hint else ""
        est.fit_hint = (f"DOES NOT FIT: this layout needs {mem.per_gpu.required / 2**30:,.2f} GiB per GPU of the "
                        f"{gpu.name}'s {gpu.memory_bytes / 2**30:,.2f} GiB{change}; `memplan plan {setup.model.name} "
                        f"--gpu {gpu.name} --gpus {L.gpus} --global-batch {L.global_batch} --seq {setup.seq}` "
                        "searches the layouts that fit")
