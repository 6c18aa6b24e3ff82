"""Seconds per RL step: rollout (vLLM: the serving floor's engine-step model, perf/serving_time.py; transformers
generate: the decode roofline), scoring and update (the op walk, perf/time.py), weight sync and sleep/wake
transfers; tokens/s and GPU-hours per 1,000 steps."""
from __future__ import annotations

import math
from typing import Any

from memplan.answers.rl_phases import _weights_bytes
from memplan.results.rl import RLTime
from memplan.spec.workload import RLWorkload


def plan_time(parts: dict[str, Any], wl: RLWorkload, gpu) -> RLTime:
    from memplan.perf.comm import resolve_links
    from memplan.perf.time import estimate_time

    setup = parts["setup"]
    assumptions: list[str] = []
    opt_steps = wl.generation_steps / wl.gradient_accumulation_steps * wl.num_iterations if wl.online else 1.0
    t = estimate_time(setup, gpu, steps=1)  # the seconds (perf/), no memory verdict
    update = t.step_seconds * opt_steps
    fwd_share = 1 / 4 if wl.gradient_checkpointing else 1 / 3
    fwd = t.compute_seconds * fwd_share  # one forward over the optimizer step's micro-batches
    assumptions.append(f"update: the op walk of one optimizer step ({t.step_seconds:.3g} s) x {opt_steps:g} "
                       "steps per generation; a forward is 1/3 of its compute (1/4 with gradient checkpointing)")
    scoring = 0.0
    ref = wl.reference_kind
    if wl.online:
        passes = int(wl.old_logprob_pass) + int(ref in ("copy", "adapters-off")) + int(bool(wl.reward_model))
        scoring = passes * fwd * wl.generation_steps / wl.gradient_accumulation_steps
    elif ref in ("copy", "adapters-off"):
        update += fwd
    if parts.get("critic") is not None:
        ratio = parts["critic"].model.parameters.total / max(setup.model.parameters.total, 1)
        update += t.step_seconds * opt_steps * ratio
        assumptions.append(f"critic: its own optimizer step, the policy's time x {ratio:.2f} (parameters)")
    rollout = sync = sleep = 0.0
    eng = parts["engine"]
    links = resolve_links(gpu)
    w_bytes = _weights_bytes(setup, False)
    if wl.online and eng is not None and eng.roofline is not None:
        v = getattr(eng, "vllm", None)
        if v is not None:
            rollout, note = _vllm_rollout(eng, v, wl, gpu, parts.get("concurrency"))
            assumptions.append(note)
        else:
            r = eng.roofline
            # decode steps read the weights and a KV cache that grows from the prompt to prompt + completion: the
            # mean step is the roofline at the full context with half the completion's KV
            kv_full = r.decode_kv_bytes_per_step
            frac = (wl.prompt_tokens + wl.completion_tokens / 2) / wl.sequence
            mean_step = r.decode_step_seconds * (r.decode_bytes_per_step - kv_full * (1 - frac)) / max(
                r.decode_bytes_per_step, 1)
            rollout = r.prefill_seconds + wl.completion_tokens * mean_step
            assumptions.append(f"rollout: the decode roofline at batch {r.batch} (mean step {mean_step * 1e3:.3g} "
                               f"ms x {wl.completion_tokens} tokens) + prefill {r.prefill_seconds:.3g} s; every "
                               "completion runs to max_completion_length (an upper bound)")
            assumptions.append("transformers generate is launch-bound at small batch: the roofline is a lower "
                               "bound on its time")
        if wl.rollout.kind == "vllm-colocate":
            sync = 2 * w_bytes / (gpu.memory_bandwidth_gbps * 1e9)
            assumptions.append("weight sync (colocate): each parameter copied into vLLM's weights on the same GPU "
                               "(read + write at HBM bandwidth)")
            if wl.rollout.sleep_level == 1:
                sleep = 2 * w_bytes / (links.host.bandwidth_gbps * 1e9)
                assumptions.append(f"sleep level 1: vLLM weights to host and back over {links.host.name} "
                                   f"({links.host.bandwidth_gbps:g} GB/s) each step")
            elif wl.rollout.sleep_level == 2:
                assumptions.append("sleep level 2: weights re-pushed by the weight sync, KV re-allocated (no copy)")
        elif wl.rollout.kind == "vllm-server":
            sync = w_bytes / (links.intra.bandwidth_gbps * 1e9)
            assumptions.append(f"weight sync (server): the policy's weights broadcast over {links.intra.name} "
                               "(NCCL); overlap with training not assumed")
    step = rollout + scoring + update + sync + sleep
    if wl.online:
        completions = wl.generation_batch
        tokens = completions * wl.sequence
    else:
        completions = wl.per_device_train_batch_size * wl.gpus * wl.gradient_accumulation_steps
        tokens = completions * wl.sequence * (2 if wl.algorithm in ("dpo", "orpo") else 1)
    gpus = wl.gpus + (wl.rollout.gpus if wl.rollout.kind == "vllm-server" else 0)
    if wl.rollout.kind == "vllm-server" and wl.online:
        # the server generates while... nothing: TRL waits for the completions, then trains (no async overlap)
        assumptions.append("vllm-server: rollout and training alternate (TRL is synchronous); the rollout GPUs "
                           "idle during the update")
    return RLTime(rollout_seconds=rollout, scoring_seconds=scoring, update_seconds=update, sync_seconds=sync,
                  sleep_wake_seconds=sleep, step_seconds=step, optimizer_steps=opt_steps, completions=completions,
                  tokens=tokens, tokens_per_second=tokens / step if step else 0.0,
                  gpu_hours_per_1000_steps=1000 * step * gpus / 3600, gpus=gpus, assumptions=assumptions)


