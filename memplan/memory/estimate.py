"""Assembles a MemoryEstimate: model states, then the step's peak (activations, temporaries), overheads, verdict.

This is the seam between the pieces of the analytic model; each piece lives in its own module:
  layout.py      parameters per GPU after TP/PP
  states.py      weights, gradients, master weights, optimizer states; ZeRO sharding and offload
  timeline.py    the step as phases -> the peak and when it happens (activations, logits, temporaries)
  overheads.py   CUDA context, workspaces, allocator reserve, communication buffers
"""
from __future__ import annotations

from memplan.memory.states import model_states
from memplan.memory.timeline import step_timeline
from memplan.memory.overheads import overhead_components
from memplan.results.memory import MemoryEstimate, PerGPU
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup

MODEL_STATE_CATEGORIES = ("weights", "gradients", "master_weights", "optimizer_states")


def estimate_memory(setup: TrainingSetup, gpu: GPUSpec | None = None, calibration=None) -> MemoryEstimate:
    states = model_states(setup)
    per_gpu = PerGPU()
    for cat in MODEL_STATE_CATEGORIES + ("gathered_parameters",):
        setattr(per_gpu, cat, states.gpu_bytes(cat))
    per_gpu.model_states = sum(getattr(per_gpu, c) for c in MODEL_STATE_CATEGORIES)

    timeline = step_timeline(setup, states)
    peak = max(timeline.phases, key=lambda ph: ph.total)
    per_gpu.peak_allocated = peak.total
    per_gpu.activations = peak.bytes.get("activations", 0)
    per_gpu.temporaries = peak.bytes.get("temporaries", 0)

    overheads = overhead_components(setup, gpu)
    per_gpu.overheads = sum(c.bytes for c in overheads)
    per_gpu.required = per_gpu.peak_allocated + per_gpu.overheads
    per_gpu.total = per_gpu.required

    components = states.components + timeline.components + overheads
    est = MemoryEstimate(
        model=setup.model.name,
        parameters=setup.model.parameters.total,
        parameters_exact=setup.model.parameters.exact,
        setup=setup,
        convention=states.convention,
        components=components,
        per_gpu=per_gpu,
        cpu=states.host("cpu"),
        nvme=states.host("nvme"),
        peak_phase=peak.name,
        timeline=timeline.phases,
        notes=states.notes + timeline.notes,
    )
    if gpu is not None:
        est.gpu = gpu.name
        est.gpu_memory = gpu.memory_bytes
        est.headroom = gpu.memory_bytes - per_gpu.required
        est.fits = est.headroom >= 0
    return est
