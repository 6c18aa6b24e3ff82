"""The phases of an RL step on one training GPU (and a rollout GPU), composed from the floors: the policy's
training step (memory/estimate.py) with TRL's fused head (answers/rl_memory.py), the rollout engine (the serving
floor: memory/vllm.py, memory/hf_serving.py), the reference/reward/critic models as TRL 1.16 keeps them."""
from __future__ import annotations

from typing import Any

from memplan.answers.rl_memory import autocast_weight_copies, fused_head, scoring_workspace, vocab_parts
from memplan.errors import MemplanError
from memplan.results.rl import RLComponent, RLPhase
from memplan.spec.workload import RLWorkload

GiB = 1 << 30


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


def scoring_model(model: Any):
    """A reward or value (critic) model as TRL and OpenRLHF build it: the named model with a score head of one
    output in place of its LM head (TRL RewardTrainer / PPO's value model: AutoModelForSequenceClassification
    with num_labels=1, i.e. transformers' GenericForSequenceClassification score = nn.Linear(hidden, 1,
    bias=False); OpenRLHF's value head is the same linear).  A bare parameter count, or a config that already
    names its head, is kept as it is."""
    from memplan.catalog import resolve_model
    from memplan.families.heads import as_sequence_classifier
    from memplan.spec.model import ModelSpec

    spec = model if isinstance(model, ModelSpec) else resolve_model(str(model))
    if spec.architecture is None or spec.architecture.head.objective != "causal-lm":
        return spec
    return as_sequence_classifier(spec, 1)


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
    from memplan.answers.inference import estimate_inference
    from memplan.setups import serving_setup

    kw: dict[str, Any] = {"engine": "vllm", "gpu_memory_utilization": wl.vllm_utilization,
                          "max_model_len": wl.sequence, "batch": batch, "prompt": wl.prompt_tokens,
                          "output": wl.completion_tokens, "tp": wl.rollout.tp, "vllm_entrypoint": "llm"}
    if wl.rollout.kind == "vllm-colocate" and wl.framework == "verl":
        # verl/trainer/config/rollout/rollout.yaml (verl b178a3cd, v0.7.0+): max_num_batched_tokens 8192,
        # max_num_seqs 256 (vLLM's engine arguments as verl passes them)
        kw["max_num_batched_tokens"] = wl.rollout.max_num_batched_tokens or 8192
        kw["max_num_seqs"] = 256
    elif wl.rollout.kind == "vllm-colocate":
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
    from memplan.answers.inference import estimate_inference
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


class _Ctx:
    """What the phases of one configuration share: the policy's setup and update, the resident models, the engine."""

    def __init__(self, model: Any, gpu, wl: RLWorkload, extra: dict[str, Any], kernels: str) -> None:
        self.model, self.gpu, self.wl, self.kernels = model, gpu, wl, kernels
        self.setup = policy_setup(model, wl, extra)
        self.extra = extra
        self.upd, self.est, self.notes = _update_phases(self.setup, gpu, wl, kernels)
        self.warnings: list[str] = []
        self.overheads = self.est.per_gpu.overheads
        self.states = {k: v for k, v in self.upd[-1][1].items()
                       if k in ("weights", "master_weights", "optimizer_states")}
        self.ref = wl.reference_kind
        self.res = _Parts()
        self.reward_setup = self.critic = None
        self.batch = wl.completions_per_rank if wl.online else 0
        self.engine = None  # the serving floor's estimate (vLLM or transformers generate)
        self.awake: list[RLComponent] = []
        self.asleep: list[RLComponent] = []
        self.rollout_extra: list[RLComponent] = []
        self.host_ram, self.host_note = 0, ""
        self.rollout_gpu_phase: RLPhase | None = None

    @property
    def over(self) -> list[RLComponent]:
        return [RLComponent(name="CUDA context, workspaces, allocator reserve", category="overheads",
                            bytes=self.overheads)]

    @property
    def base(self) -> list[RLComponent]:
        return _cat_components(self.states, "policy") + self.res.resident

    @property
    def kept(self) -> list[RLComponent]:
        wl = self.wl
        if not wl.online:
            return []
        passes = int(wl.old_logprob_pass) + int(self.ref in ("copy", "adapters-off")) + 1
        keep = self.batch * wl.sequence * 8 * 2 + self.batch * wl.completion_tokens * 4 * passes
        return [RLComponent(name="generation batch (ids, masks, log-probs)", category="activations", bytes=keep)]


