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
from memplan.results.memory import LayerGroupSummary, MemoryEstimate, PerGPU, Phase
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
    a = setup.model.architecture
    if a is not None and setup.seq > a.max_positions:
        notes.append(f"sequence {setup.seq:,} exceeds the model's {a.max_positions:,} positions: memory is counted "
                     "as asked, but the model needs position extension (e.g. RoPE scaling) to train on it")
    phases = timeline.phases
    if calibration is not None:
        phases, note = calibration.apply(setup, phases)
        notes.append(note)
    # Communication buckets are tensors from the caching allocator, alive the whole step: they belong to
    # peak_allocated (torch.cuda.max_memory_allocated counts them), unlike the context or the allocator's reserve.
    found = overhead_components(setup, gpu, states)
    if kernels == "cpu":  # a CPU step (what CPU/fake measurements are compared with) has no cuBLAS workspace
        found = [c for c in found if c.name != "cuBLAS workspace"]
    buffers = [c for c in found if c.category == "buffers"]
    per_gpu.buffers = sum(c.bytes for c in buffers)
    if per_gpu.buffers:
        phases = [Phase(name=ph.name, bytes={**ph.bytes, "buffers": per_gpu.buffers},
                        total=ph.total + per_gpu.buffers) for ph in phases]
    peak = max(phases, key=lambda ph: ph.total)
    per_gpu.peak_allocated = peak.total
    per_gpu.activations = peak.bytes.get("activations", 0)
    per_gpu.temporaries = peak.bytes.get("temporaries", 0)
    if timeline.activations is not None:
        per_gpu.saved_activations = timeline.activations.saved

    overheads = [c for c in found if c.category != "buffers"] + [allocator_reserve(per_gpu.peak_allocated)]
    per_gpu.overheads = sum(c.bytes for c in overheads)
    per_gpu.required = per_gpu.peak_allocated + per_gpu.overheads
    per_gpu.total = per_gpu.required

    components = states.components + timeline.components + buffers + overheads
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
        assumed=setup.assumed,
        warnings=setup.warnings,
    )
    if a is not None:
        est.layers, est.objective = a.describe_layers(), a.head.objective
        est.layer_groups = layer_group_summaries(setup, timeline.activations)
        if timeline.activations is not None:
            est.activation_profile = timeline.activations.implementation
            if est.activation_profile.startswith("hf-"):  # traced from transformers' code at one release
                from memplan.memory.activations import implementation_for
                from memplan.versions import release_drift, traced_release

                prof = implementation_for(setup)
                drift = release_drift("transformers", traced_release(prof.traced_with, prof.description),
                                      prof.name)
                if drift:
                    est.warnings.append(drift)
    gqa_math = fp32_gqa_math_warning(setup, kernels)
    if gqa_math:
        est.warnings.append(gqa_math)
    if gpu is not None:
        est.gpu = gpu.name
        est.gpu_memory = gpu.memory_bytes
        est.headroom = gpu.memory_bytes - per_gpu.required
        est.fits = est.headroom >= 0
    return est


def layer_group_summaries(setup: TrainingSetup, acts) -> list[LayerGroupSummary]:
    """Per layer group: kind, count, parameters; per-layer activations where the group sits on the estimated
    stage (the first: Activations.groups lists that stage's layer kinds in order)."""
    m = setup.model.arch
    kept = {g.kind: g.kept for g in acts.groups} if acts is not None else {}
    out, first = [], 0
    for g in m.groups:
        lp = g.layer.parameters(m.hidden_size, m.module_names)
        at, mixer = g.layer.attn, g.layer.mixer
        out.append(LayerGroupSummary(first_layer=first, count=g.count, kind=g.layer.kind,
                                     attention=at.kind if at is not None else mixer.kind if mixer else "",
                                     window=at.window if at else None, window_kind=at.window_kind if at else "global",
                                     ffn="moe" if g.layer.ffn.moe else "dense", parameters_per_layer=lp.total,
                                     active_parameters_per_layer=lp.active,
                                     activations_per_layer=kept.get(g.layer.kind)))
        first += g.count
    return out


def fp32_gqa_math_warning(setup: TrainingSetup, kernels: Kernels) -> str | None:
    """fp32 attention with grouped KV heads on CUDA: the rows follow torch 2.13, whose memory-efficient sdpa kernel
    takes GQA; on older torch select_sdp_backend falls to the math path for it (flash has no fp32; the efficient
    kernel no GQA before 2.13 -- measure/cuda.py expected_sdpa_kernels, which the GPU check confirms), and the math
    path keeps each layer's fp32 attention probabilities, b x heads x s^2 x 4 B, that this estimate does not count.
    Said in one line with the figure, since it can decide whether the step fits."""
    a = setup.model.architecture
    w = setup.workload
    if a is None or kernels != "cuda" or w.attention != "sdpa" or setup.recipe.compute.value != "fp32":
        return None
    grouped = [layer.attn for layer, _ in a.kinds() if layer.attn is not None and layer.attn.kv_heads < layer.attn.heads]
    if not grouped:
        return None
    heads = max(at.heads for at in grouped)
    s, b, tp = setup.seq, setup.layout.micro_batch, setup.layout.tp
    per_layer = b * (heads // tp or 1) * s * s * 4
    return (f"fp32 sdpa with grouped KV heads: on torch < 2.13 CUDA runs the math path, which keeps {per_layer / 2**30:,.2f} "
            "GiB of fp32 attention probabilities per layer and micro-batch that this estimate (torch 2.13's "
            "memory-efficient kernel) does not count; use torch >= 2.13, bf16 (amp-bf16/bf16-mixed) or --attention "
            "eager to estimate that path")
