"""Saved activations and the step's transient buffers, from the architecture and an implementation profile.

The profile (profiles/implementations/*.json, read by implementations.py) lists tensors; this module only binds
the sizes (batch, sequence, the real head counts and widths of the architecture), picks the precision mode from
the recipe, applies recompute and tensor/sequence parallelism as Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", arXiv 2205.05198) sec. 4 and Table 2 do, and the pipeline's
micro-batches in flight as their sec. 4.2.3 / eq. (5) do.
"""
from __future__ import annotations

import re

from pydantic import BaseModel

from memplan.errors import MemplanError
from memplan.memory.implementations import (ImplementationProfile, Kernels, Mode, Tensor, evaluate,
                                            get_implementation)
from memplan.memory.lora import lora_activation_adjustment
from memplan.spec.model import Attention, LayerGroup, LayerSpec, Model
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import DType, Recipe


class Line(BaseModel):
    """One row of the activation breakdown (bytes per GPU; layer rows per layer and micro-batch)."""

    region: str
    name: str
    bytes: int
    note: str = ""
    layers: int = 0  # layer rows: how many layers of the stage keep this per micro-batch
    group: int | None = None  # layer rows: the index of the layer kind (LayerActivations.kind_index)
    holds: list[str] = []  # the implementation row's `holds`: which saved inputs it is (LoRA reduces them)
    less: int = 0  # bytes per GPU off the row's total: what only one layer of the stage does not save (LoRA)
    detail: str = ""  # the implementation rows' `detail` (traced: the aten ops that made and saved them)
    rows: int = 1  # implementation rows of this name in this region, added up into this line


class LayerActivations(BaseModel):
    """One layer group of the stage, per layer and micro-batch."""

    kind: str
    kind_index: int = 0  # its layer kind among the stage's distinct kinds (Line.group: the rows are per kind)
    count: int
    kept: int  # kept for backward (the checkpoint only, under full recompute)
    full: int  # kept without recompute (what a recomputed layer holds during its backward)
    forward: int  # transients inside its forward, on top of what it saves
    backward: int  # transients inside its backward (gradients of activations in flight)


class Activations(BaseModel):
    """Bytes per GPU of the pipeline stage that holds the most, split the way the timeline needs them."""

    mode: str
    layers: int  # transformer layers on this stage
    in_flight: float  # micro-batches whose activations the stage holds at once (x interleave factor)
    groups: list[LayerActivations]
    embedding: int
    head: int
    forward_only: int
    loss_forward: int
    loss_backward: int
    inputs: int
    lines: list[Line]
    notes: list[str] = []
    dequant_temporary: int = 0  # QLoRA: one dequantised base weight, in layer_forward and layer_backward too
    implementation: str = ""

    @property
    def layers_kept(self) -> int:
        """Kept by all layers of the stage for one micro-batch."""
        return sum(g.count * g.kept for g in self.groups)

    @property
    def saved(self) -> int:
        """Everything kept for backward at the start of backward."""
        return int(self.in_flight * self.layers_kept) + self.embedding + self.head

    @property
    def layer(self) -> int:
        """Kept per layer and micro-batch by the stage's first layer group (all layers, for a uniform model)."""
        return self.first_layer_kept

    @property
    def first_layer_kept(self) -> int:
        """The stage's first layer: the last whose saved tensors backward frees."""
        return self.groups[0].kept if self.groups else 0

    @property
    def recompute_extra(self) -> int:
        """A recomputed layer holds its full activations during its own backward, beyond what it kept."""
        return max((g.full - g.kept for g in self.groups), default=0)

    @property
    def layer_forward(self) -> int:
        return max((g.forward for g in self.groups), default=0) + self.dequant_temporary

    @property
    def layer_backward(self) -> int:
        return max((g.backward for g in self.groups), default=0) + self.dequant_temporary

    @property
    def layer_full(self) -> int:
        return max((g.full for g in self.groups), default=0)


def precision_mode(recipe: Recipe) -> Mode:
    """fp32 weights + autocast -> autocast; 16-bit (or 8-bit compute) weights -> half; else fp32."""
    if recipe.autocast:
        return "autocast"
    if recipe.weights in (DType.fp32, DType.tf32) and recipe.compute in (DType.fp32, DType.tf32):
        return "fp32"
    return "half"


