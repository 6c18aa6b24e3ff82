"""The split that fits: single changes of the RL setup (least intrusive first), then pairs, each evaluated whole."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memplan.errors import MemplanError
from memplan.results.rl import RLOption
from memplan.spec.workload import RLWorkload, RolloutEngine


def _search_space(wl: RLWorkload) -> list[dict[str, Any]]:
    """Single changes, least intrusive first (the engine's knobs, then the batch, then memory savers that cost time,
    then what changes the training itself, then more GPUs), then pairs of them in that order."""
    one: list[dict[str, Any]] = []
    if wl.online and wl.rollout.kind == "vllm-colocate":
        if wl.rollout.sleep_level == 0:
            one += [{"sleep_level": 2}, {"sleep_level": 1}]
        for u in (0.25, 0.2, 0.4, 0.5, 0.6, 0.7):
            if abs(u - wl.vllm_utilization) > 1e-6:
                one.append({"gpu_memory_utilization": u})
        # vllm_tensor_parallel_size: the engine's weights split over the ranks of a TP group (TRL colocate)
        one += [{"vllm_tp": t} for t in (2, 4, 8) if t > wl.rollout.tp and t <= min(wl.gpus, wl.gpus_per_node)
                and wl.gpus % t == 0]
    b = wl.per_device_train_batch_size
    while b > 1:
        b //= 2
        ga = wl.gradient_accumulation_steps * (wl.per_device_train_batch_size // b)
        if not wl.online or (b * wl.gpus * ga) % wl.num_generations == 0:
            one.append({"per_device_train_batch_size": b, "gradient_accumulation_steps": ga})
    if not wl.gradient_checkpointing:
        one.append({"gradient_checkpointing": True})
    if wl.model_dtype == "float32":
        one.append({"model_dtype": "bfloat16"})
    if wl.gpus > 1:
        one += [{"zero": z} for z in (1, 2, 3) if z > wl.zero]
    if wl.policy == "full":
        one += [{"policy": "lora"}, {"policy": "qlora"}]
    if wl.online and wl.rollout.kind != "vllm-server":
        one += [{"rollout": "vllm-server", "rollout_gpus": k, "sleep_level": 0, "gpu_memory_utilization": 0.9}
                for k in (1, 2, 4, 8)]
    pairs = []
    for i, a in enumerate(one):
        for c in one[i + 1:]:
            if not set(a) & set(c):
                pairs.append({**a, **c})
    return one + pairs


def _apply(wl: RLWorkload, change: dict[str, Any]) -> RLWorkload:
    data = wl.model_dump()
    ro = data.pop("rollout")
    for k, v in change.items():
        if k == "rollout":
            ro["kind"] = v
        elif k == "rollout_gpus":
            ro["gpus"] = v
        elif k in ("sleep_level", "gpu_memory_utilization"):
            ro[k] = v
        elif k == "vllm_tp":
            ro["tp"] = v
        else:
            data[k] = v
    if ro["kind"] != "vllm-colocate":
        ro["sleep_level"] = 0
    return RLWorkload(rollout=RolloutEngine(**ro), **data)


def _describe(change: dict[str, Any]) -> str:
    if change.get("rollout") == "vllm-server":
        change = {k: v for k, v in change.items() if k != "sleep_level"}
    return ", ".join(f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else
                     (f"--{k.replace('_', '-')}" if v else f"--no-{k.replace('_', '-')}") for k, v in change.items())


def search(model: Any, gpu, wl: RLWorkload, extra: dict[str, Any], evaluate: Callable[..., Any],
           kernels: str = "cuda", limit: int = 120) -> list[RLOption]:
    """Every change of the search space evaluated by `evaluate` (answers/rl.py evaluate); bad combinations (a
    MemplanError) are skipped."""
    out: list[RLOption] = []
    for change in _search_space(wl)[:limit]:
        try:
            w2 = _apply(wl, change)
            p = evaluate(model, gpu, w2, extra, kernels)
        except MemplanError:
            continue
        out.append(RLOption(change=_describe(change), changes=change, dimensions=len(change), fits=bool(p.fits),
                            required=p.required, peak_phase=p.peak_phase,
                            step_seconds=p.time.step_seconds if p.time else None))
    return out