def _residents(c: _Ctx) -> None:
    """Reference, reward and critic models as TRL keeps them on every rank."""
    from memplan.setups import training_setup

    wl, setup = c.wl, c.setup
    if c.ref == "copy":
        ref_setup = setup
        if wl.reference_model:
            ref_setup = training_setup(wl.reference_model, precision=setup.recipe.name.split("[")[0],
                                       gpus=wl.gpus, zero=wl.zero)
            rv, pv = ref_setup.model.arch.vocab_size, setup.model.arch.vocab_size
            if rv != pv:
                raise MemplanError(f"reference model {ref_setup.model.name} has a vocabulary of {rv:,}, the policy "
                                   f"{pv:,}: the reference scores the policy's token ids, so both need the same "
                                   "tokenizer")
        c.res.add(f"reference model ({'frozen copy' if ref_setup is setup else ref_setup.model.name})", "reference",
                  _weights_bytes(ref_setup, True),
                  "a full replica per rank under ZeRO-0/1/2, sharded under ZeRO-3 (TRL prepare_deepspeed)")
    if wl.reward_model:
        c.reward_setup = training_setup(scoring_model(wl.reward_model), precision="bf16", seq=wl.sequence,
                                        gpus=wl.gpus, zero=wl.zero, micro_batch=wl.per_device_train_batch_size)
        c.res.add(f"reward model {c.reward_setup.model.name} ({c.reward_setup.model.arch.head.describe()})"
                  if c.reward_setup.model.architecture is not None else f"reward model {c.reward_setup.model.name}",
                  "reward", _weights_bytes(c.reward_setup, True))
    if wl.has_critic:
        from memplan.memory.states import model_states

        c.critic = policy_setup(scoring_model(wl.reward_model or c.model), wl, c.extra)
        cs = model_states(c.critic)
        c.res.add("critic (value model) states", "critic",
                  sum(cs.gpu_bytes(k) for k in ("weights", "master_weights", "optimizer_states")),
                  "trained like the policy; its update runs after the policy's (activations not stacked)")


def _hf_engine(c: _Ctx) -> None:
    wl = c.wl
    g = c.engine = _hf_generate(wl, c.setup, c.gpu, c.batch)
    c.rollout_extra += [
        RLComponent(name=f"generate: KV cache ({c.batch} x {wl.sequence:,} tokens)", category="rollout",
                    bytes=g.per_gpu.kv_cache, note="transformers DynamicCache, the policy generates"),
        RLComponent(name="generate: prefill workspace", category="rollout", bytes=g.per_gpu.activations),
        RLComponent(name="autocast copies of the weights", category="rollout", bytes=autocast_weight_copies(c.setup),
                    note="bf16 casts of the fp32 weights cached for one forward")]
    if wl.zero == 3 and wl.ds3_gather_for_generation:
        c.rollout_extra.append(RLComponent(
            name="ZeRO-3 gathered policy for generation", category="rollout",
            bytes=_weights_bytes(c.setup, False) - c.states.get("weights", 0),
            note="ds3_gather_for_generation=True gathers the whole policy on every rank"))