def model_features(m: Model, setup: TrainingSetup, mode: Mode, kernels: Kernels,
                   prof: ImplementationProfile) -> dict[str, object]:
    """Features of the model as a whole (embedding, head and loss rows); activation-rows interface."""
    first = m.first
    attn = m.first_attention  # a hybrid's first layer may be a recurrent mixer
    family = m.family.lower().replace("-", "_")
    return {**{flag: family in fams for flag, fams in prof.family_flags.items()},
            "attention": setup.workload.attention, "mode": mode, "kernels": kernels,
            # op-level SAC runs each block like a checkpointed one (what it does not save is freed at once and
            # recomputed in backward): the profile's rows of the `full` runs describe its transients
            "recompute": "full" if setup.layout.recompute == "selective-op" else setup.layout.recompute,
            "frozen": setup.lora is not None,
            "lm_head": m.head.lm_head, "final_norm": m.head.final_norm,
            "tied_embeddings": m.head.tied, "embedding_norm": m.embeddings.norm,
            "token_types": m.embeddings.token_types > 0, "embedding_dropout": m.embeddings.dropout > 0,
            "embedding_scale": m.embeddings.scale, "logit_softcap": m.head.softcap is not None,
            "objective": m.head.objective, "mlm_transform": m.head.mlm_transform, "pooler": m.head.pooler,
            "causal": m.causal,
            # kept for the hand-written rows of the head: the final norm is of the model's norm kind
            "norm": m.norm.kind, "norm_bias": m.norm.bias,
            "position": attn.position if attn is not None else "none",
            "mlp": "swiglu" if first.ffn.gated else "gelu", "moe": m.moe}


# stands in for a mixer layer's missing attention in the features (no window, no dropout, no sinks); its sizes are 0
_NO_ATTENTION = Attention(heads=1, kv_heads=1, head_dim=1, position="none")


def layer_features(layer: LayerSpec, m: Model, setup: TrainingSetup, mode: Mode, kernels: Kernels,
                   prof: ImplementationProfile) -> dict[str, object]:
    """Features of one layer kind (layer rows' `when`); see the module docstring of implementations.py."""
    at, ffn = layer.attn, layer.ffn
    if at is None:  # a recurrent/convolutional mixer layer: attention features at their "absent" values
        at = _NO_ATTENTION
    attention = setup.workload.attention
    # transformers builds the sliding mask once kv_length >= the window (masking_utils sliding_window_overlay /
    # local_attention_size): a window as long as the sequence is masked too
    window_mask = at.window is not None and setup.seq >= at.window
    return {**model_features(m, setup, mode, kernels, prof),
            "mixer": layer.mixer.kind if layer.mixer is not None else "none",
            "attn_kind": "none" if layer.attn is None else at.kind, "gqa": at.kind in ("gqa", "mqa"), "window_kind": at.window_kind,
            "window_mask": window_mask, "softcap": at.softcap is not None, "sinks": at.sinks,
            "qk_norm": at.qk_norm, "position": at.position, "fused_qkv": at.fused_qkv,
            "mlp": "swiglu" if ffn.gated else "gelu", "gated": ffn.gated, "activation": ffn.activation,
            "moe": ffn.moe, "shared_expert": ffn.shared_intermediate_size > 0, "fused_gate_up": ffn.fused_gate_up,
            "norm": layer.norm.kind, "norm_bias": layer.norm.bias, "norm_place": layer.norm_place,
            "parallel_residual": layer.parallel_residual, "attention_dropout": at.dropout > 0,
            "hidden_dropout": layer.dropout > 0, "causal": at.causal,
            # PyTorch's CPU sdpa has no fused kernel with dropout: it runs the math reference (fp32, s^2 tensors)
            "sdpa_math": kernels == "cpu" and attention == "sdpa" and at.dropout > 0}


