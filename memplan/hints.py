"""What would fit: the smallest change to a training setup that does not fit its GPU.

A DOES NOT FIT verdict names one change a user can make, found by estimating candidate changes in order of how
little they change the run: first what costs only time (recomputation, a smaller micro-batch with more gradient
accumulation so the global batch stays), then sharding (ZeRO stages), then offload, then more GPUs.  Each
candidate is the full memory estimate (memory/estimate.py), so a hint never promises what the estimate refuses.
"""
from __future__ import annotations


from pydantic import BaseModel

from memplan.errors import MemplanError
from memplan.memory.estimate import estimate_memory
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup

MAX_GPU_DOUBLINGS = 10  # up to 1024x the GPUs: beyond that the run is another project


class Hint(BaseModel):
    change: str  # the flags that differ, as a user types them
    why: str
    required: int  # bytes per GPU with the change


MAX_TRIALS = 400  # full estimates a hint may cost (each ~1 ms)
# ... and layer groups estimated in all: an estimate walks the model's layer groups (runs of identical layers), so
# a Gemma 2/3 with thousands of alternating layers costs ~0.3 ms a group per trial: 400 trials of 5,000 groups
# took minutes.  Every published model has <= 64 groups and keeps its 400 trials.
MAX_GROUP_TRIALS = MAX_TRIALS * 64


def _options(setup: TrainingSetup) -> list[list[tuple[str, str, dict]]]:
    """Per dimension, its options from no change to the largest change: recomputation, micro-batch (gradient
    accumulation keeps the global batch), sharding/offload, GPU count."""
    p = setup.layout
    # from the most kept to the least: torchtitan's op-level SAC keeps fewer tensors than Megatron's selective
    # (engines/torchtitan.py), full keeps only each layer's input
    order = ("none", "selective", "selective-op", "full")
    start = order.index(p.recompute) + 1 if p.recompute in order else len(order) - 1
    recompute = [("", "", {})] + [(f"--recompute {rc}", "recompute activations in backward", {"recompute": rc})
                                  for rc in order[start:]]
    micro = [("", "", {})]
    mb = p.micro_batch
    while mb > 1:
        mb //= 2
        ga = p.grad_accum * (p.micro_batch // mb)
        micro.append((f"--micro-batch {mb} --grad-accum {ga}", "the same global batch in smaller micro-batches",
                      {"micro_batch": mb, "grad_accum": ga}))
    shard = [("", "", {})]
    top = 1 if p.pp > 1 else 3
    shard += [(f"--zero {z}", "shard more model states over the data-parallel ranks", {"zero": z})
              for z in range(p.zero + 1, top + 1)]
    if p.pp == 1:
        if p.offload_optimizer == "none":
            shard.append(("--zero 3 --offload-optimizer cpu", "optimizer states and master weights in CPU RAM",
                          {"zero": 3, "offload_optimizer": "cpu"}))
        if p.offload_params == "none":
            shard.append(("--zero 3 --offload-optimizer cpu --offload-params cpu", "all model states in CPU RAM",
                          {"zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}))
    gpus = [("", "", {})] + [(f"--gpus {p.gpus * 2 ** k}", "more GPUs to shard over", {"gpus": p.gpus * 2 ** k})
                             for k in range(1, MAX_GPU_DOUBLINGS + 1)]
    return [recompute, micro, shard, gpus]


def _combinations(setup: TrainingSetup) -> list[list[tuple[str, str, dict]]]:
    """Combinations of per-dimension options, fewest dimensions changed first, then the smallest changes."""
    dims = _options(setup)
    combos = []

    def walk(i: int, picked: list[tuple[int, tuple[str, str, dict]]]) -> None:
        if i == len(dims):
            combos.append(picked)
            return
        for rank, opt in enumerate(dims[i]):
            walk(i + 1, picked + [(rank, opt)])

    walk(0, [])
    combos.sort(key=lambda c: (sum(1 for r, _ in c if r), sum(r for r, _ in c)))
    return [[opt for r, opt in c if r] for c in combos[1:]]


def smallest_change(setup: TrainingSetup, gpu: GPUSpec) -> Hint | None:
    """The first combination of changes (see the module docstring) whose estimate fits `gpu`, or None."""
    groups = len(setup.model.architecture.groups) if setup.model.architecture is not None else 1
    budget = min(MAX_TRIALS, max(1, MAX_GROUP_TRIALS // max(1, groups)))
    for trial_no, combo in enumerate(_combinations(setup)):
        if trial_no >= budget:
            break
        fields: dict = {}
        for _, _, f in combo:
            fields.update(f)
        if "gpus" in fields and "zero" not in fields and setup.layout.zero == 0 and setup.layout.pp == 1:
            continue  # more GPUs without sharding only replicates the model: never the smallest change
        try:
            trial = setup.model_copy(update={"layout": setup.layout.replace(**fields)})
            est = estimate_memory(trial, gpu)
        except MemplanError:
            continue
        if est.fits:
            return Hint(change=" ".join(c for c, _, _ in combo), why="; ".join(w for _, w, _ in combo),
                        required=est.per_gpu.required)
    return None


def why_nothing_fits(setup: TrainingSetup, gpu: GPUSpec, what: str) -> str:
    """For a max-* search that found nothing: what alone already exceeds the GPU at the smallest size."""
    est = estimate_memory(setup.model_copy(update={"layout": setup.layout.replace(micro_batch=1)}), gpu)
    g = est.per_gpu
    cap = gpu.memory_bytes
    gib = 2 ** 30
    if g.model_states + g.gathered_parameters >= cap:
        alone = f"the model states alone ({g.model_states / gib:,.2f} GiB per GPU) exceed"
    else:
        alone = (f"at micro-batch 1 the step needs {g.required / gib:,.2f} GiB per GPU (model states "
                 f"{g.model_states / gib:,.2f}, activations {g.activations / gib:,.2f}, temporaries "
                 f"{g.temporaries / gib:,.2f}), over")
    hint = smallest_change(setup.model_copy(update={"layout": setup.layout.replace(micro_batch=1)}), gpu)
    tail = f"; try {hint.change}" if hint else ""
    return f"no {what} fits: {alone} the {gpu.name}'s {cap / gib:,.2f} GiB{tail}"
