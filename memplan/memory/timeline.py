"""The training step as a timeline of moments, and its peak.

A steady-state step (optimizer states already allocated, gradients None after zero_grad(set_to_none=True)):

  forward         persistent states + activations kept so far + the model output (logits) + in-layer transients
  loss            ... + the loss's saved log-softmax and its fp32 copy of the logits
  backward        start: every saved activation + the loss's gradients (usually the step's peak);
                  then layer by layer activations are freed and gradients allocated: the extremes of that linear
                  trade are the first and the last layer, so those two moments are evaluated (O(1), not O(L));
                  end: all gradients + the embedding's gradient
  optimizer_step  weights + gradients + master + states + the optimizer's temporaries (for-loop: two tensors
                  the size of the largest parameter; foreach: one list as big as the parameter group; fused: none)
                  + the fp32 gradients a master-weights recipe materializes
  zero_grad       gradients dropped

Bytes of each moment are by category (weights, gradients, master_weights, optimizer_states,
gathered_parameters, activations, temporaries, other), so the peak says what it is made of.
"""
from __future__ import annotations

from pydantic import BaseModel

from memplan.memory.activations import Activations, activations, implementation_for
from memplan.memory.implementations import Kernels
from memplan.memory.layout import LocalParameters
from memplan.memory.states import ModelStates
from memplan.results.memory import Component, Phase
from memplan.spec.setup import TrainingSetup

STATE_CATEGORIES = ("weights", "gradients", "master_weights", "optimizer_states", "gathered_parameters")


class Timeline(BaseModel):
    phases: list[Phase]
    components: list[Component] = []
    notes: list[str] = []
    activations: Activations | None = None


def _phase(name: str, **cats: int) -> Phase:
    b = {k: int(v) for k, v in cats.items() if v}
    return Phase(name=name, bytes=b, total=sum(b.values()))


def parameter_order(local: LocalParameters) -> list[int]:
    """Numel of each parameter tensor on this GPU in nn.Module registration order (what torch.optim iterates):
    embeddings, then per layer its linears (weight, bias) and its vectors (norms), the final norm and the LM head
    (transformers' modeling files register them in that order, e.g. modeling_llama.py).  Two consecutive layers
    of each group are enough to see every adjacent pair."""
    def numels(ts):
        return [r * c * k for r, c, k in ts]

    if not local.groups:  # LoRA adapters, a bare count: the tensors as listed
        return numels(local.tensor_numels)
    layers = [n for g in local.groups for n in numels(g.tensors_per_layer) * min(2, g.count)]
    return numels(local.embedding_numels) + layers + numels(local.head_numels)


