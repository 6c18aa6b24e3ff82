"""Assembles a MemoryEstimate: model states, then the step's peak (activations, temporaries), overheads, verdict.

This is the seam between the pieces of the analytic model; each piece lives in its own module:
  layout.py       parameters per GPU after TP/PP
  states.py       weights, gradients, master weights, optimizer states; ZeRO sharding and offload
  activations.py  saved activations and transients from the architecture and an implementation profile
  timeline.py     the step as phases -> the peak and when it happens (activations, logits, temporaries)
  overheads.py    CUDA context, workspaces, allocator reserve, communication buffers
  calibration.py  an optional measured run that corrects the activation figure for one setup family
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from memplan.memory.implementations import Kernels
from memplan.memory.overheads import allocator_reserve, overhead_components
from memplan.memory.states import model_states
from memplan.memory.timeline import step_timeline
from memplan.results.memory import MemoryEstimate, PerGPU
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup

if TYPE_CHECKING:
    from memplan.memory.calibration import Calibration

MODEL_STATE_CATEGORIES = ("weights", "gradients", "master_weights", "optimizer_states")


def estimate_memory(setup: TrainingSetup, gpu: GPUSpec | None = None, *, calibration: "Calibration | None" = None,
                    kernels: Kernels = "cuda") -> MemoryEstimate:
    """The peak memory of one training step of `setup` on one GPU, when it happens, and whether it fits `gpu`.

    `kernels`: "cuda" (default: what a GPU run keeps) or "cpu" (PyTorch's CPU kernels, which keep dropout masks
    and norm statistics in the input dtype: used to compare with CPU/fake-tensor measurements).
    `calibration`: a measured run (memplan profile --out) whose activation ratio scales this estimate's."""
    states = model_states(setup)
    per_gpu = PerGPU()
    for cat in MODEL_STATE_CATEGORIES + ("gathered_parameters",):
        setattr(per_gpu, cat, states.gpu_bytes(cat))
    per_gpu.model_states = sum(getattr(per_gpu, c) for c in MODEL_STATE_CATEGORIES)

    timeline = step_timeline(setup, states, kernels)
    notes = states.notes + timeline.notes
    phases = timeline.phases
    if calibration is not None:
        phases, note = calibration.apply(setup, phases)
        notes.append(note)
    peak = max(phases, key=lambda ph: ph.total)
    per_gpu.peak_allocated = peak.total
    per_gpu.activations = peak.bytes.get("activations", 0)
    per_gpu.temporaries = peak.bytes.get("temporaries", 0)
    if timeline.activations is not None:
        per_gpu.saved_activations = timeline.activations.saved

    overheads = overhead_components(setup, gpu, states) + [allocator_reserve(per_gpu.peak_allocated)]
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
        timeline=phases,
        notes=notes,
    )
    if gpu is not None:
        est.gpu = gpu.name
        est.gpu_memory = gpu.memory_bytes
        est.headroom = gpu.memory_bytes - per_gpu.required
        est.fits = est.headroom >= 0
    return est