def layer_sizes(layer: LayerSpec, m: Model, b: int, s: int, n_layers: int, prof: ImplementationProfile,
                tp: int = 1) -> dict[str, int]:
    # a mixer layer (Gated DeltaNet, short conv) takes the model's attention sizes: tensors made once per step for
    # every layer (rotary cos/sin of head_dim) are traced in the first layer's context, which may be a mixer's;
    # the mixer's own dims are no size names: they stay the config's in every probe and are read as constants
    at, ffn = layer.attn or m.first_attention, layer.ffn
    lin = m.linears(layer)
    if at is None:  # no attention anywhere (Mamba): no attention sizes
        return _mixer_sizes(layer, m, b, s, n_layers, prof, tp, lin)
    k = ffn.top_k if ffn.moe else 1
    window = min(s, at.window) if at.window is not None else s
    return {
        "b": b, "s": s, "L": n_layers, "h": m.hidden_size, "q": at.q_size, "kv": at.kv_size,
        "vw": at.kv_heads * at.value_dim, "f": ffn.intermediate_size, "fk": ffn.intermediate_size * k,
        "fs": ffn.shared_intermediate_size, "a": at.heads, "g": at.kv_heads, "d": at.head_dim, "dv": at.value_dim,
        "V": m.vocab_size, "P": m.max_positions, "E": ffn.experts, "K": k, "w": window, "lq": at.q_lora_rank or 0,
        "lkv": at.kv_lora_rank or 0, "dr": at.qk_rope_head_dim,
        "qkv_linears": 1 if at.fused_qkv else 3,
        "mlp_in_linears": 2 if ffn.gated and not ffn.fused_gate_up else 1,
        "norms": layer.norms, "norm_inputs": 1 if layer.parallel_residual else layer.norms,
        "act_saves": prof.activation_saves.get(ffn.activation, 0),
        # autocast casts each weight once per forward (its cache); MoE: every expert that receives tokens
        "n_linear_params": sum(x.shard(tp).params - x.shard(tp).count * x.shard(tp).bias for x in lin),
        "n_head_params": m.vocab_size * m.hidden_size if m.head.lm_head else 0,
    }


def _one_chunk(layer: LayerSpec, s: int) -> None:
    """A chunked-scan mixer's rows hold one chunk: refuse a longer sequence rather than misstate it."""
    chunk = layer.mixer.chunk if layer.mixer is not None else 0
    if chunk and s > chunk:
        raise MemplanError(
            f"sequence {s} (per rank) is longer than one {chunk}-token chunk of a {layer.mixer.describe()} layer: its "
            "traced rows are transformers' CPU reference path (torch_chunk_gated_delta_rule) at one chunk, whose "
            "Python loop over chunks the trace cannot follow across probes, and CUDA's fla kernel "
            f"(chunk_gated_delta_rule) saves other tensors; estimated only for --seq up to {chunk}")


def _mixer_sizes(layer: LayerSpec, m: Model, b: int, s: int, n_layers: int, prof: ImplementationProfile, tp: int,
                 lin: list) -> dict[str, int]:
    ffn = layer.ffn
    k = ffn.top_k if ffn.moe else 1
    zero = dict.fromkeys(("q", "kv", "vw", "a", "g", "d", "dv", "lq", "lkv", "dr"), 0)
    return {**zero, "b": b, "s": s, "L": n_layers, "h": m.hidden_size, "f": ffn.intermediate_size,
            "fk": ffn.intermediate_size * k, "fs": ffn.shared_intermediate_size, "V": m.vocab_size,
            "P": m.max_positions, "E": ffn.experts, "K": k, "w": s, "qkv_linears": 0,
            "mlp_in_linears": 2 if ffn.gated and not ffn.fused_gate_up else 1, "norms": layer.norms,
            "norm_inputs": 1 if layer.parallel_residual else layer.norms,
            "act_saves": prof.activation_saves.get(ffn.activation, 0),
            "n_linear_params": sum(x.shard(tp).params - x.shard(tp).count * x.shard(tp).bias for x in lin),
            "n_head_params": m.vocab_size * m.hidden_size if m.head.lm_head else 0}


def _matches(when: dict, feats: dict) -> bool:
    for key, want in when.items():
        if key not in feats:
            raise MemplanError(f"implementation profile: unknown feature {key!r} in a `when` clause")
        have = feats[key]
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def _present(t: Tensor, mode: Mode, kernels: Kernels) -> bool:
    table = t.cpu_bytes if (kernels == "cpu" and t.cpu_bytes is not None) else t.bytes
    return bool(table.get(mode))