def _vllm_engine(c: _Ctx) -> None:
    wl = c.wl
    vbatch = c.batch * wl.rollout.tp if wl.rollout.kind == "vllm-colocate" else \
        max(1, wl.generation_batch // max(wl.rollout.gpus // wl.rollout.tp, 1))
    c.engine = _vllm(c.model, wl, c.gpu, c.setup, vbatch)
    v = c.engine.vllm
    if v is None:
        return
    if wl.rollout.kind == "vllm-colocate":
        v = c.engine.vllm = _trainer_in_budget(c, v)
    awake = [RLComponent(name="vLLM weights", category="rollout", bytes=v.weights),
             RLComponent(name="vLLM KV block pool", category="rollout", bytes=v.kv_cache_pool,
                         note=f"{v.num_gpu_blocks:,} blocks, {v.max_concurrency:.1f} sequences of "
                              f"{wl.sequence:,} tokens"),
             RLComponent(name="vLLM CUDA graphs", category="rollout", bytes=v.cudagraph),
             RLComponent(name="vLLM non-torch memory", category="rollout", bytes=v.non_torch)]
    if wl.rollout.kind != "vllm-colocate":
        c.rollout_gpu_phase = _phase("rollout engine (rollout GPU)", [], awake,
                                     f"vllm serve on {wl.rollout.gpus} GPU(s), tp {wl.rollout.tp}, "
                                     f"gpu_memory_utilization {wl.vllm_utilization}")
        return
    c.awake = awake
    c.asleep = awake[2:] if wl.rollout.sleep_level else awake
    if wl.rollout.sleep_level == 1:
        ranks = min(wl.gpus, wl.gpus_per_node)
        c.host_ram = v.weights * ranks
        c.host_note = (f"vLLM sleep level 1: each rank's vLLM weights ({v.weights / GiB:.2f} GiB) in pinned host "
                       f"RAM x {ranks} ranks per node")


def _trainer_in_budget(c: _Ctx, v: Any) -> Any:
    """vLLM <= 0.8 colocated in the trainer's process: Worker.determine_available_memory (vllm/v1/worker/
    gpu_worker.py @v0.8.5) takes torch's allocated_bytes.all.peak after reset_peak_memory_stats, which starts at
    what the process already holds, so the policy and reference/reward weights loaded before the engine are
    charged against gpu_memory_utilization x total with vLLM's own (available = total x utilization - peak -
    non-torch).  From 0.9 the baseline snapshot taken at init leaves them out (the serving floor's rule)."""
    from memplan.memory.vllm_rules import VllmRules, flashinfer_installed, parse_version

    ver = c.engine.setup.vllm_version
    if not VllmRules(parse_version(ver), flashinfer_installed(ver)).context_in_budget:
        return v
    loaded = sum(x.bytes for x in c.res.resident if x.category in ("reference", "reward")) + \
        sum(b for k, b in c.states.items() if k in ("weights", "master_weights"))  # no optimizer states yet
    available = v.kv_cache_available - loaded
    blocks = max(available, 0) // v.bytes_per_block
    conc = v.max_concurrency * blocks / v.num_gpu_blocks if v.num_gpu_blocks else 0.0
    upd: dict[str, Any] = {"kv_cache_available": max(available, 0), "kv_cache_shortfall": max(-available, 0),
                           "num_gpu_blocks": blocks, "kv_cache_pool": blocks * v.bytes_per_block,
                           "max_concurrency": conc,
                           "gpu_kv_cache_tokens": v.gpu_kv_cache_tokens * blocks // max(v.num_gpu_blocks, 1)}
    c.notes.append(f"vLLM {ver} colocated: the trainer's {loaded / GiB:.2f} GiB of weights loaded before the engine "
                   "count against gpu_memory_utilization (gpu_worker.py @v0.8.5 determine_available_memory: the "
                   "process's torch peak); from 0.9 they are left out")
    if v.starts and conc < 1:
        upd.update(starts=False, failed_phase="kv",
                   refusal=(f"vLLM {ver} refuses to start: the trainer's {loaded / GiB:.2f} GiB loaded in the same "
                            f"process count against gpu_memory_utilization {v.gpu_memory_utilization} and leave "
                            f"{max(available, 0) / GiB:.2f} GiB of KV cache, less than one sequence of "
                            f"{v.max_model_len:,} tokens"))
    return v.model_copy(update=upd)


def _online_phases(c: _Ctx) -> list[RLPhase]:
    """Rollout and scoring (GRPO/RLOO/PPO): the engine generates, then the no-grad log-prob passes."""
    wl = c.wl
    out = [_phase("rollout", c.base + c.awake + c.over, c.rollout_extra,
                  f"{c.batch} completion(s) per rank ({wl.generation_batch} in all: "
                  f"{wl.generation_batch // wl.num_generations} prompt(s) x G={wl.num_generations})")]
    passes = [name for name, on in (("old log-probs (policy)", wl.old_logprob_pass),
                                     ("reference log-probs", c.ref in ("copy", "adapters-off")),
                                     ("reward model", bool(wl.reward_model))) if on]
    if passes:
        sb = wl.per_device_train_batch_size
        work = scoring_workspace(c.setup, sb, wl.sequence)
        if c.reward_setup is not None:  # the reward model's forward may be the larger one
            work = max(work, scoring_workspace(c.reward_setup, sb, wl.sequence))
        head = fused_head(c.setup, sb * wl.completion_tokens, sb * (wl.sequence - 1), train=False,
                          kernels=c.kernels)
        out.append(_phase("scoring", c.base + c.asleep + c.over, c.kept + [
            RLComponent(name=f"no-grad forward ({sb} x {wl.sequence:,} tokens)", category="temporaries",
                        bytes=work, note="largest layer's workspace + the residual stream"),
            RLComponent(name="fused LM head (log-probs)", category="temporaries", bytes=head.forward + head.outputs,
                        note=head.note)],
            note=", ".join(passes) + f"; chunks of per_device_train_batch_size = {sb}"))
    return out


def _sync_phase(c: _Ctx) -> RLPhase:
    """vllm_generation.py sync_weights: wake the weights (KV still asleep), then load the policy's parameters one at
    a time (ZeRO-3: each gathered alone); a PEFT policy under ZeRO-3 is gathered whole to merge the adapters."""
    wl, m = c.wl, c.setup.model.arch
    if wl.zero == 3 and wl.policy != "full":
        gathered = _weights_bytes(c.setup, False) - c.states.get("weights", 0)
        how = "ZeRO-3 + PEFT: the whole model gathered to merge adapters"
    else:
        gathered = int(m.vocab_size * m.hidden_size * c.setup.recipe.weights.bytes) if wl.zero == 3 else 0
        how = "one parameter at a time (ZeRO-3: the largest, the embedding, gathered)"
    engine = (c.awake[:1] + c.asleep) if wl.rollout.kind == "vllm-colocate" and wl.rollout.sleep_level else c.awake
    return _phase("weight sync", c.base + engine + c.over, [RLComponent(
        name="gathered policy parameters", category="policy", bytes=gathered, note=how)], how)


def _update_phase(c: _Ctx) -> RLPhase:
    worst_name, worst = max(c.upd, key=lambda x: sum(x[1].values()))
    comps = _cat_components(worst, "update")
    note = f"worst moment: {worst_name} (micro-batch {c.setup.layout.micro_batch} x {c.setup.seq:,} tokens" + \
        (", gradient checkpointing" if c.wl.gradient_checkpointing else "") + ")"
    return _phase("update", [x for x in comps if x.category == "policy"] + c.res.resident + c.asleep + c.over,
                  c.kept + [x for x in comps if x.category != "policy"], note)


def _critic_phase(c: _Ctx) -> RLPhase:
    """The value model's own training step, after the policy's: its activations, gradients and temporaries at its
    worst moment (a value head: no vocabulary-wide logits, so its head rows are taken out)."""
    from memplan.memory.estimate import estimate_memory

    cest = estimate_memory(c.critic, c.gpu)
    cvp = vocab_parts(c.critic, c.kernels)
    cworst = max(cest.timeline, key=lambda ph: ph.total)
    extra = {k: v for k, v in cworst.bytes.items()
             if k in ("gradients", "activations", "temporaries", "gathered_parameters")}
    extra["activations"] = max(extra.get("activations", 0) - cvp["head"], 0)
    extra["temporaries"] = max(extra.get("temporaries", 0) - cvp["loss_backward"], 0)
    return _phase("critic update", c.base + c.asleep + c.over, c.kept + [
        RLComponent(name=f"critic {k.replace('_', ' ')}", category="critic", bytes=v) for k, v in extra.items()],
        f"the value model's step, worst moment {cworst.name}")


def _reference_forward_phase(c: _Ctx) -> RLPhase:
    """dpo_trainer.py _compute_loss: the policy's forward first, then the reference's under no_grad, while the
    policy's activations are held for backward."""
    setup, wl = c.setup, c.wl
    loss = dict(next(x for n, x in c.upd if n == "loss"))
    b = setup.layout.micro_batch
    work = scoring_workspace(setup, b, setup.seq)
    head = fused_head(setup, b * wl.completion_tokens, b * (setup.seq - 1), train=False, kernels=c.kernels)
    loss["temporaries"] = 0
    comps = _cat_components(loss, "policy")
    return _phase("reference forward", [x for x in comps if x.category == "policy"] + c.res.resident + c.over,
                  [x for x in comps if x.category != "policy"] + [
                      RLComponent(name=f"reference no-grad forward ({b} x {setup.seq:,})", category="temporaries",
                                  bytes=work),
                      RLComponent(name="reference fused LM head", category="temporaries",
                                  bytes=head.forward + head.outputs, note=head.note)],
                  "inside the loss: the policy's activations are held while the reference scores the same batch "
                  "(chosen + rejected)")


def _notes(c: _Ctx) -> None:
    wl = c.wl
    if c.ref == "precomputed":
        c.notes.append("precompute_ref_log_probs: the reference forward runs once over the data set before "
                       "training (no reference weights during training)")
    if c.ref == "adapters-off":
        c.notes.append("reference = the LoRA base with adapters disabled (TRL use_adapter): no extra copy")
    if wl.online:
        c.notes.append("steady state shown: the first step's rollout and scoring run before the optimizer states "
                       "exist (created at the first optimizer step), so a run that survives step 1 can still run "
                       "out of memory at step 2")
    if wl.rollout.sleep_level == 1 and wl.framework == "trl":
        c.warnings.append("TRL 1.16 sleeps its colocated vLLM at level 2 only (vllm_generation.py "
                          "llm.sleep(level=2)); level 1 is counted as asked (verl's free_cache_engine, or your own "
                          "loop)")
    if wl.online and wl.kl_beta == 0.0 and wl.reference == "auto":
        c.notes.append(f"beta = 0 ({wl.algorithm} default in TRL 1.16): no reference model is loaded")


def plan_memory(model: Any, gpu, wl: RLWorkload, extra: dict[str, Any], kernels: str = "cuda") -> dict[str, Any]:
    """Phases on one training GPU for this workload, in TRL's order.  Returns the pieces the plan needs."""
    c = _Ctx(model, gpu, wl, extra, kernels)
    _residents(c)
    if wl.online:
        _hf_engine(c) if wl.rollout.kind == "hf" else _vllm_engine(c)
    phases: list[RLPhase] = []
    if wl.online and wl.rollout.kind != "hf" and c.engine is not None and c.engine.vllm is not None:
        phases.append(_sync_phase(c))
    if wl.online:
        phases += _online_phases(c)
    phases.append(_update_phase(c))
    others = sum(x.bytes for x in c.res.resident + c.asleep + c.over + c.kept)
    moments = {n: sum(x.values()) + others for n, x in c.upd}
    if c.critic is not None:
        phases.append(_critic_phase(c))
    if not wl.online and c.ref in ("copy", "adapters-off"):
        phases.append(_reference_forward_phase(c))
    _notes(c)
    return {"setup": c.setup, "phases": phases, "rollout_gpu_phase": c.rollout_gpu_phase, "engine": c.engine,
            "host_ram": c.host_ram, "host_note": c.host_note, "notes": c.notes, "warnings": c.warnings,
            "est": c.est, "reward_setup": c.reward_setup, "critic": c.critic, "batch": c.batch, "moments": moments,
            "overheads": c.overheads}


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
    from memplan.memory.vllm_rules import VllmRules, flashinfer_installed, parse_version

    ver = eng.setup.vllm_version
    if not VllmRules(parse_version(ver), flashinfer_installed(ver)).checks_free_memory:
        return True, None  # 0.8.5 has no free-memory check at init (vllm_rules.py checks_free_memory)
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