def optimizer_temporaries(setup: TrainingSetup, states: ModelStates) -> tuple[int, str]:
    """Bytes of the optimizer step's transient buffers on the GPU, and the assumption in words."""
    p = setup.layout
    if p.offload_optimizer != "none":
        return 0, "optimizer offloaded: its temporaries are in CPU memory"
    prof = implementation_for(setup)
    impl = prof.optimizer_impl or setup.workload.optimizer_impl
    paged = setup.lora is not None and setup.lora.paged_optimizer
    if paged:
        # QLoRA's bitsandbytes paged AdamW updates each tensor in one kernel (Optimizer2State.update_step ->
        # F.optimizer_update_32bit): no temporaries, as torch's fused implementation
        impl = "fused"
    opt = setup.optimizer
    label = f"{opt.name} {impl}" + (" (bitsandbytes paged)" if paged else "")
    temps = prof.optimizer_temporaries.get(opt.name, {}).get(impl)
    if temps is None:
        return 0, f"{opt.name} has no {impl} implementation profiled; no temporaries counted"
    state_bytes = opt.state_bytes if opt.state_bytes is not None else setup.recipe.optimizer_states.bytes
    shard = p.dp if p.zero >= 1 else 1
    group = -(-states.local.params // shard)
    pair = 0
    if temps.current or temps.previous:
        if setup.model.architecture is None:
            sizes = [group]
        else:
            sizes = [min(n, group) for n in parameter_order(states.local)]  # ZeRO: the optimizer works on its flat shard
        prev = 0
        for n in sizes:
            pair = max(pair, temps.previous * prev + temps.current * n)
            prev = n
    nbytes = int((temps.group * group + pair) * state_bytes)
    what = []
    if temps.group:
        what.append(f"{temps.group:g} x the parameter group ({group:,} elements)")
    if pair:
        what.append(f"{temps.current:g} x a tensor + {temps.previous:g} x the one before it ({int(pair):,} elements "
                    "at most)")
    return nbytes, f"{label}: " + (" + ".join(what) if what else "no temporaries") + \
        f" in {state_bytes:g}-byte state dtype"


def step_timeline(setup: TrainingSetup, states: ModelStates, kernels: Kernels = "cuda") -> Timeline:
    held = {c: states.gpu_bytes(c) for c in STATE_CATEGORIES}
    if setup.model.architecture is None:
        # No architecture: no activations, but the optimizer step's transients need only the parameter count.
        temps, temps_note = optimizer_temporaries(setup, states)
        master_copy = _master_grad_copy(setup, states)
        phase = _phase("optimizer_step", **held, temporaries=temps + master_copy)
        return Timeline(phases=[phase], components=_step_components(temps, temps_note, master_copy),
                        notes=["no architecture: activations are not estimated (model states and the optimizer "
                               "step only); give a profile name, a config.json or --layers etc."])
    m = setup.model.arch
    p = setup.layout
    acts = activations(setup, kernels)
    prof = implementation_for(setup)
    notes = list(acts.notes)
    comps: list[Component] = []

    persistent = {c: held[c] for c in ("weights", "master_weights", "optimizer_states")}
    gathered = held["gathered_parameters"]
    grads_total = held["gradients"]
    local = states.local
    per_param_grad = grads_total / local.params if local.params else 0.0
    # gradients of the stage's first layer (the last to get its gradients in backward); LoRA: the adapters'
    first_layer_params = local.groups[0].params_per_layer if local.groups else local.layer_params
    first_layer_grads = int(first_layer_params * per_param_grad)
    # LoRA: the LM head and the embeddings are frozen (lora.py), so neither has a gradient
    trainable_head = m.head.lm_head and setup.lora is None
    head_grads = int(-(-m.vocab_size // p.tp) * m.hidden_size * per_param_grad) if trainable_head else 0
    # tied embeddings: embedding backward makes a dense (V, h) gradient and adds it into the LM head's .grad
    embed_grad_temp = head_grads if m.head.tied else 0
    # the embeddings' gradients come at the very end of backward; a tied table's is the LM head's, already counted
    embedding_grads = _embedding_grads(local, per_param_grad)
    if m.head.tied and trainable_head:
        embedding_grads = max(embedding_grads - head_grads, 0)

    saved = acts.saved
    recompute_extra = acts.recompute_extra if p.recompute != "none" else 0
    other = acts.inputs

    # gradient accumulation: from the second micro-batch on, every gradient already exists during forward and
    # backward (accumulated in place), so the worst micro-batch holds them all next to its activations
    accumulated = grads_total if p.grad_accum > 1 else 0
    if accumulated:
        notes.append(f"gradient accumulation over {p.grad_accum} micro-batches: gradients stay "
                     "allocated through every forward and backward after the first")
    forward = _phase("forward", **persistent, gathered_parameters=gathered, other=other, gradients=accumulated,
                     activations=saved - acts.head + acts.forward_only,
                     # a checkpointed (or op-SAC) layer's forward holds its full activations for a moment; the
                     # profile's `full` transient rows are relative to that
                     temporaries=acts.layer_forward + (acts.layer_full if p.recompute in ("full", "selective-op")
                                                       else 0))
    loss = _phase("loss", **persistent, gathered_parameters=gathered, other=other, gradients=accumulated,
                  activations=saved + acts.forward_only, temporaries=acts.loss_forward)
    bwd_start = dict(activations=saved, temporaries=acts.loss_backward)
    # first layer's backward: head done (its gradients allocated, its saved tensors freed), one layer recomputed
    first = dict(activations=saved - acts.head + recompute_extra, gradients=head_grads,
                 temporaries=acts.layer_backward)
    # the last layer's backward (the stage's first layer): only its saved tensors and the embedding's remain,
    # every other layer's gradients exist
    last = dict(activations=acts.embedding + int(acts.in_flight * acts.first_layer_kept) + recompute_extra,
                gradients=head_grads + max(int(local.params * per_param_grad) - head_grads - first_layer_grads
                                           - embedding_grads, 0),
                temporaries=acts.layer_backward)
    end = dict(activations=0, gradients=grads_total, temporaries=embed_grad_temp)
    fsdp_block, fsdp_root = _fsdp_backward(setup, local, m, notes)
    for c in (first, last):
        c["temporaries"] += fsdp_block
        c["gradients"] += fsdp_root
    candidates = [bwd_start, first, last, end]
    if accumulated:
        for c in candidates:
            c["gradients"] = grads_total
    worst = max(candidates, key=lambda d: sum(d.values()))
    backward = _phase("backward", **persistent, gathered_parameters=gathered, other=other, **worst)

    temps, temps_note = optimizer_temporaries(setup, states)
    master_copy = _master_grad_copy(setup, states)
    if master_copy:
        notes.append(f"master weights: the step materializes {prof.master_grad_copy_bytes:g} B/param of fp32 "
                     "gradients for the master copy before updating it")
    step = _phase("optimizer_step", **persistent, other=other, gradients=grads_total,
                  temporaries=temps + master_copy)
    zero = _phase("zero_grad", **persistent, other=other, gradients=grads_total)
    notes.append(f"optimizer step temporaries: {temps_note}")

    for line in acts.lines:
        # bytes per GPU like every other component; layer lines say their per-layer size in the note
        mult = acts.in_flight * line.layers if line.region.startswith("layer") else 1
        # a forward-only row kept by every layer ("per layer: KV cache ...") is counted for all of them: say so
        name = line.name.replace("per layer: ", "", 1) + ", every layer" if line.name.startswith("per layer: ") \
            else line.name
        comps.append(Component(name=f"{line.region}: {name}", category="activations",
                               bytes=int(line.bytes * mult) - line.less, detail=line.detail, rows=line.rows,
                               note="; ".join(filter(None, [_line_note(line, acts), line.note]))))
    if acts.dequant_temporary:
        comps.append(Component(name="QLoRA dequantised base weight (forward, backward)", category="temporaries",
                               dtype=setup.recipe.compute.value, bytes=acts.dequant_temporary,
                               note="transient: the largest linear's weight, one at a time (bitsandbytes MatMul4Bit)"))
    comps += _step_components(temps, temps_note, master_copy)
    return Timeline(phases=[forward, loss, backward, step, zero], components=comps, notes=notes, activations=acts)


def _fsdp_backward(setup: TrainingSetup, local: LocalParameters, m, notes: list[str]) -> tuple[int, int]:
    """FSDP2's unsharded gradients in backward (engines/fsdp.py `backward_transients`); nothing for other engines."""
    p = setup.layout
    if p.engine != "fsdp" or p.zero < 2 or setup.lora is not None:
        return 0, 0
    from memplan.engines import fsdp

    head = sum(r * c * k for r, c, k in local.head_numels if c > 1)
    if not head and m.head.tied and m.head.lm_head:
        head = sum(r * c * k for r, c, k in local.embedding_numels[:1])
    block, root, note = fsdp.backward_transients(local.layer_params, head, setup.recipe)
    notes.append(note)
    return block, root


def _embedding_grads(local: LocalParameters, per_param_grad: float) -> int:
    """Gradients of the embeddings (and extras) on this stage: allocated at the very end of backward."""
    return int(sum(r * c * k for r, c, k in local.embedding_numels) * per_param_grad)


def _master_grad_copy(setup: TrainingSetup, states: ModelStates) -> int:
    """fp32 gradients a master-weights step materializes (the implementation profile's bytes per parameter)."""
    p = setup.layout
    prof = implementation_for(setup)
    if setup.recipe.master_weights is None or not prof.master_grad_copy_bytes or p.offload_optimizer != "none":
        return 0
    shard = p.dp if p.zero >= 1 else 1
    return int(prof.master_grad_copy_bytes * -(-states.local.params // shard))


def _step_components(temps: int, temps_note: str, master_copy: int) -> list[Component]:
    comps = []
    if master_copy:
        comps.append(Component(name="fp32 gradients for the master weights (step)", category="temporaries",
                               dtype="fp32", bytes=master_copy, note="transient, optimizer step"))
    if temps:
        comps.append(Component(name="optimizer temporaries (step)", category="temporaries", bytes=temps,
                               note=temps_note))
    return comps


def _line_note(line, acts: Activations) -> str:
    if line.region.startswith("layer"):
        per = (f"{line.bytes / 2**20:,.1f} MiB" if line.bytes >= 2**20 else f"{line.bytes / 2**10:,.0f} KiB"
               if line.bytes >= 2**10 else f"{line.bytes:,} B")
        return (f"{per} per layer and micro-batch x {line.layers} layers"
                + (f" x {acts.in_flight:g} micro-batches in flight" if acts.in_flight != 1 else ""))
    if line.region == "forward only":
        return "alive during forward and loss, freed before backward"
    return ""
