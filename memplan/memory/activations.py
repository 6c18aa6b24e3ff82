"""Saved activations and the step's transient buffers, from the architecture and an implementation profile.

The profile (profiles/implementations/*.json, read by implementations.py) lists tensors; this module only binds
the sizes (batch, sequence, the real head counts and widths of the architecture), picks the precision mode from
the recipe, applies recompute and tensor/sequence parallelism as Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", arXiv 2205.05198) sec. 4 and Table 2 do, and the pipeline's
micro-batches in flight as their sec. 4.2.3 / eq. (5) do.
"""
from __future__ import annotations

from pydantic import BaseModel

from memplan.errors import MemplanError
from memplan.memory.implementations import ImplementationProfile, Kernels, Mode, Tensor, evaluate, get_implementation
from memplan.memory.lora import lora_activation_adjustment
from memplan.spec.model import Architecture
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import DType, Recipe


class Line(BaseModel):
    """One row of the activation breakdown (bytes per GPU)."""

    region: str
    name: str
    bytes: int
    note: str = ""


class Activations(BaseModel):
    """Bytes per GPU of the pipeline stage that holds the most, split the way the timeline needs them."""

    mode: str
    layers: int  # transformer layers on this stage
    in_flight: float  # micro-batches whose activations the stage holds at once (x interleave factor)
    layer: int  # kept per layer and micro-batch (the checkpoint only, under full recompute)
    layer_full: int  # kept per layer without recompute (what a recomputed layer holds during its backward)
    embedding: int
    head: int
    forward_only: int
    loss_forward: int
    loss_backward: int
    layer_forward: int
    layer_backward: int
    inputs: int
    lines: list[Line]
    notes: list[str] = []
    dequant_temporary: int = 0  # QLoRA: one dequantised base weight, in layer_forward and layer_backward too

    @property
    def saved(self) -> int:
        """Everything kept for backward at the start of backward."""
        return int(self.in_flight * self.layers * self.layer) + self.embedding + self.head


def precision_mode(recipe: Recipe) -> Mode:
    """fp32 weights + autocast -> autocast; 16-bit (or 8-bit compute) weights -> half; else fp32."""
    if recipe.autocast:
        return "autocast"
    if recipe.weights in (DType.fp32, DType.tf32) and recipe.compute in (DType.fp32, DType.tf32):
        return "fp32"
    return "half"


def _features(a: Architecture, setup: TrainingSetup, mode: Mode, kernels: Kernels,
              prof: ImplementationProfile) -> dict[str, object]:
    w = setup.workload
    family = a.family.lower().replace("-", "_")
    return {**{flag: family in fams for flag, fams in prof.family_flags.items()},
        "attention": w.attention, "mlp": a.mlp, "norm": a.norm, "position": a.position, "fused_qkv": a.fused_qkv,
        "activation": a.activation, "parallel_residual": a.parallel_residual, "tied_embeddings": a.tied_embeddings,
        "gqa": a.kv_heads < a.n_heads, "moe": a.n_experts > 0, "mode": mode, "kernels": kernels,
        "lm_head": a.lm_head, "final_norm": a.final_norm, "norm_bias": a.norm_bias, "causal": a.causal,
        "attention_dropout": a.attention_dropout > 0, "hidden_dropout": a.hidden_dropout > 0,
        "embedding_dropout": a.embedding_dropout > 0, "recompute": setup.layout.recompute,
        "embedding_norm": a.embedding_norm, "token_types": a.token_type_vocab > 0,
        # PyTorch's CPU sdpa has no fused kernel with dropout: it runs the math reference (fp32, s^2 tensors)
        "sdpa_math": kernels == "cpu" and w.attention == "sdpa" and a.attention_dropout > 0,
        # a sliding window shorter than the sequence needs an explicit mask (no is_causal shortcut)
        "window_mask": a.sliding_window is not None and setup.seq > a.sliding_window,
    }


