"""Memory outside PyTorch's tensors: CUDA context, library workspaces, allocator reserve, comm buffers.

v1: none counted yet (issue 3 adds them, each with its assumption).
"""
from __future__ import annotations

from memplan.results.memory import Component
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup


def overhead_components(setup: TrainingSetup, gpu: GPUSpec | None) -> list[Component]:
    return []
