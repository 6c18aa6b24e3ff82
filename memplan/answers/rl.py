"""An RL / preference-tuning plan composed from the floors: the policy update is memplan's training step
(memory/estimate.py estimate_memory at the RL sequence and micro-batch), with the loss's logits replaced by TRL's
fused LM head (answers/rl_memory.py); the colocated rollout engine is memplan's vLLM startup (memory/vllm.py); the
reference and reward forwards are no-grad forwards (the serving floor's workspace); time is the op walk
(perf/time.py) for scoring and update, and for the rollout the serving floor's engine-step model
(perf/serving_time.py; transformers generate: the decode roofline, perf/roofline.py).
Files: rl.py (this face), rl_phases.py (the phases), rl_memory.py (TRL's own buffers), rl_time.py, rl_search.py.

    >>> from memplan.answers.rl import rl
    >>> p = rl("qwen3-0.6b", "h100-sxm", algorithm="grpo", prompt_length=256, completion_length=1024)
    >>> p.peak_phase in {"rollout", "scoring", "update"}
    True

Phases, per training GPU, in the order TRL runs them (grpo_trainer.py _generate_and_score_completions, then
compute_loss per micro-batch; dpo_trainer.py _compute_loss):
  weight sync  (vLLM) the engine's weights woken, the policy's parameters loaded one at a time (a PEFT policy
           under ZeRO-3: gathered whole to merge the adapters)
  rollout  policy states (gradients freed by zero_grad) + reference/reward weights + the engine: transformers
           generate's DynamicCache and workspace, or the colocated vLLM's weights + KV block pool + CUDA graphs
           + non-torch memory (asleep: only the last two stay, level 1 moves the weights to host RAM)
  scoring  the same residents + one no-grad forward (old log-probs for importance sampling, the reference's) of
           per_device_train_batch_size sequences + the generation batch's ids and per-token log-probs
  update   the training step at seq = prompt + completion (DPO: 2 x batch, chosen + rejected, and the reference
           forward inside the loss while the policy's activations are held) + residents
"""
from __future__ import annotations

from typing import Any

from memplan.answers.rl_phases import _vllm_start_check, plan_memory
from memplan.answers.rl_search import search
from memplan.answers.rl_time import plan_time
from memplan.errors import MemplanError
from memplan.results.rl import RLPhase, RLPlan
from memplan.spec.workload import FRAMEWORK_NOTES, RLWorkload, RolloutEngine

ROLLOUT_KEYS = ("rollout", "rollout_gpus", "gpu_memory_utilization", "sleep_level", "vllm_tp", "vllm_version",
                "max_num_batched_tokens")
WORKLOAD_KEYS = tuple(k for k in RLWorkload.model_fields if k != "rollout")
TRAINING_PASS = ("precision", "attention", "optimizer", "optimizer_impl", "lora_targets", "tp", "pp")
RL_KEYS = (*WORKLOAD_KEYS, *ROLLOUT_KEYS, *TRAINING_PASS, "search")


def build_workload(**kw: Any) -> RLWorkload:
    """RLWorkload from CLI-style keywords (rollout settings flat: rollout=, rollout_gpus=, sleep_level=, ...)."""
    from pydantic import ValidationError

    from memplan.setups import one_line

    ro = {"kind": kw.pop("rollout", None), "gpus": kw.pop("rollout_gpus", None),
          "gpu_memory_utilization": kw.pop("gpu_memory_utilization", None), "sleep_level": kw.pop("sleep_level", None),
          "tp": kw.pop("vllm_tp", None), "vllm_version": kw.pop("vllm_version", None),
          "max_num_batched_tokens": kw.pop("max_num_batched_tokens", None)}
    if kw.get("algorithm") == "rloo" and kw.get("num_generations") is None:
        kw["num_generations"] = 2  # RLOOConfig's default (GRPO's is 8)
    try:
        engine = RolloutEngine(**{k: v for k, v in ro.items() if v is not None})
        return RLWorkload(rollout=engine, **{k: v for k, v in kw.items() if v is not None})
    except ValidationError as exc:
        raise MemplanError(one_line(exc)) from None