def _sizes(a: Architecture, b: int, s: int, n_layers: int, prof: ImplementationProfile) -> dict[str, int]:
    lin = a.linears()
    k = max(a.experts_per_token, 1) if a.n_experts else 1
    return {
        "b": b, "s": s, "L": n_layers, "h": a.hidden_size, "q": a.q_size, "kv": a.kv_size, "f": a.ffn_hidden_size,
        "fk": a.ffn_hidden_size * k, "a": a.n_heads, "g": a.kv_heads, "d": a.head_size, "V": a.vocab_size,
        "E": a.n_experts, "qkv_linears": 1 if a.fused_qkv else 3, "mlp_in_linears": 2 if a.mlp == "swiglu" else 1,
        "norms": a.norms_per_layer, "norm_inputs": 1 if a.parallel_residual else a.norms_per_layer,
        "act_saves": prof.activation_saves.get(a.activation, 0),
        # autocast casts each weight once per forward (its cache); MoE: every expert that receives tokens
        "n_linear_params": sum(x.in_features * x.out_features * x.count for x in lin),
        "n_head_params": a.vocab_size * a.hidden_size if a.lm_head else 0,
    }


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


def _tensor_bytes(t: Tensor, mode: Mode, kernels: Kernels, sizes: dict[str, int], tp: int, sp: bool) -> int:
    table = t.cpu_bytes if (kernels == "cpu" and t.cpu_bytes is not None) else t.bytes
    per = table.get(mode, 0)
    if not per:
        return 0
    div = tp if (t.tp == "split" or (t.tp == "sp" and sp)) else 1
    n = evaluate(t.elems, sizes) * per
    return -int(-n // div)  # ceil: a shard is at least its share


def activations(setup: TrainingSetup, kernels: Kernels = "cuda", layers: int | None = None) -> Activations:
    """Activation bytes for `setup` with `kernels` (cuda, or the CPU kernels the validation runs use).

    `layers`: transformer layers on the stage (default: all layers / pp, the most loaded stage)."""
    a = setup.model.arch
    w, p = setup.workload, setup.layout
    prof = get_implementation(w.implementation)
    mode = precision_mode(setup.recipe)
    feats = _features(a, setup, mode, kernels, prof)
    n_layers = layers if layers is not None else -(-a.n_layers // p.pp)
    sizes = _sizes(a, setup.layout.micro_batch, setup.seq, n_layers, prof)
    tp, sp = p.tp, p.sequence_parallel
    lines: list[Line] = []

    def total(region: str, rows: list[Tensor], keep=lambda t: True, record: bool = True) -> int:
        moments: dict[str, int] = {}
        for t in rows:
            if not keep(t) or not _matches(t.when, feats):
                continue
            nbytes = _tensor_bytes(t, mode, kernels, sizes, tp, sp)
            if nbytes and record:
                lines.append(Line(region=region, name=t.name, bytes=nbytes))
            moments[t.moment] = moments.get(t.moment, 0) + nbytes
        return max(moments.values(), default=0)

    layer_full = total("layer", prof.layer, record=setup.layout.recompute == "none")
    if setup.layout.recompute == "full":
        layer = total("layer (checkpoint)", prof.checkpoint)
    elif setup.layout.recompute == "selective":
        layer = total("layer", prof.layer, keep=lambda t: not t.core)
    else:
        layer = layer_full
    notes: list[str] = []
    in_flight = 1.0
    if p.pp > 1:
        # Korthikanti et al. 2022 sec. 4.2.3: with 1F1B the first stage holds p micro-batches of L/p layers; the
        # interleaved schedule multiplies that by (1 + (p - 1) / (p * m)), m model chunks per rank (their eq. 5).
        in_flight = p.pp * (1 + (p.pp - 1) / (p.pp * p.virtual_stages)) if p.virtual_stages > 1 else float(p.pp)
        # ... but never more micro-batches than the step has: Megatron-LM schedules.py (1F1B) runs
        # num_warmup_microbatches = min(pp - rank - 1, num_microbatches) before its first backward.
        in_flight = min(in_flight, float(setup.layout.grad_accum))
        notes.append(f"pipeline: the first stage holds {in_flight:g} micro-batch(es) of activations in flight "
                     f"(1F1B, Korthikanti et al. 2022 sec. 4.2.3; at most the {setup.layout.grad_accum} micro-batch(es) per "
                     "step); its activations are added to the most loaded stage's model states (conservative)")
    embedding = total("embedding", prof.embedding)
    head = total("head", prof.head)
    acts = Activations(
        mode=mode, layers=n_layers, in_flight=in_flight, layer=layer, layer_full=layer_full, embedding=embedding,
        head=head, forward_only=total("forward only", prof.forward_only),
        loss_forward=total("loss (transient)", prof.loss_forward, record=False),
        loss_backward=total("loss backward (transient)", prof.loss_backward, record=False),
        layer_forward=total("layer forward (transient)", prof.layer_forward, record=False),
        layer_backward=total("layer backward (transient)", prof.layer_backward, record=False),
        inputs=total("inputs", prof.inputs, record=False), lines=lines, notes=notes)
    if setup.lora is not None:
        _apply_lora(acts, setup)
    return acts


def _apply_lora(acts: Activations, setup: TrainingSetup) -> None:
    """LoRA/QLoRA relative to full fine-tuning (memplan/memory/lora.py `lora_activation_adjustment`): a frozen
    weight's linear does not save its input (derivatives.yaml: mm saves `self` only for the weight's gradient), the
    adapters save A·x, the frozen LM head saves nothing, and QLoRA dequantises one base weight at a time."""
    adj = lora_activation_adjustment(setup)
    full_recompute = setup.layout.recompute == "full"
    delta = adj.per_layer_added_bytes - adj.per_layer_removed_bytes
    acts.layer_full += delta
    if not full_recompute:
        # selective recompute drops only the attention core; the inputs of linears and norms stay saved. Under full
        # recompute the checkpoint (the layer input) is unchanged: only the recomputed layer feels the difference.
        acts.layer += delta
        removed = ", ".join(g.name for g in adj.groups if not g.adapted)
        _add_line(acts, Line(region="layer", name="LoRA frozen base: inputs not saved",
                             bytes=-adj.per_layer_removed_bytes,
                             note=f"saved only for frozen weights' gradients: {removed}"))
        _add_line(acts, Line(region="layer", name="LoRA adapters: A·x", bytes=adj.per_layer_added_bytes,
                             note="tokens x r per adapted linear, kept for B's gradient"))
    head_removed = adj.once_removed_bytes - adj.first_norm_removed_bytes
    if head_removed:
        acts.head -= head_removed
        _add_line(acts, Line(region="head", name="LoRA frozen LM head: inputs not saved", bytes=-head_removed,
                             note="the LM head's input and the final norm's normalized x"))
    if adj.first_norm_removed_bytes and not full_recompute:
        # nothing upstream of the first adapter requires grad, so layer 0's first norm saves nothing; like the
        # embedding's saved tensors those would live until the very end of backward, so it is taken off there (the
        # embedding figure may go negative; only sums of it are used).  Full recompute: layer 0 holds only its
        # checkpoint until it is recomputed, when the norm may save (PEFT's prepare_model_for_kbit_training calls
        # enable_input_require_grads): left in, conservatively.
        first = int(acts.in_flight * adj.first_norm_removed_bytes)
        acts.embedding -= first
        _add_line(acts, Line(region="embedding", name="LoRA frozen embeddings: first norm", bytes=-first,
                             note="nothing before the first adapter needs a gradient: layer 0's first norm saves "
                                  "nothing"))
    if adj.dequant_temporary_bytes:
        acts.dequant_temporary = adj.dequant_temporary_bytes
        acts.layer_forward += adj.dequant_temporary_bytes
        acts.layer_backward += adj.dequant_temporary_bytes
    acts.notes += adj.notes
    if acts.mode == "autocast":
        # not measured: autocast keeps a 16-bit copy per consuming linear and caches only weights that require grad
        acts.notes.append("LoRA with fp32 weights + autocast: the activation adjustment is validated for 16-bit "
                          "weights only (tests/test_lora.py); autocast copies may differ")


def _add_line(acts: Activations, line: Line) -> None:
    """Insert `line` after the last line of its region, so the table keeps regions together."""
    at = max((i + 1 for i, x in enumerate(acts.lines) if x.region == line.region), default=len(acts.lines))
    acts.lines.insert(at, line)


def korthikanti_layer_bytes(setup: TrainingSetup) -> int:
    """Bytes kept per layer (one micro-batch), as Korthikanti et al. 2022 Table 2 tabulates them."""
    return activations(setup).layer
