"""An RL / preference-tuning plan composed from the floors: the policy update is memplan's training step
(memory/estimate.py estimate_memory at the RL sequence and micro-batch), with the loss's logits replaced by TRL's
fused LM head (answers/rl_memory.py); the colocated rollout engine is memplan's vLLM startup (memory/vllm.py); the
reference and reward forwards are no-grad forwards (the serving floor's workspace); time is the op walk
(perf/time.py) for scoring and update and the decode roofline (perf/roofline.py) for the rollout.

    >>> from memplan.answers.rl import rl
    >>> p = rl("qwen2.5-0.5b", "h100-sxm", algorithm="grpo", prompt_length=256, completion_length=1024)
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

import math
from typing import Any

from memplan.answers.rl_memory import autocast_weight_copies, fused_head, scoring_workspace, vocab_parts
from memplan.errors import MemplanError
from memplan.results.rl import RLComponent, RLOption, RLPhase, RLPlan, RLTime
from memplan.spec.workload import FRAMEWORK_NOTES, RLWorkload, RolloutEngine

GiB = 1 << 30
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


def policy_setup(model: Any, wl: RLWorkload, extra: dict[str, Any]):
    """The training step TRL runs for the policy: seq, micro-batch, GA, gradient checkpointing, ZeRO, LoRA, the
    bf16 checkpoint dtype with bf16 autocast (TRL bf16=True, dtype 'auto'), AdamW fused (transformers' default)."""
    from memplan.setups import training_setup

    precision = {"float32": "amp-bf16", "bfloat16": "bf16", "bfloat16-mixed": "bf16-mixed"}[wl.model_dtype]
    kw: dict[str, Any] = {"precision": precision,
                          "optimizer": "adamw", "optimizer_impl": "fused",
                          "seq": wl.sequence, "micro_batch": wl.sequences_per_micro_batch,
                          "grad_accum": wl.gradient_accumulation_steps,
                          "recompute": "full" if wl.gradient_checkpointing else "none",
                          "gpus": wl.gpus, "gpus_per_node": wl.gpus_per_node, "zero": wl.zero}
    kw.update({k: v for k, v in extra.items() if v is not None})
    if wl.policy in ("lora", "qlora"):
        kw["lora_rank"] = wl.lora_rank
        if wl.policy == "qlora":
            kw["quantize_base"] = "nf4"
    return training_setup(model, **kw)


def _weights_bytes(setup, sharded: bool) -> int:
    """A frozen copy of the model in the weights dtype (reference or reward model); ZeRO-3 shards it over DP."""
    n = setup.model.parameters.total
    shard = setup.layout.dp if sharded and setup.layout.zero == 3 else 1
    b = setup.recipe.weights.bytes
    if setup.lora is not None and setup.lora.quantize_base:
        b = 0.5 + 0.035  # nf4 with double-quantised absmax (memory/lora.py nf4_tensor_bytes)
    return int(n * b / (setup.layout.tp * setup.layout.pp) / shard)


class _Parts:
    """The residents and per-phase pieces of one configuration (bytes on one training GPU)."""

    def __init__(self) -> None:
        self.resident: list[RLComponent] = []

    def add(self, name: str, category: str, nbytes: int, note: str = "") -> None:
        if nbytes:
            self.resident.append(RLComponent(name=name, category=category, bytes=int(nbytes), note=note))


def _phase(name: str, resident: list[RLComponent], extra: list[RLComponent], note: str = "") -> RLPhase:
    comps = [c for c in resident + extra if c.bytes]
    return RLPhase(name=name, total=sum(c.bytes for c in comps), components=comps, note=note)


def _vllm(model: Any, wl: RLWorkload, gpu, setup, batch: int):
    """The vLLM engine's startup for the rollout (memplan's serving floor), as TRL starts it."""
    from memplan.memory.inference import estimate_inference
    from memplan.setups import serving_setup

    kw: dict[str, Any] = {"engine": "vllm", "gpu_memory_utilization": wl.vllm_utilization,
                          "max_model_len": wl.sequence, "batch": batch, "prompt": wl.prompt_tokens,
                          "output": wl.completion_tokens, "tp": wl.rollout.tp, "vllm_entrypoint": "llm"}
    if wl.rollout.kind == "vllm-colocate":
        # trl/generation/vllm_generation.py: max_num_batched_tokens=4096, max_num_seqs = batch x tp x steps
        kw["max_num_batched_tokens"] = wl.rollout.max_num_batched_tokens or 4096
        kw["max_num_seqs"] = wl.per_device_train_batch_size * wl.rollout.tp * wl.generation_steps
    elif wl.rollout.max_num_batched_tokens:
        kw["max_num_batched_tokens"] = wl.rollout.max_num_batched_tokens
    if wl.rollout.vllm_version:
        kw["vllm_version"] = wl.rollout.vllm_version
    if wl.policy == "qlora" and wl.rollout.kind == "vllm-colocate":  # vllm_generation.py: a bnb 4-bit policy
        # starts the colocated vLLM with quantization="bitsandbytes" (a server loads its own checkpoint)
        kw["quantization"] = "bitsandbytes"
    try:
        return estimate_inference(serving_setup(setup.model, **kw), gpu)
    except MemplanError as exc:
        if kw.get("quantization") != "bitsandbytes":
            raise
        raise MemplanError("--policy qlora with --rollout vllm-colocate (TRL starts vLLM with quantization="
                           f"bitsandbytes): {str(exc).replace('--engine hf', '--rollout hf')}") from None


def _hf_generate(wl: RLWorkload, setup, gpu, batch: int):
    from memplan.memory.inference import estimate_inference
    from memplan.spec.inference import InferenceSetup

    s = InferenceSetup(model=setup.model, engine="hf", batch=batch, prompt=wl.prompt_tokens,
                       output=wl.completion_tokens, attention=setup.workload.attention,
                       weights_dtype=setup.recipe.compute)  # under autocast: the cache and workspace in bf16
    return estimate_inference(s, gpu)


def _update_phases(setup, gpu, wl: RLWorkload, kernels: str) -> tuple[list[tuple[str, dict[str, int]]], Any, list[str]]:
    """The policy's training step with TRL's fused head instead of the logits: (name, categories) per moment."""
    from memplan.memory.activations import activations
    from memplan.memory.estimate import estimate_memory

    est = estimate_memory(setup, gpu, kernels=kernels)
    acts = activations(setup, kernels)
    vp = vocab_parts(setup, kernels)
    b, T = setup.layout.micro_batch, setup.seq
    scored = b * (wl.completion_tokens if wl.online else max(T - wl.prompt_tokens, 1))
    head = fused_head(setup, scored, b * (T - 1), train=True, kernels=kernels,
                      n_outputs=2 if wl.online else 4, top1=not wl.online)
    out = []
    for ph in est.timeline:
        cats = dict(ph.bytes)
        act, tmp = cats.get("activations", 0), cats.get("temporaries", 0)
        if ph.name == "forward":
            act -= vp["forward_only"]
        elif ph.name == "loss":
            act += head.saved + head.outputs - vp["head"] - vp["forward_only"]
            tmp += head.forward - vp["loss_forward"]
        elif ph.name == "backward":
            if act >= acts.saved:  # the moment backward starts (the loss's gradients)
                act += head.saved + head.outputs - vp["head"]
                tmp += head.backward - vp["loss_backward"]
            else:
                # another moment was the worst with the logits; with the fused head the start may be: the loss
                # phase's residents + everything saved + the head's backward
                loss = next(c for n, c in ((x.name, x.bytes) for x in est.timeline) if n == "loss")
                start = {k: v for k, v in loss.items() if k not in ("activations", "temporaries")}
                start["activations"] = acts.saved - vp["head"] + head.saved + head.outputs
                start["temporaries"] = max(acts.loss_backward - vp["loss_backward"], 0) + head.backward
                if sum(start.values()) > sum(cats.values()) - cats.get("activations", 0) - cats.get(
                        "temporaries", 0) + max(act, 0) + max(tmp, 0):
                    out.append((ph.name, start))
                    continue
        cats["activations"], cats["temporaries"] = max(act, 0), max(tmp, 0)
        out.append((ph.name, cats))
    notes = [f"LM head: TRL's fused tiled log-prob head, {head.note}"]
    return out, est, notes + [n for n in est.notes if "optimizer step temporaries" in n]


def _cat_components(cats: dict[str, int], label: str) -> list[RLComponent]:
    names = {"weights": "policy weights", "master_weights": "policy master weights",
             "optimizer_states": "policy optimizer states", "gradients": "policy gradients",
             "gathered_parameters": "ZeRO-3 gathered parameters", "activations": f"{label} activations",
             "temporaries": f"{label} temporaries", "other": "batch inputs", "buffers": "communication buckets"}
    cat = {"weights": "policy", "master_weights": "policy", "optimizer_states": "policy", "gradients": "policy",
           "gathered_parameters": "policy", "activations": "activations", "temporaries": "temporaries",
           "other": "activations", "buffers": "overheads"}
    return [RLComponent(name=names.get(k, k), category=cat.get(k, "other"), bytes=v) for k, v in cats.items() if v]


def plan_memory(model: Any, gpu, wl: RLWorkload, extra: dict[str, Any], kernels: str = "cuda") -> dict[str, Any]:
    """Phases on one training GPU for this workload: the heart of `rl`.  Returns the pieces the plan needs."""
    setup = policy_setup(model, wl, extra)
    m = setup.model.arch
    notes: list[str] = []
    warnings: list[str] = []
    upd, est, upd_notes = _update_phases(setup, gpu, wl, kernels)
    notes += upd_notes
    overheads = est.per_gpu.overheads
    states = {k: v for k, v in upd[-1][1].items() if k in ("weights", "master_weights", "optimizer_states")}
    res = _Parts()
    ref = wl.reference_kind
    if ref == "copy":
        ref_setup = setup
        if wl.reference_model:
            from memplan.setups import training_setup

            ref_setup = training_setup(wl.reference_model, precision=setup.recipe.name.split("[")[0],
                                       gpus=wl.gpus, zero=wl.zero)
            rv, pv = ref_setup.model.arch.vocab_size, m.vocab_size
            if rv != pv:
                raise MemplanError(f"reference model {ref_setup.model.name} has a vocabulary of {rv:,}, the policy "
                                   f"{pv:,}: the reference scores the policy's token ids, so both need the same "
                                   "tokenizer")
        res.add(f"reference model ({'frozen copy' if ref_setup is setup else ref_setup.model.name})", "reference",
                _weights_bytes(ref_setup, True),
                "a full replica per rank under ZeRO-0/1/2, sharded under ZeRO-3 (TRL prepare_deepspeed)")
    reward_setup = None
    if wl.reward_model:
        from memplan.setups import training_setup

        reward_setup = training_setup(wl.reward_model, precision="bf16", seq=wl.sequence, gpus=wl.gpus,
                                      zero=wl.zero, micro_batch=wl.per_device_train_batch_size)
        res.add(f"reward model {reward_setup.model.name}", "reward", _weights_bytes(reward_setup, True))
    critic = None
    if wl.has_critic:
        from memplan.memory.states import model_states

        critic = policy_setup(wl.reward_model or model, wl, extra)
        cs = model_states(critic)
        res.add("critic (value model) states", "critic",
                sum(cs.gpu_bytes(c) for c in ("weights", "master_weights", "optimizer_states")),
                "trained like the policy; its update runs after the policy's (activations not stacked)")
    # ---- rollout engine -----------------------------------------------------------------------------------
    batch = wl.completions_per_rank if wl.online else 0
    vllm = None
    engine_awake: list[RLComponent] = []
    engine_asleep: list[RLComponent] = []
    rollout_extra: list[RLComponent] = []
    host_ram = 0
    host_note = ""
    rollout_gpu_phase = None
    if wl.online and wl.rollout.kind == "hf":
        g = _hf_generate(wl, setup, gpu, batch)
        rollout_extra.append(RLComponent(name=f"generate: KV cache ({batch} x {wl.sequence:,} tokens)",
                                         category="rollout", bytes=g.per_gpu.kv_cache,
                                         note="transformers DynamicCache, the policy generates"))
        rollout_extra.append(RLComponent(name="generate: prefill workspace", category="rollout",
                                         bytes=g.per_gpu.activations))
        rollout_extra.append(RLComponent(name="autocast copies of the weights", category="rollout",
                                         bytes=autocast_weight_copies(setup),
                                         note="bf16 casts of the fp32 weights cached for one forward"))
        if wl.zero == 3 and wl.ds3_gather_for_generation:
            full = _weights_bytes(setup, False)
            rollout_extra.append(RLComponent(name="ZeRO-3 gathered policy for generation", category="rollout",
                                             bytes=full - states.get("weights", 0),
                                             note="ds3_gather_for_generation=True gathers the whole policy on "
                                                  "every rank"))
        vllm = g
    elif wl.online:
        vbatch = batch * wl.rollout.tp if wl.rollout.kind == "vllm-colocate" else \
            max(1, wl.generation_batch // max(wl.rollout.gpus // wl.rollout.tp, 1))
        vllm = _vllm(model, wl, gpu, setup, vbatch)
        v = vllm.vllm
        if v is not None:
            awake = [RLComponent(name="vLLM weights", category="rollout", bytes=v.weights),
                     RLComponent(name="vLLM KV block pool", category="rollout", bytes=v.kv_cache_pool,
                                 note=f"{v.num_gpu_blocks:,} blocks, {v.max_concurrency:.1f} sequences of "
                                      f"{wl.sequence:,} tokens"),
                     RLComponent(name="vLLM CUDA graphs", category="rollout", bytes=v.cudagraph),
                     RLComponent(name="vLLM non-torch memory", category="rollout", bytes=v.non_torch)]
            if wl.rollout.kind == "vllm-colocate":
                engine_awake = awake
                engine_asleep = awake[2:] if wl.rollout.sleep_level else awake
                if wl.rollout.sleep_level == 1:
                    host_ram = v.weights * min(wl.gpus, wl.gpus_per_node)
                    host_note = (f"vLLM sleep level 1: each rank's vLLM weights ({v.weights / GiB:.2f} GiB) in "
                                 f"pinned host RAM x {min(wl.gpus, wl.gpus_per_node)} ranks per node")
            else:
                rollout_gpu_phase = _phase("rollout engine (rollout GPU)", [], awake,
                                           f"vllm serve on {wl.rollout.gpus} GPU(s), tp {wl.rollout.tp}, "
                                           f"gpu_memory_utilization {wl.vllm_utilization}")
    # ---- phases on a training GPU --------------------------------------------------------------------------
    over = [RLComponent(name="CUDA context, workspaces, allocator reserve", category="overheads", bytes=overheads)]
    base = _cat_components(states, "policy") + res.resident
    phases: list[RLPhase] = []
    gen_keep = batch * wl.sequence * 8 * 2 + batch * wl.completion_tokens * 4 * (
        int(wl.old_logprob_pass) + int(ref in ("copy", "adapters-off")) + 1)
    kept = [RLComponent(name="generation batch (ids, masks, log-probs)", category="activations", bytes=gen_keep)] \
        if wl.online else []
    if wl.online:
        phases.append(_phase("rollout", base + engine_awake + over, rollout_extra,
                             f"{batch} completion(s) per rank ({wl.generation_batch} in all: "
                             f"{wl.generation_batch // wl.num_generations} prompt(s) x G={wl.num_generations})"))
        passes = []
        if wl.old_logprob_pass:
            passes.append("old log-probs (policy)")
        if ref in ("copy", "adapters-off"):
            passes.append("reference log-probs")
        if wl.reward_model:
            passes.append("reward model")
        if passes:
            sb = wl.per_device_train_batch_size
            work = scoring_workspace(setup, sb, wl.sequence)
            if reward_setup is not None:  # the reward model's forward may be the larger one
                work = max(work, scoring_workspace(reward_setup, sb, wl.sequence))
            head = fused_head(setup, sb * wl.completion_tokens, sb * (wl.sequence - 1), train=False,
                              kernels=kernels)
            phases.append(_phase("scoring", base + engine_asleep + over, kept + [
                RLComponent(name=f"no-grad forward ({sb} x {wl.sequence:,} tokens)", category="temporaries",
                            bytes=work, note="largest layer's workspace + the residual stream"),
                RLComponent(name="fused LM head (log-probs)", category="temporaries",
                            bytes=head.forward + head.outputs, note=head.note)],
                note=", ".join(passes) + f"; chunks of per_device_train_batch_size = {sb}"))
    if wl.online and wl.rollout.kind != "hf" and vllm is not None and vllm.vllm is not None:
        # vllm_generation.py sync_weights: wake the weights (KV still asleep), then load the policy's parameters one
        # at a time (ZeRO-3: each gathered alone); a PEFT policy under ZeRO-3 is gathered whole to merge the adapters
        full = _weights_bytes(setup, False)
        if wl.zero == 3 and wl.policy != "full":
            gathered, how = full - states.get("weights", 0), "ZeRO-3 + PEFT: the whole model gathered to merge adapters"
        else:
            gathered = int(m.vocab_size * m.hidden_size * setup.recipe.weights.bytes) if wl.zero == 3 else 0
            how = "one parameter at a time (ZeRO-3: the largest, the embedding, gathered)"
        sync_engine = (engine_awake[:1] + engine_asleep) if wl.rollout.kind == "vllm-colocate" and \
            wl.rollout.sleep_level else engine_awake
        phases.insert(0, _phase("weight sync", base + sync_engine + over, [RLComponent(
            name="gathered policy parameters", category="policy", bytes=gathered, note=how)], how))
    # update: the worst moment of the training step
    worst_name, worst = max(upd, key=lambda x: sum(x[1].values()))
    upd_extra = [c for c in _cat_components(worst, "update") if c.category != "policy"]
    upd_states = [c for c in _cat_components(worst, "update") if c.category == "policy"]
    upd_note = f"worst moment: {worst_name} (micro-batch {setup.layout.micro_batch} x {setup.seq:,} tokens" + \
        (", gradient checkpointing" if wl.gradient_checkpointing else "") + ")"
    phases.append(_phase("update", upd_states + res.resident + engine_asleep + over, kept + upd_extra, upd_note))
    others = sum(c.bytes for c in res.resident + engine_asleep + over + kept)
    moments = {n: sum(c.values()) + others for n, c in upd}
    if critic is not None:
        # the value model's own training step, after the policy's: its activations, gradients and temporaries at
        # its worst moment (a value head: no vocabulary-wide logits, so its head rows are taken out)
        from memplan.memory.estimate import estimate_memory

        cest = estimate_memory(critic, gpu)
        cvp = vocab_parts(critic, kernels)
        cworst = max(cest.timeline, key=lambda ph: ph.total)
        cb = dict(cworst.bytes)
        extra_c = {k: v for k, v in cb.items() if k in ("gradients", "activations", "temporaries", "gathered_parameters")}
        extra_c["activations"] = max(extra_c.get("activations", 0) - cvp["head"], 0)
        extra_c["temporaries"] = max(extra_c.get("temporaries", 0) - cvp["loss_backward"], 0)
        phases.append(_phase("critic update", base + engine_asleep + over, kept + [
            RLComponent(name=f"critic {k.replace('_', ' ')}", category="critic", bytes=v) for k, v in extra_c.items()],
            f"the value model's step, worst moment {cworst.name}"))
    if not wl.online and ref in ("copy", "adapters-off"):
        # dpo_trainer.py _compute_loss: the policy's forward first, then the reference's under no_grad, while the
        # policy's activations are held for backward
        loss = dict(next(c for n, c in upd if n == "loss"))
        b = setup.layout.micro_batch
        work = scoring_workspace(setup, b, setup.seq)
        head = fused_head(setup, b * wl.completion_tokens, b * (setup.seq - 1), train=False, kernels=kernels)
        loss["temporaries"] = 0
        phases.append(_phase("reference forward", [c for c in _cat_components(loss, "update")
                                                   if c.category == "policy"] + res.resident + over,
                             [c for c in _cat_components(loss, "policy") if c.category != "policy"] + [
                                 RLComponent(name=f"reference no-grad forward ({b} x {setup.seq:,})",
                                             category="temporaries", bytes=work),
                                 RLComponent(name="reference fused LM head", category="temporaries",
                                             bytes=head.forward + head.outputs, note=head.note)],
                             "inside the loss: the policy's activations are held while the reference scores the "
                             "same batch (chosen + rejected)"))
    if ref == "precomputed":
        notes.append("precompute_ref_log_probs: the reference forward runs once over the data set before "
                     "training (no reference weights during training)")
    if ref == "adapters-off":
        notes.append("reference = the LoRA base with adapters disabled (TRL use_adapter): no extra copy")
    if wl.online:
        notes.append("steady state shown: the first step's rollout and scoring run before the optimizer states exist "
                     "(created at the first optimizer step), so a run that survives step 1 can still run out of memory "
                     "at step 2")
    if wl.rollout.sleep_level == 1 and wl.framework == "trl":
        warnings.append("TRL 1.16 sleeps its colocated vLLM at level 2 only (vllm_generation.py llm.sleep(level=2)); "
                        "level 1 is counted as asked (verl's free_cache_engine, or your own loop)")
    if wl.online and wl.kl_beta == 0.0 and wl.reference == "auto":
        notes.append(f"beta = 0 ({wl.algorithm} default in TRL 1.16): no reference model is loaded")
    return {"setup": setup, "phases": phases, "rollout_gpu_phase": rollout_gpu_phase, "engine": vllm,
            "host_ram": host_ram, "host_note": host_note, "notes": notes, "warnings": warnings, "est": est,
            "reward_setup": reward_setup, "critic": critic, "batch": batch, "moments": moments, "overheads": overheads}


def _vllm_start_check(parts: dict[str, Any], wl: RLWorkload, gpu) -> tuple[bool | None, str | None]:
    """Colocated vLLM is built in the trainer's __init__, after the policy (and reference/reward) are on the GPU:
    vLLM refuses to start when the free memory is below gpu_memory_utilization x total."""
    eng = parts["engine"]
    if eng is None or getattr(eng, "vllm", None) is None:
        return None, None
    v = eng.vllm
    if not v.starts:
        return False, v.refusal
    if wl.rollout.kind != "vllm-colocate":
        return True, None
    ph = next(p for p in parts["phases"] if p.name == "rollout")
    loaded = sum(c.bytes for c in ph.components if c.category in ("reference", "reward")
                 or c.name == "policy weights")
    from memplan.memory.overheads import overhead_table

    t = overhead_table()
    gen = t["generations"].get(gpu.generation, t["generations"]["default"])
    context = gpu.context_bytes or gen["context_mib"] << 20  # the CUDA context before vLLM's snapshot
    free = v.total_memory - loaded - context
    if free < v.requested:
        return False, (f"vLLM refuses to start: {free / GiB:.2f} GiB free after the policy/reference load, below "
                       f"gpu_memory_utilization {v.gpu_memory_utilization} x {v.total_memory / GiB:.2f} GiB = "
                       f"{v.requested / GiB:.2f} GiB")
    return True, None


# ---- time ---------------------------------------------------------------------------------------------------------
def plan_time(parts: dict[str, Any], wl: RLWorkload, gpu) -> RLTime:
    from memplan.perf.comm import resolve_links
    from memplan.perf.time import estimate_time

    setup = parts["setup"]
    assumptions: list[str] = []
    opt_steps = wl.generation_steps / wl.gradient_accumulation_steps * wl.num_iterations if wl.online else 1.0
    t = estimate_time(setup, gpu, steps=1, with_memory=False)
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
        r = eng.roofline
        # decode steps read the weights and a KV cache that grows from the prompt to prompt + completion: the
        # mean step is the roofline at the full context with half the completion's KV
        kv_full = r.decode_kv_bytes_per_step
        frac = (wl.prompt_tokens + wl.completion_tokens / 2) / wl.sequence
        mean_step = r.decode_step_seconds * (r.decode_bytes_per_step - kv_full * (1 - frac)) / max(
            r.decode_bytes_per_step, 1)
        conc = parts.get("concurrency") or parts["batch"]
        waves = max(1, math.ceil(r.batch / max(conc, 1)))
        rollout = waves * (r.prefill_seconds + wl.completion_tokens * mean_step)
        assumptions.append(f"rollout: the decode roofline at batch {r.batch} (mean step {mean_step * 1e3:.3g} ms x "
                           f"{wl.completion_tokens} tokens) + prefill {r.prefill_seconds:.3g} s"
                           + (f", in {waves} waves (the KV blocks hold {conc:.0f})" if waves > 1 else "")
                           + "; every completion runs to max_completion_length (an upper bound)")
        if wl.rollout.kind == "hf":
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


# ---- the plan -------------------------------------------------------------------------------------------------------
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


def search(model: Any, gpu, wl: RLWorkload, extra: dict[str, Any], kernels: str = "cuda",
           limit: int = 120) -> list[RLOption]:
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


def rl(model: Any, gpu: str | None = None, *, config: str | None = None, search_changes: bool = True,
       kernels: str = "cuda", **kw: Any) -> RLPlan:
    """Plan an RL or preference-tuning run of MODEL on GPU: memory per phase, time per RL step, the changes that fit.

    Keywords: the RLWorkload fields (algorithm, prompt_length, completion_length, max_length, num_generations,
    per_device_train_batch_size, gradient_accumulation_steps, beta, policy, lora_rank, reward_model, gpus, zero,
    gradient_checkpointing, precompute_ref_log_probs, ...), the rollout's (rollout="hf"|"vllm-colocate"|"vllm-server",
    rollout_gpus, gpu_memory_utilization, sleep_level, vllm_tp, vllm_version), `config=` a TRL GRPOConfig/DPOConfig
    YAML/JSON or a verl YAML (flags override it), and training passthroughs (attention, precision, optimizer)."""
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
        opts = search(model, gpu_spec, wl, extra, kernels)
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
