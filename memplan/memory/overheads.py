"""Memory outside the step's tensors: CUDA context, library workspaces, allocator reserve, communication buffers.

Each line is a Component with its assumption; the figures are data (profiles/overheads/cuda.json, by GPU
generation).  `required` = peak_allocated + these lines is what is compared with the GPU's memory.
"""
from __future__ import annotations


import memplan.engines as engines
from memplan.catalog import data_table
from memplan.memory.states import ModelStates
from memplan.results.memory import Component
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup

MIB = 1024 * 1024


def overhead_table() -> dict:
    return data_table("overheads", "cuda")  # profiles/overheads/cuda.json


def overhead_components(setup: TrainingSetup, gpu: GPUSpec | None, states: ModelStates | None = None,
                        peak_allocated: int = 0) -> list[Component]:
    t = overhead_table()
    gen_name = gpu.generation if gpu is not None and gpu.generation in t["generations"] else "default"
    gen = t["generations"][gen_name]
    where = gpu.name if gpu is not None else "no --gpu given: generic"
    out: list[Component] = []
    if gpu is not None and gpu.context_bytes:
        out.append(Component(name="CUDA context + libraries", category="overheads", bytes=gpu.context_bytes,
                             note=f"{gpu.name} profile's measured context_bytes"))
    else:
        out.append(Component(name="CUDA context + libraries", category="overheads", bytes=gen["context_mib"] * MIB,
                             note=f"assumed for {gen_name} ({where}): {t['context_source']}"))
    # the workspace comes from the caching allocator: torch.cuda.max_memory_allocated counts it, so it is part of
    # peak_allocated (a buffer), not an overhead outside tensors (c10/cuda/CUDACachingAllocator.cpp; the GPU check
    # measures allocated bytes beyond every tracked tensor: scripts/gpu_check.py)
    out.append(Component(name="cuBLAS workspace", category="buffers", bytes=gen["cublas_workspace_kib"] * 1024,
                         note=t["cublas_workspace_source"]))
    p = setup.layout
    groups = [name for name, size in (("data", p.dp), ("tensor", p.tp), ("pipeline", p.pp), ("context", p.cp),
                                      ("expert", p.ep)) if size > 1]
    if groups:
        out.append(Component(name="NCCL buffers", category="overheads",
                             bytes=len(groups) * t["nccl_mib_per_communicator"] * MIB,
                             note=f"{len(groups)} process group(s) ({', '.join(groups)}): {t['nccl_source']}"))
    if states is not None and p.dp > 1:
        grads = states.gpu_bytes("gradients")
        # each engine's data-parallel buffers (memplan/engines/<engine>.py comm_buffers)
        for name, nbytes, note in engines.MODULES[p.engine].comm_buffers(grads, states.local.params, p.zero, t):
            out.append(Component(name=name, category="buffers", bytes=nbytes, note=note))
    return out


def allocator_reserve(peak_allocated: int) -> Component:
    t = overhead_table()
    frac = t["allocator_reserve_fraction"]
    return Component(name="allocator reserve (cached, fragmentation)", category="overheads",
                     bytes=int(peak_allocated * frac), note=f"{frac:.0%} of peak_allocated: {t['allocator_source']}")