def evaluate(model: Any, gpu, wl: RLWorkload, extra: dict[str, Any], kernels: str = "cuda",
             with_time: bool = True) -> RLPlan:
    parts = plan_memory(model, gpu, wl, extra, kernels)
    setup = parts["setup"]
    phases: list[RLPhase] = parts["phases"]
    peak = max(phases, key=lambda p: p.total)
    eng = parts["engine"]
    v = getattr(eng, "vllm", None) if eng is not None else None
    starts, refusal = _vllm_start_check(parts, wl, gpu) if gpu is not None else (None, None)
    plan = RLPlan(model=setup.model.name, parameters=setup.model.parameters.total, workload=wl,
                  sequence=wl.sequence, reference=wl.reference_kind, phases=phases,
                  rollout_gpu_phase=parts["rollout_gpu_phase"], peak_phase=peak.name, required=peak.total,
                  update_moments=parts["moments"], overheads=parts["overheads"],
                  host_ram_per_node=parts["host_ram"], host_ram_note=parts["host_note"], vllm_starts=starts,
                  vllm_refusal=refusal, vllm_kv_pool=v.kv_cache_pool if v else None,
                  vllm_concurrency=v.max_concurrency if v else None, rollout_batch=parts["batch"],
                  notes=parts["notes"], warnings=list(parts["warnings"]) + list(setup.warnings))
    if v is not None:
        parts["concurrency"] = v.max_concurrency
        if v.starts and v.max_concurrency < (eng.batch or 0):
            plan.notes.append(f"the KV blocks hold {v.max_concurrency:.1f} sequences of {wl.sequence:,} tokens, the "
                              f"rollout batch is {eng.batch}: vLLM runs it in waves (slower, not an OOM)")
    if gpu is not None:
        plan.gpu, plan.gpu_memory = gpu.name, gpu.memory_bytes
        plan.headroom = gpu.memory_bytes - peak.total
        plan.fits = plan.headroom >= 0 and starts is not False
        if parts["rollout_gpu_phase"] is not None:
            plan.rollout_fits = bool(v.starts) if v is not None else None
            plan.fits = plan.fits and plan.rollout_fits is not False
        if with_time:
            plan.time = plan_time(parts, wl, gpu)
    plan.assumptions = _assumptions(wl, kernels)
    return plan


def _assumptions(wl: RLWorkload, kernels: str) -> list[str]:
    out = [FRAMEWORK_NOTES[wl.framework],
           f"policy: {wl.model_dtype} weights, gradients and AdamW states (TRL 1.16 loads a model path in float32 "
           "unless model_init_kwargs.dtype is set) under bf16 autocast (bf16=True); fused AdamW; gradients freed "
           "between steps (zero_grad set_to_none); the reference is loaded in the policy's dtype",
           "overheads (CUDA context, workspaces, allocator reserve) of the update step counted in every phase",
           "allocators alternating (vLLM's CuMemAllocator and torch's caching allocator): no fragmentation beyond "
           "the reserve is modelled; expandable_segments cannot be used while vLLM's allocator is active"]
    if wl.prompt_length is None:
        out.append(f"prompt length not given: {wl.prompt_tokens} tokens assumed (GRPOConfig 1.16 has no "
                   "max_prompt_length; pass --prompt-length)")
    if wl.online and wl.completion_length is None:
        out.append("completion length not given: TRL's max_completion_length default 512")
    if kernels == "cpu":
        out.append("kernels=cpu: TRL's CPU path (no Triton) scores every position with fp32 tile copies")
    return out


def rl(model: Any, gpu: str | None = None, *, config: str | None = None, search_changes: bool = True,
       kernels: str = "cuda", **kw: Any) -> RLPlan:
    """Plan an RL or preference-tuning run of MODEL on GPU: memory per phase, time per RL step, the changes that fit.

    Keywords: the RLWorkload fields (algorithm, prompt_length, completion_length, max_length, num_generations,
    per_device_train_batch_size, gradient_accumulation_steps, beta, policy, lora_rank, reward_model, gpus, zero,
    gradient_checkpointing, precompute_ref_log_probs, ...), the rollout's (rollout="hf"|"vllm-colocate"|"vllm-server",
    rollout_gpus, gpu_memory_utilization, sleep_level, vllm_tp, vllm_version), `config=` a TRL GRPOConfig/DPOConfig
    YAML/JSON, a verl YAML or an OpenRLHF launch script (keywords override it), `search=False` to skip the search,
    and training passthroughs (attention, precision, optimizer)."""
    from memplan.errors import did_you_mean
    from memplan.setups import resolve_gpu

    for k in kw:
        if k not in RL_KEYS:
            raise MemplanError(did_you_mean(k, RL_KEYS, "keyword argument"))
    warnings: list[str] = []
    if config is not None:
        from memplan.rlfiles import read_rl_config

        reading = read_rl_config(config)
        warnings += reading.warnings
        merged = dict(reading.kwargs)
        merged.update({k: v for k, v in kw.items() if v is not None})
        kw = merged
        if model is None:
            model = reading.model
    if model is None:
        raise MemplanError("rl needs a MODEL (a profile name, a parameter count or a config.json path), or a config "
                           "file that names model_name_or_path")
    extra = {k: kw.pop(k) for k in TRAINING_PASS if k in kw}
    if "search" in kw:  # the API's short name for search_changes
        search_changes = bool(kw.pop("search"))
    wl = build_workload(**kw)
    gpu_spec = resolve_gpu(gpu)
    plan = evaluate(model, gpu_spec, wl, extra, kernels)
    plan.warnings = warnings + plan.warnings
    if gpu_spec is not None and search_changes:
        opts = search(model, gpu_spec, wl, extra, evaluate, kernels)
        plan.options = opts
        fitting = [o for o in opts if o.fits]
        if fitting and not plan.fits:
            # fewest knobs first, then the search's order (least intrusive first)
            plan.smallest_change = min(fitting, key=lambda o: o.dimensions)
        if fitting:
            timed = [o for o in fitting if o.step_seconds is not None]
            if timed:
                plan.fastest = min(timed, key=lambda o: o.step_seconds)
    return plan