def _tensor_bytes(t: Tensor, mode: Mode, kernels: Kernels, sizes: dict[str, int], tp: int, sp: bool) -> int:
    table = t.cpu_bytes if (kernels == "cpu" and t.cpu_bytes is not None) else t.bytes
    per = table.get(mode, 0)
    if not per:
        return 0
    div = tp if (t.tp == "split" or (t.tp == "sp" and sp)) else 1
    n = evaluate(t.elems, sizes) * per
    return -int(-n // div)  # ceil: a shard is at least its share


def dispatch_buffer_bytes(setup: TrainingSetup, layer: LayerSpec, b: int, s: int) -> int:
    """Expert parallelism's all-to-all: each rank permutes its tokens x top-k copies of the hidden state into a send
    buffer and receives as many (balanced routing) for its local experts (megatron/core/transformer/moe/
    token_dispatcher.py MoEAlltoAllTokenDispatcher.token_permutation: permuted_local_input_tokens, then
    global_input_tokens).  Sequence parallelism divides the tokens by tp first."""
    p = setup.layout
    if p.ep == 1 or not layer.ffn.moe:
        return 0
    cb = max(setup.recipe.compute.bytes, 2)
    tokens = b * s // (p.tp if p.sequence_parallel else 1)
    return int(2 * tokens * layer.ffn.top_k * setup.model.arch.hidden_size * cb)


def implementation_for(setup: TrainingSetup) -> ImplementationProfile:
    """The workload's implementation profile; `hf` means the traced profile of the model's family
    (profiles/implementations/hf-<family>.json; hf-<family>-seq-cls.json for a score head; a trace of a config of
    the same structure first: traced_for below) when there is one, else the hand-written hf.json.

    LoRA/QLoRA: the traced profile when it was traced with every parameter frozen in the recipe's precision mode
    (`frozen_modes`; rows `when: {frozen: true}`), else the hand-written rows, which memory/lora.py adjusts from
    the full step (tests/test_lora.py measures both against PEFT steps)."""
    name = setup.workload.implementation
    m = setup.model.architecture
    if name == "hf" and m is not None:
        traced = traced_for(m)
        if traced is not None and (setup.lora is None or precision_mode(setup.recipe) in traced.frozen_modes):
            return traced
    return get_implementation(name)


def stage_groups_of(setup: TrainingSetup) -> list[LayerGroup]:
    """The layer groups on the most activation-loaded pipeline stage: the first (Korthikanti et al. 2022 sec.
    4.2.3: with 1F1B it holds the most micro-batches in flight)."""
    m = setup.model.arch
    start, stop = setup.layout.stage_bounds(m.n_layers)[0]
    return m.slice(start, stop)


def _add_row(lines: list[Line], line: Line) -> None:
    """Rows of one name in one region (and layer kind) are one line: their bytes added, `rows` counting them."""
    for other in lines:
        if (other.region, other.name, other.group, other.layers, other.holds) == \
                (line.region, line.name, line.group, line.layers, line.holds):
            other.bytes += line.bytes
            other.rows += 1
            if line.detail and line.detail not in other.detail:
                other.detail = f"{other.detail}; {line.detail}" if other.detail else line.detail
            return
    lines.append(line)


def activations(setup: TrainingSetup, kernels: Kernels = "cuda", groups: list[LayerGroup] | None = None
                ) -> Activations:
    """Activation bytes for `setup` with `kernels` (cuda, or the CPU kernels the validation runs use).

    `groups`: the layer groups on the stage (default: the first pipeline stage, which holds the most)."""
    m = setup.model.arch
    p = setup.layout
    prof = implementation_for(setup)
    mode = precision_mode(setup.recipe)
    stage = groups if groups is not None else stage_groups_of(setup)
    n_layers = sum(g.count for g in stage)
    b = p.micro_batch
    s = -(-setup.seq // p.cp)  # context parallelism: each rank holds its share of the sequence
    tp, sp = p.tp, p.sequence_parallel
    lines: list[Line] = []
    # one set of rows per layer kind (Gemma 2 alternates two kinds over 42 groups of one layer): evaluated once,
    # shown once with the count of layers of that kind; labelled by attention unless two kinds share it
    kinds = list(dict.fromkeys(g.layer for g in stage))
    by_attention = len({k.mixer_describe() for k in kinds}) == len(kinds)

    def total(region: str, rows: list[Tensor], feats: dict, sizes: dict, keep=lambda t: True,
              record: bool = True, layers: int = 0, group: int | None = None) -> int:
        moments: dict[str, int] = {}
        for t in rows:
            if not keep(t) or not _matches(t.when, feats) or not _present(t, mode, kernels):
                continue  # a row of another mode registers no moment (a moment may be legitimately negative)
            nbytes = _tensor_bytes(t, mode, kernels, sizes, tp, sp)
            if nbytes and record:
                _add_row(lines, Line(region=region, name=t.name, bytes=nbytes, layers=layers, group=group,
                                     holds=t.holds, detail=t.detail))
            moments[t.moment] = moments.get(t.moment, 0) + nbytes
        return max(moments.values(), default=0)

    group_acts: list[LayerActivations] = []
    per_kind: dict[LayerSpec, tuple[LayerActivations, list[Line]]] = {}
    for g in stage:
        if g.layer in per_kind:
            done, rows = per_kind[g.layer]
            for line in rows:
                line.layers += g.count
            group_acts.append(done.model_copy(update={"count": g.count}))
            continue
        i = kinds.index(g.layer)
        feats = layer_features(g.layer, m, setup, mode, kernels, prof)
        _one_chunk(g.layer, s)
        sizes = layer_sizes(g.layer, m, b, s, n_layers, prof, tp)
        label = "layer" if len(kinds) == 1 else \
            f"layer [{g.layer.mixer_describe() if by_attention else g.layer.kind}]"
        first_row = len(lines)
        every = p.recompute_every if p.recompute == "full" else 1
        # full recompute of every Nth layer (torchtitan selective_ac_option N): count // N layers checkpointed
        ckpt_layers = g.count // every if every > 1 else g.count
        full = total(label, prof.layer, feats, sizes, record=p.recompute == "none" or ckpt_layers < g.count,
                     layers=g.count - ckpt_layers if p.recompute == "full" else g.count, group=i)
        if p.recompute == "full":
            kept = total(f"{label} (checkpoint)", prof.checkpoint, feats, sizes, layers=ckpt_layers, group=i,
                         record=ckpt_layers > 0)
            if ckpt_layers < g.count:  # the layer average: what the timeline multiplies by the layer count
                kept = (ckpt_layers * kept + (g.count - ckpt_layers) * full) // g.count
        elif p.recompute == "selective":
            kept = total(label, prof.layer, feats, sizes, keep=lambda t: not t.core, layers=g.count, group=i)
        elif p.recompute == "selective-op":
            kept = _op_sac(lines, setup, g, label, i, b, s)
        else:
            kept = full
        dispatch = dispatch_buffer_bytes(setup, g.layer, b, s)
        group_acts.append(LayerActivations(
            kind=g.layer.kind, kind_index=i, count=g.count, kept=kept, full=full,
            forward=total("layer forward (transient)", prof.layer_forward, feats, sizes, record=False) + dispatch,
            backward=total("layer backward (transient)", prof.layer_backward, feats, sizes, record=False)
            + dispatch))
        per_kind[g.layer] = (group_acts[-1], lines[first_row:])
    notes: list[str] = []
    dispatch = max((dispatch_buffer_bytes(setup, g.layer, b, s) for g in stage), default=0)
    if dispatch:
        notes.append(f"expert parallel (ep={p.ep}): all-to-all dispatch buffers of {dispatch / 2**20:,.1f} MiB per "
                     "MoE layer while it runs (the permuted tokens sent and those received: 2 x tokens x top-k x "
                     "hidden, Megatron-Core MoEAlltoAllTokenDispatcher), counted as layer transients")
    in_flight = 1.0
    if p.pp > 1:
        # Korthikanti et al. 2022 sec. 4.2.3: with 1F1B the first stage holds p micro-batches of L/p layers; the
        # interleaved schedule multiplies that by (1 + (p - 1) / (p * m)), m model chunks per rank (their eq. 5).
        in_flight = p.pp * (1 + (p.pp - 1) / (p.pp * p.virtual_stages)) if p.virtual_stages > 1 else float(p.pp)
        # ... but never more micro-batches than the step has: Megatron-LM schedules.py (1F1B) runs
        # num_warmup_microbatches = min(pp - rank - 1, num_microbatches) before its first backward.
        in_flight = min(in_flight, float(p.grad_accum))
        notes.append(f"pipeline: the first stage holds {in_flight:g} micro-batch(es) of activations in flight "
                     f"(1F1B, Korthikanti et al. 2022 sec. 4.2.3; at most the {p.grad_accum} micro-batch(es) per "
                     "step); its activations are added to the most loaded stage's model states (conservative)")
    mfeats = layer_features(m.first, m, setup, mode, kernels, prof)  # model rows see the first layer too
    msizes = layer_sizes(m.first, m, b, s, n_layers, prof, tp)
    acts = Activations(
        mode=mode, layers=n_layers, in_flight=in_flight, groups=group_acts,
        embedding=total("embedding", prof.embedding, mfeats, msizes), head=total("head", prof.head, mfeats, msizes),
        forward_only=total("forward only", prof.forward_only, mfeats, msizes),
        loss_forward=total("loss (transient)", prof.loss_forward, mfeats, msizes, record=False),
        loss_backward=total("loss backward (transient)", prof.loss_backward, mfeats, msizes, record=False),
        inputs=total("inputs", prof.inputs, mfeats, msizes, record=False), lines=lines, notes=notes,
        implementation=prof.name)
    if setup.lora is not None:
        _apply_lora(acts, setup, prof)
    return acts


def _op_sac(lines: list[Line], setup: TrainingSetup, g: LayerGroup, label: str, i: int, b: int, s: int) -> int:
    """torchtitan's op-level SAC: what one block keeps, derived from its policy and model code (engines/
    torchtitan.py `op_sac_rows`); the recomputed block's full activations are the profile's rows as usual."""
    from memplan.engines import torchtitan

    p = setup.layout
    rows = torchtitan.op_sac_rows(g.layer, setup.model.arch, b, s, p.tp, max(setup.recipe.compute.bytes, 2))
    for name, nbytes in rows:
        lines.append(Line(region=f"{label} (op-level SAC)", name=name, bytes=nbytes, layers=g.count, group=i,
                          note="torchtitan _save_list, every other mm"))
    return sum(n for _, n in rows)


def _apply_lora(acts: Activations, setup: TrainingSetup, prof: ImplementationProfile) -> None:
    """LoRA/QLoRA relative to full fine-tuning (memplan/memory/lora.py `lora_activation_adjustment`): a frozen
    weight's linear does not save its input (derivatives.yaml: mm saves `self` only for the weight's gradient), the
    adapters save A·x, the frozen LM head saves nothing, and QLoRA dequantises one base weight at a time.

    What is not saved comes off the rows that hold it (`_not_saved`), so no row of the breakdown is negative.  When
    the implementation profile names what its rows hold, what comes off is what they hold (an implementation that
    never kept a tensor cannot drop it: Megatron's fused norm keeps no normalised x); else the adjustment's figure.
    """
    adj = lora_activation_adjustment(setup)
    full_recompute = setup.layout.recompute == "full"
    if acts.mode in prof.frozen_modes:  # the rows were traced with a frozen base (implementation_for)
        _apply_lora_to_frozen_trace(acts, setup, adj, full_recompute)
        return
    # Full recompute: layer 0 holds only its checkpoint until it is recomputed, when the norm may save (PEFT's
    # prepare_model_for_kbit_training calls enable_input_require_grads): its first norm is left in, conservatively.
    cut = _not_saved(acts, adj, per_layer=not full_recompute,
                     first_norm=bool(adj.first_norm_removed_bytes) and not full_recompute)
    for g in acts.groups:
        removed = cut.layer.get(g.kind_index, 0) if cut.tagged and not full_recompute else \
            adj.per_layer_removed_bytes
        _change_layer(g, adj.per_layer_added_bytes - removed, full_recompute)
    _adapter_line(acts, adj, full_recompute)
    acts.head -= cut.head if cut.tagged else adj.once_removed_bytes - adj.first_norm_removed_bytes
    if adj.first_norm_removed_bytes and not full_recompute:
        # nothing upstream of the first adapter requires grad, so layer 0's first norm saves nothing; like the
        # embedding's saved tensors those would live until the very end of backward, so it is taken off there (the
        # embedding figure may go negative; only sums of it are used)
        acts.embedding -= cut.first if cut.tagged else int(acts.in_flight * adj.first_norm_removed_bytes)
    if cut.unshown:
        acts.notes.append(f"LoRA: {cut.unshown / 2**20:,.1f} MiB that the frozen base does not save are off the "
                          f"totals but in no row above (the {acts.implementation} profile's rows do not say what "
                          "they hold: `holds`)")
    if adj.dequant_temporary_bytes:
        acts.dequant_temporary = adj.dequant_temporary_bytes  # in layer_forward and layer_backward
    acts.notes += adj.notes
    arch = setup.model.architecture
    if setup.workload.implementation == "hf" and arch is not None and traced_for(arch):
        acts.notes.append(f"LoRA with {acts.mode} weights: activations from the hand-written decoder rows adjusted "
                          f"for a frozen base ({arch.family}'s frozen-base trace is of 16-bit weights); measured "
                          "against PEFT steps per family in docs/finetune-and-serve.md")
    if acts.mode == "autocast":
        # not measured: autocast keeps a 16-bit copy per consuming linear and caches only weights that require grad
        acts.notes.append("LoRA with fp32 weights + autocast: the activation adjustment is validated for 16-bit "
                          "weights only (tests/test_lora.py); autocast copies may differ")


def _change_layer(g, delta: int, full_recompute: bool) -> None:
    """A LoRA change of what one layer saves.  Selective recompute drops only the attention core (the inputs of
    linears and norms stay saved); under full recompute the checkpoint (the layer input) is unchanged and only the
    recomputed layer feels it."""
    g.full += delta
    if not full_recompute:
        g.kept += delta


def _adapter_line(acts: Activations, adj, full_recompute: bool) -> None:
    if not full_recompute:
        _add_line(acts, Line(region="layer", name="LoRA adapters: A·x", bytes=adj.per_layer_added_bytes,
                             layers=sum(g.count for g in acts.groups),
                             note="tokens x r per adapted linear, kept for B's gradient"))


def _apply_lora_to_frozen_trace(acts: Activations, setup: TrainingSetup, adj, full_recompute: bool) -> None:
    """LoRA on rows traced with every parameter frozen (measure/trace/step.py `frozen`): what the frozen base saves
    and its backward's transients are the trace's; the adapters add A·x (tokens x r per adapted linear, for B's
    gradient) and keep their linear's input alive when the frozen base did not (lora_A needs x for its gradient:
    lora.py's input groups, `adapted`); and since the trace made the embedding output require grad, layer 0's first
    norm is taken off as before (nothing upstream of the first adapter requires grad in a PEFT step)."""
    inputs = sum(g.bytes for g in adj.groups if g.adapted)
    for g in acts.groups:
        _change_layer(g, adj.per_layer_added_bytes + inputs, full_recompute)
    _adapter_line(acts, adj, full_recompute)
    if not full_recompute:
        layers = sum(g.count for g in acts.groups)
        if inputs:
            names = ", ".join(g.name for g in adj.groups if g.adapted)
            _add_line(acts, Line(region="layer", name=f"LoRA adapters: inputs of adapted linears ({names})",
                                 bytes=inputs, layers=layers,
                                 note="lora_A keeps its input for its gradient; the frozen base would not"))
        if adj.first_norm_removed_bytes:
            acts.embedding -= int(acts.in_flight * adj.first_norm_removed_bytes)
            acts.notes.append("LoRA: nothing before the first adapter requires grad, so layer 0's first norm "
                              f"saves nothing ({adj.first_norm_removed_bytes / 2**20:,.2f} MiB per micro-batch "
                              "off the layer rows' total)")
    if adj.dequant_temporary_bytes:
        acts.dequant_temporary = adj.dequant_temporary_bytes
    acts.notes += adj.notes


# the reasons the breakdown gives for a reduction, by the `holds` name of what is not saved
_NOT_SAVED = {
    "attn_in": "the frozen QKV weights' gradients alone need their input", "attn_ctx": "only o_proj's frozen "
    "weight gradient needs its input", "mlp_in": "the frozen gate/up weights' gradients alone need their input",
    "mlp_act": "only down_proj's frozen weight gradient needs its input",
    "norm_y": "the frozen RMSNorm weight's gradient alone needs the normalised x",
    "lm_head_in": "the frozen LM head's weight gradient alone needs its input",
    "final_norm_y": "the frozen final RMSNorm weight's gradient alone needs the normalised x",
    "first_norm_input": "nothing before the first adapter needs a gradient: layer 0's first norm saves nothing",
    "first_norm_stats": "nothing before the first adapter needs a gradient: layer 0's first norm saves nothing",
}


class NotSaved(BaseModel):
    """What came off the rows: per layer of each layer kind, per GPU for layer 0's first norm and the head."""

    tagged: bool  # the profile's rows say what they hold
    layer: dict[int, int] = {}
    first: int = 0
    head: int = 0
    unshown: int = 0  # bytes the adjustment removes that no row holds (per GPU)


def _take(line: Line, wanted: dict[str, int], limit: int) -> tuple[int, list[str]]:
    """Bytes of `wanted` (consumed) that `line` holds, at most `limit`, and which of them."""
    taken, which = 0, []
    for name in line.holds:
        cut = min(wanted.get(name, 0), limit - taken)
        if cut > 0:
            wanted[name] -= cut
            taken += cut
            which.append(name)
    return taken, which


def _reduce(line: Line, wanted: dict[str, int], limit: int, per_gpu: bool = False) -> int:
    """Take what `line` holds of `wanted` off it (its bytes per layer, or per GPU: `less`), saying why."""
    cut, which = _take(line, wanted, limit)
    if cut:
        mib = f"{cut / 2**20:,.1f} MiB"
        if per_gpu:
            line.less += cut
            what = f"{mib} less"
        else:
            line.bytes -= cut
            what = f"{mib} per layer not saved" if line.region.startswith("layer") else f"{mib} not saved"
        line.note = "; ".join(filter(None, [line.note, f"LoRA: {what} ({_NOT_SAVED[which[0]]})"]))
    return cut


def _not_saved(acts: Activations, adj, per_layer: bool, first_norm: bool) -> NotSaved:
    """Take what a frozen base does not save off the rows that hold it (rows tagged `holds`)."""
    layer_rows = [x for x in acts.lines if x.region.startswith("layer") and x.group is not None]
    out = NotSaved(tagged=any(x.holds for x in acts.lines))
    if per_layer:
        removed = {g.name: g.bytes for g in adj.groups if not g.adapted}
        for i in sorted({g.kind_index for g in acts.groups}):
            wanted = dict(removed)
            out.layer[i] = sum(_reduce(x, wanted, x.bytes) for x in layer_rows if x.group == i)
            out.unshown += sum(wanted.values()) * sum(g.count for g in acts.groups if g.kind_index == i)
    if first_norm and acts.groups:
        wanted = {k: int(acts.in_flight * v) for k, v in adj.first_norm_removed.items()}
        # at most one layer's row: the first norm is layer 0's
        out.first = sum(_reduce(x, wanted, int(x.bytes * acts.in_flight), per_gpu=True)
                        for x in layer_rows if x.group == acts.groups[0].kind_index)
        out.unshown += sum(wanted.values())
    wanted = dict(adj.head_removed)
    out.head = sum(_reduce(x, wanted, x.bytes) for x in acts.lines if x.region == "head")
    out.unshown += sum(wanted.values())
    if out.tagged:
        out.unshown = 0  # what the rows do not hold is not removed (see _apply_lora)
    return out


def _add_line(acts: Activations, line: Line) -> None:
    """Insert `line` after the last line of its region, so the table keeps regions together."""
    at = max((i + 1 for i, x in enumerate(acts.lines) if x.region.split(" [")[0] == line.region),
             default=len(acts.lines))
    acts.lines.insert(at, line)


def korthikanti_layer_bytes(setup: TrainingSetup) -> int:
    """Bytes kept per layer (one micro-batch), as Korthikanti et al. 2022 Table 2 tabulates them."""
    return activations(setup).first_layer_kept


# features of layer_features()/model_features() that are the step's, not the model's (the rows' `when` read them
# per estimate): left out of the structure key
_STEP_FEATURES = frozenset({"mode", "kernels", "attention", "recompute", "frozen", "window_mask", "sdpa_math"})


def rows_stem(m: Model, family: str | None = None) -> str:
    """The file stem of a family's traced rows for `m`'s head: hf-<family> (a causal LM, and BERT's heads, which
    its rows tell apart by `when`), hf-<family>-seq-cls for a sequence-classification (reward) score head, whose
    loss and head keep other tensors."""
    fam = (family or m.family).lower().replace("_", "-")
    return f"hf-{fam}" + ("-seq-cls" if m.head.score else "")


def structure_key(m: Model) -> str:
    """A short hash of what decides `m`'s traced rows besides its sizes (rows are polynomials in the sizes): its
    layer kinds' features, in order of first appearance, and the head's -- the features the rows' `when` clauses
    read (memory/activations.py layer_features; measure/trace/profile.py kind_features).  Two configs of one
    model_type with other structure get other keys; two that differ in sizes only share one trace."""
    import hashlib
    import json

    from memplan.spec.model import ModelSpec
    from memplan.spec.setup import TrainingSetup

    dummy = ImplementationProfile(name="key", description="", layer=[], checkpoint=[], embedding=[], head=[])
    setup = TrainingSetup(model=ModelSpec(name="key", architecture=m))
    kinds = [spec for spec, _ in m.kinds()]
    feats = [{k: v for k, v in layer_features(spec, m, setup, "fp32", "cuda", dummy).items()
              if k not in _STEP_FEATURES} for spec in kinds]
    # not the family's name: the stem holds it, and a multimodal config's text model reads as <type>_text
    blob = json.dumps({"kinds": feats}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def keyed_rows_stem(m: Model, family: str | None = None) -> str:
    """Where `memplan trace` writes the rows of one config: hf-<family>[-seq-cls]-<structure key>."""
    return f"{rows_stem(m, family)}-{structure_key(m)}"


def traced_for(m: Model) -> ImplementationProfile | None:
    """The traced rows an estimate of `m` reads: those `memplan trace` made of a config of the same structure
    (hf-<family>[-seq-cls]-<key>), else the family's shipped rows for its head (hf-<family>[-seq-cls])."""
    from memplan.catalog import _find, _folders

    base = rows_stem(m)
    try:  # only when some keyed trace of the family exists (the key costs a few milliseconds)
        pattern = re.compile(re.escape(base) + r"-[0-9a-f]{8}\.json")
        keyed = any(pattern.fullmatch(e.name) for folder in _folders("implementations") for e in folder.iterdir())
    except MemplanError:
        keyed = False
    if keyed:
        found = _find("implementations", ImplementationProfile, f"{base}-{structure_key(m)}")
        if found is not None:
            return found
    return _find("implementations", ImplementationProfile, base)