def _vllm_rollout(eng: Any, v: Any, wl: RLWorkload, gpu, concurrency: float | None) -> tuple[float, str]:
    """One engine's generation of its batch, step by step as vLLM schedules it: the serving floor's engine-step
    model (perf/serving_time.py StepCost.step: weights + KV read at the achieved bandwidth, FLOPs at the achieved
    tensor-core share, TP all-reduces, the per-step CPU overhead; efficiencies fitted on published serving
    benchmarks, tests/test_capacity.py, none on RL runs).  The batch runs at once up to max_num_seqs and what the KV
    blocks hold at the full sequence (else in waves); prompts prefill in chunks of max_num_batched_tokens; every
    completion decodes to max_completion_length at a mean context of prompt + completion / 2 (the step is linear in
    the context)."""
    from memplan.perf.serving_time import step_cost

    cost = step_cost(eng.setup, gpu, eng.weights, eng.kv_layers)
    batch = eng.roofline.batch
    held = max(1, min(v.max_num_seqs, int(concurrency if concurrency is not None else batch)))
    waves = max(1, math.ceil(batch / held))
    per_wave = batch / waves
    prompt, completion = wl.prompt_tokens, wl.completion_tokens
    prefill_tokens = per_wave * prompt
    chunks = max(1, math.ceil(prefill_tokens / max(v.max_num_batched_tokens, 1)))
    prefill = chunks * cost.step(0, 0.0, prefill=prefill_tokens / chunks, prompt=prompt)
    step = cost.step(per_wave, prompt + completion / 2)
    rollout = waves * (prefill + completion * step)
    note = (f"rollout: vLLM engine steps at batch {per_wave:g} (mean step {step * 1e3:.3g} ms x {completion} tokens; "
            f"{cost.eff.describe()}) + prefill {prefill:.3g} s in {chunks} chunk(s)"
            + (f", in {waves} waves (the KV blocks or max_num_seqs hold {held})" if waves > 1 else "")
            + "; every completion runs to max_completion_length (an upper bound)")
    return rollout, note
