"""What cannot fit, found cheaply: a lower bound on a layout's memory, and dominance between layouts.

The bound is the model states of the most loaded pipeline stage with the recipe's bytes per parameter and ZeRO's
sharding (the ZeRO paper's accounting, Rajbhandari et al. 2020 sec. 3.1; no activations, buffers or engine
extras such as Megatron's fp32 main gradients or DeepSpeed's fp32 gradient partition), so a layout whose bound
exceeds the GPU cannot fit and is dropped without the full estimate (memplan.memory.estimate), which runs only on
the best-ranked survivors.  Dominance: memory grows with the micro-batch and shrinks with more recomputation, all
else equal, so once a layout does not fit, every layout of its family (the same everything but micro-batch and
recomputation) with at least its micro-batch and at most its recomputation does not either.
"""
from __future__ import annotations

from memplan.perf.shards import StageParams
from memplan.perf.search.enumerate import RECOMPUTE_ORDER
from memplan.spec.layout import Layout
from memplan.spec.setup import TrainingSetup


def optimizer_bytes_per_param(setup: TrainingSetup) -> float:
    """Persistent optimizer-state bytes per parameter, floor (factored Adafactor state counted as zero)."""
    opt = setup.optimizer
    if opt.factored:
        return 0.0
    per = opt.state_bytes if opt.state_bytes is not None else setup.recipe.optimizer_states.bytes
    return opt.states * per


def state_bytes(setup: TrainingSetup) -> tuple[float, float, float]:
    """(weights, gradients, master + optimizer states) bytes per parameter of the recipe."""
    r = setup.recipe
    master = r.master_weights.bytes if r.master_weights else 0.0
    return r.weights.bytes, r.gradients.bytes, master + optimizer_bytes_per_param(setup)


def model_state_bound(setup: TrainingSetup, stages: list[StageParams], L: Layout,
                      per_param: tuple[float, float, float] | None = None) -> float:
    """Model-state bytes per GPU of the most loaded stage: a floor under the full estimate."""
    w, g, o = per_param or state_bytes(setup)
    if L.offload_optimizer != "none":
        o = g = 0.0  # ZeRO-Offload streams gradients to the CPU: count none on the GPU (a floor)
    if L.offload_params != "none":
        w = 0.0
    z = L.zero
    dp = L.gpus // (L.tp * L.pp * L.cp)
    edp = L.gpus // (L.pp * L.ep * (L.tp if L.etp is None else L.etp))
    dense = w / (dp if z >= 3 else 1) + g / (dp if z >= 2 else 1) + o / (dp if z >= 1 else 1)
    expert = w / (edp if z >= 3 else 1) + g / (edp if z >= 2 else 1) + o / (edp if z >= 1 else 1)
    ends = _extremes(stages)
    if ends is not None:  # dense models: the stage with the most parameters
        return ends * dense
    return max(s.dense * dense + s.expert * expert for s in stages)


_EXTREMES: dict[int, tuple] = {}


def _extremes(stages: list[StageParams]) -> float | None:
    """The largest stage's dense parameters when no stage holds experts (cached per stage list)."""
    got = _EXTREMES.get(id(stages))
    if got is None or got[0] is not stages:
        dense_only = not any(s.expert for s in stages)
        got = (stages, max(s.dense for s in stages) if dense_only else None)
        if len(_EXTREMES) > 4096:
            _EXTREMES.clear()
        _EXTREMES[id(stages)] = got
    return got[1]


def family(L: Layout) -> tuple:
    """Everything but micro-batch, accumulation and recomputation."""
    return (L.gpus, L.tp, L.pp, L.cp, L.ep, L.etp, L.sequence_parallel, L.virtual_stages, L.first_stage_layers,
            L.last_stage_layers, L.zero, L.offload_optimizer, L.offload_params)


class Dominance:
    """Remembers the layouts that did not fit, per family."""

    def __init__(self):
        self.failed: dict[tuple, list[tuple[int, int]]] = {}

    def dominated(self, L: Layout) -> bool:
        level = RECOMPUTE_ORDER.index(L.recompute)
        return any(mb <= L.micro_batch and lv >= level for mb, lv in self.failed.get(family(L), ()))

    def record_failure(self, L: Layout) -> None:
        self.failed.setdefault(family(L), []).append((L.micro_batch, RECOMPUTE_ORDER.index(L.recompute)))
