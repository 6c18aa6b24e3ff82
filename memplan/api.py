"""The Python API: the same pydantic results the CLI prints.

    >>> import memplan
    >>> est = memplan.estimate("llama-2-7b", gpu="a100-80gb", zero=3, gpus=8)
    >>> est.per_gpu.total, est.fits

Keyword arguments are the CLI flag names with '-' as '_' (precision, optimizer, gpus, tp, pp, zero,
offload_optimizer, offload_params, engine, micro_batch, seq, recompute, attention, ...).
"""
from __future__ import annotations

from memplan.results.memory import MemoryEstimate


def build_setup(model: str, **kwargs):
    """TrainingSetup from a model name/count/config path and CLI-style keyword arguments."""
    from memplan.setups import training_setup

    return training_setup(model, **kwargs)


def estimate(model: str, gpu: str | None = None, **kwargs) -> MemoryEstimate:
    """Memory estimate for training MODEL (profile name, parameter count or config.json path)."""
    from memplan.memory.estimate import estimate_memory
    from memplan.setups import resolve_gpu

    return estimate_memory(build_setup(model, **kwargs), resolve_gpu(gpu))
