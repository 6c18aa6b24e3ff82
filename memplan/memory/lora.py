"""LoRA and QLoRA fine-tuning: which linears get adapters, the frozen base, the adapters' states, and what changes
in what autograd saves.

LoRA (Hu et al. 2021, arXiv 2106.09685, sec. 4.1): a frozen W0 (out x in) plus a trainable B·A with A: r x in and
B: out x r, so each adapted linear adds r·(in + out) trainable parameters and nothing else (PEFT 0.21
peft/tuners/lora/layer.py `LoraLayer.update_layer`: lora_A = nn.Linear(in_features, r, bias=False), lora_B =
nn.Linear(r, out_features, bias=False); lora_bias=False by default).  The frozen base has no gradients, no master
copy and no optimizer states ("we do not need to store the optimizer states for the frozen parameters", sec. 4.2).

QLoRA (Dettmers et al. 2023, arXiv 2305.14314, sec. 3): the frozen linears are stored as 4-bit NormalFloat in
blocks of 64 with one absmax scale per block; Double Quantization stores those scales as 8-bit floats in blocks of
256 with one fp32 second-level scale per block, "reducing the memory footprint from 32/64 = 0.5 bits per parameter
to 8/64 + 32/(64·256) = 0.127 bits".  Byte layout as bitsandbytes stores it (bitsandbytes/functional.py
`quantize_4bit`: packed uint8 of ceil(n/2) bytes, fp32 absmax per 64-element block, with compress_statistics:
offset = absmax.mean() (one fp32), `quantize_blockwise(absmax - offset, blocksize=256)` -> uint8 absmax + fp32
state2.absmax per 256 blocks; the QuantState keeps the 16-value fp32 NF4 code per tensor).  int8 is LLM.int8()
(Dettmers et al. 2022, arXiv 2208.07339; bitsandbytes nn.Int8Params): int8 weight + one fp32 scale (SCB) per
output row.  Embeddings, norms, biases and the LM head stay in the recipe's weight dtype (transformers'
bitsandbytes integration quantizes nn.Linear/Conv1D modules only and skips the output embedding).

Target names are PEFT's (the family module's `peft_targets`, from peft/utils/constants.py
TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, peft 0.21.2).  PEFT matches a target against the end of each
module path (peft/tuners/tuners_utils.py check_target_module_exists), so GPT-2's "c_proj" hits both the attention
and the MLP output projection; memplan matches the same way against the family's module names (Linear.name), and
also accepts its own roles (q, k, v, o, qkv, gate, up, down, ...).  Fused expert banks are 3-D parameters in
transformers 5, not nn.Linear modules: PEFT's target_modules and bitsandbytes do not reach them.
"""
from __future__ import annotations

import math

from pydantic import BaseModel

from memplan.engines.fsdp import LAYERS_IN_FLIGHT
from memplan.errors import MemplanError, did_you_mean
from memplan.memory.layout import LocalParameters, local_parameters
from memplan.memory.state_bytes import ModelStates, optimizer_state_bytes
from memplan.results.memory import Component
from memplan.spec.model import LayerSpec, Linear, Model
from memplan.spec.setup import LoraSpec, TrainingSetup

ROLES = ("q", "k", "v", "o", "qkv", "gate", "up", "gate_up", "down", "q_a", "q_b", "kv_a", "kv_b", "pooler")
ALL_LINEAR = "all-linear"
POOLER = "pooler"
POOLER_MODULE = "pooler.dense"  # BertPooler.dense: PEFT's "dense" target matches it too

# QLoRA / bitsandbytes constants (see the module docstring).
NF4_BLOCK = 64  # bitsandbytes Params4bit blocksize default; QLoRA sec. 3 "blocksize of 64"
NF4_DQ_BLOCK = 256  # quantize_4bit(compress_statistics=True): quantize_blockwise(absmax, blocksize=256)
NF4_CODE_BYTES = 16 * 4  # QuantState.code: the 16 NF4 values in fp32, one per quantised tensor
DQ_OFFSET_BYTES = 4  # QuantState.offset: absmax.mean() in fp32
FP32 = 4


class AdapterSite(BaseModel):
    """One adapted linear, per layer of one kind (or once, for BERT's pooler), on one TP rank."""

    name: str  # the module path (Linear.name), or "pooler"
    role: str
    in_features: int
    out_features: int
    count: int = 1  # MoE experts: one adapter per expert
    a_shape: tuple[int, int]  # lora_A.weight (r, in) on this TP rank
    b_shape: tuple[int, int]  # lora_B.weight (out, r) on this TP rank
    per_layer: bool = True

    @property
    def params(self) -> int:
        return self.count * (self.a_shape[0] * self.a_shape[1] + self.b_shape[0] * self.b_shape[1])


def _arch(setup: TrainingSetup) -> Model:
    a = setup.model.architecture
    if a is None:
        raise MemplanError(f"LoRA needs the model's linear layers: {setup.model.name!r} is a bare parameter count; "
                           "use a profile name, a config.json or --layers/--hidden/--heads/--ffn/--vocab")
    return a


def _candidates(m: Model) -> list[Linear]:
    """Every distinct nn.Linear of the layers (by module path), over all layer kinds."""
    seen: dict[str, Linear] = {}
    for layer, _ in m.kinds():
        for lin in m.linears(layer):
            if lin.is_module:
                seen.setdefault(lin.name, lin)
    return list(seen.values())


def resolve_targets(m: Model, targets: list[str] | None) -> list[str]:
    """Module paths adapted, from PEFT module names, memplan roles or 'all-linear' (None: PEFT's default for the
    family); the names "q", "k", "v" on a fused QKV mean slices of it (loralib MergedLinear), kept as qkv:q etc."""
    from memplan.families.registry import find_family

    lins = _candidates(m)
    fam = find_family(m.family)
    if targets is None:
        default = fam.peft_targets if fam is not None else None
        if default is None:  # custom architecture: the attention query and value, as PEFT does for most families
            fused = [x for x in lins if x.role == "qkv"]
            found = [fused[0].name] if fused else [x.name for x in lins if x.role in ("q", "v")]
            if not found:  # PEFT itself: "Please specify `target_modules` in `peft_config`"
                names = ", ".join(sorted({x.peft_name for x in lins if x.role != "router"}))
                raise MemplanError(f"PEFT has no default LoRA targets for {m.family} and it has no q/v projections: "
                                   f"give --lora-targets (its linears: {names}; or all-linear)")
            return found
        targets = list(default)
    out: list[str] = []
    for raw in targets:
        t = raw.strip()
        if not t:
            raise MemplanError("--lora-targets has an empty entry; give comma-separated module names")
        if t.lower() == ALL_LINEAR:
            # peft tuners_utils._maybe_include_all_linear_layers: every nn.Linear/Conv1D except the output layer
            out += [x.name for x in lins if x.role != "router"] + ([POOLER] if m.head.pooler else [])
            continue
        by_name = [x.name for x in lins if x.name == t or x.name.endswith("." + t)]
        if m.head.pooler and (POOLER_MODULE == t or POOLER_MODULE.endswith("." + t)):
            by_name.append(POOLER)
        if by_name:
            out += by_name
        elif t == POOLER and m.head.pooler:
            out.append(POOLER)
        elif t in ROLES:
            hits = [x.name for x in lins if x.role == t]
            if not hits and t in ("q", "k", "v"):
                hits = [f"{x.name}:{t}" for x in lins if x.role == "qkv"]
            if not hits:
                present = sorted({x.role for x in lins})
                raise MemplanError(f"--lora-targets {t}: this {m.family} model has no {t!r} projection (it has "
                                   f"{', '.join(present)})")
            out += hits
        else:
            names = sorted({x.peft_name for x in lins} | {x.role for x in lins})
            raise MemplanError(did_you_mean(t, [*names, ALL_LINEAR], "LoRA target module"))
    result = list(dict.fromkeys(out))
    if not result:
        raise MemplanError(f"--lora-targets {','.join(targets)} matches no linear layer of this {m.family} model")
    return result


def lora_spec(setup: TrainingSetup, lora_rank: int | None = None, lora_targets: str | list[str] | None = None,
              quantize_base: str | None = None, **extra) -> LoraSpec:
    """The LoraSpec the CLI flags describe (targets resolved to module paths; QLoRA implies paged states)."""
    if lora_rank is None:
        if lora_targets:
            raise MemplanError("--lora-targets needs --lora-rank R")
        raise MemplanError("--quantize-base needs --lora-rank R: a quantised base is frozen, only adapters train")
    if quantize_base not in (None, "nf4", "int8"):
        raise MemplanError(f"--quantize-base {quantize_base}: choose nf4 or int8")
    m = _arch(setup)
    targets = lora_targets.split(",") if isinstance(lora_targets, str) else lora_targets
    names = resolve_targets(m, targets)
    sites = [x for layer, _ in m.kinds() for x in adapter_sites(m, layer, lora_rank, names)]
    sites += head_sites(m, lora_rank, names)
    if not sites:
        raise MemplanError(f"--lora-targets {','.join(targets or names)} adapts no linear layer of this {m.family} "
                           "model")
    smallest = min(min(x.in_features, x.out_features) for x in sites)
    if lora_rank > smallest:
        raise MemplanError(f"--lora-rank {lora_rank} exceeds the smallest adapted layer's min(in, out) = {smallest}: "
                           "a LoRA rank is at most that (and usually 4-256)")
    return LoraSpec(rank=lora_rank, targets=targets, quantize_base=quantize_base, roles=names,
                    paged_optimizer=quantize_base is not None, **extra)


def _site(name: str, role: str, i: int, o: int, rank: int, split: str, tp: int, count: int = 1,
          per_layer: bool = True) -> AdapterSite:
    """Megatron-style split that keeps the adapter local (NeMo ParallelLinearAdapter): a column-parallel base
    splits B by rows (A replicated), a row-parallel base splits A by columns (B replicated)."""
    if split == "column":
        a_shape, b_shape = (rank, i), (math.ceil(o / tp), rank)
    elif split == "row":
        a_shape, b_shape = (rank, math.ceil(i / tp)), (o, rank)
    else:
        a_shape, b_shape = (rank, i), (o, rank)
    return AdapterSite(name=name, role=role, in_features=i, out_features=o, count=count, a_shape=a_shape,
                       b_shape=b_shape, per_layer=per_layer)


def adapter_sites(m: Model, layer: LayerSpec, rank: int, names: list[str], tp: int = 1) -> list[AdapterSite]:
    """Adapters of one layer of kind `layer` on one TP rank."""
    wanted = set(names)
    sites: list[AdapterSite] = []
    for lin in m.linears(layer):
        if lin.role == "qkv":
            # a slice of the fused projection: same in_features, the slice's out_features (loralib MergedLinear)
            at = layer.attention
            sizes = {"q": at.q_size, "k": at.kv_size, "v": at.kv_heads * at.value_dim}
            for r in ("q", "k", "v"):
                if f"{lin.name}:{r}" in wanted:
                    sites.append(_site(f"{lin.name}:{r}", r, lin.in_features, sizes[r], rank, "column", tp))
        if lin.name in wanted and lin.is_module:
            sites.append(_site(lin.name, lin.role, lin.in_features, lin.out_features, rank, lin.split, tp))
    return sites


def head_sites(m: Model, rank: int, names: list[str]) -> list[AdapterSite]:
    if POOLER in names and m.head.pooler:
        h = m.hidden_size
        return [_site(POOLER, POOLER, h, h, rank, "replicated", 1, per_layer=False)]
    return []


def adapter_parameters(m: Model, rank: int, names: list[str]) -> int:
    """Trainable parameters exactly as PEFT's get_peft_model creates them (print_trainable_parameters)."""
    per_layers = sum(g.count * sum(x.params for x in adapter_sites(m, g.layer, rank, names)) for g in m.groups)
    return per_layers + sum(x.params for x in head_sites(m, rank, names))


# ---- the frozen base --------------------------------------------------------------------------------------
def nf4_tensor_bytes(n: int, double_quant: bool = True) -> int:
    """Bytes bitsandbytes holds for one NF4 tensor of n elements (see the module docstring)."""
    blocks = math.ceil(n / NF4_BLOCK)
    packed = (n + 1) // 2
    if double_quant:
        return packed + blocks + FP32 * math.ceil(blocks / NF4_DQ_BLOCK) + DQ_OFFSET_BYTES + NF4_CODE_BYTES
    return packed + FP32 * blocks + NF4_CODE_BYTES


def int8_tensor_bytes(rows: int, cols: int) -> int:
    """LLM.int8(): int8 weight + fp32 row scale (bitsandbytes Int8Params.CB / .SCB)."""
    return rows * cols + FP32 * rows


class QuantizedBase(BaseModel):
    quantized_params: int  # weight elements held quantised on this GPU
    quantized_bytes: int
    tensors: int
    largest_linear: int  # elements of the largest quantised weight (its dequantised copy is the temporary)


def quantized_base(m: Model, local: LocalParameters, layout, kind: str, double_quant: bool = True,
                   last_stage: bool = True) -> QuantizedBase:
    """Every nn.Linear of the transformer layers on this GPU (and BERT's pooler), quantised tensor by tensor.
    transformers' bitsandbytes integration replaces nn.Linear modules (integrations/bitsandbytes.py
    replace_with_bnb_linear): routers that are raw parameters and fused expert banks stay in the weight dtype."""
    from memplan.memory.layout import stage_groups

    shapes: list[tuple[int, int, int]] = []  # (rows, cols, tensors) per TP rank
    stage = stage_groups(m, layout)[local.stage]
    for _, g in stage:
        for lin in m.linears(g.layer):
            if not lin.is_module:
                continue
            sh = lin.shard(layout.tp, layout.ep, layout.etp)
            shapes.append((sh.rows, sh.cols, sh.count * g.count))
    if m.head.pooler and last_stage:
        shapes.append((m.hidden_size, m.hidden_size, 1))
    per = (lambda r, c: nf4_tensor_bytes(r * c, double_quant)) if kind == "nf4" else int8_tensor_bytes
    nbytes = sum(k * per(r, c) for r, c, k in shapes)
    if kind == "nf4" and double_quant:
        nbytes += 256 * FP32  # the shared 8-bit dynamic map of the nested state (name2qmap["dynamic"])
    return QuantizedBase(quantized_params=sum(r * c * k for r, c, k in shapes), quantized_bytes=nbytes,
                         tensors=sum(k for _, _, k in shapes), largest_linear=max(r * c for r, c, _ in shapes))


# ---- model states -----------------------------------------------------------------------------------------
def lora_states(setup: TrainingSetup) -> ModelStates:
    """Frozen base (no grads, no master, no optimizer states) + adapters with the recipe's full treatment."""
    spec = setup.lora
    assert spec is not None
    a = _arch(setup)
    p, recipe, opt = setup.layout, setup.recipe, setup.optimizer
    if p.engine != "plain":
        raise MemplanError("LoRA estimates use the plain convention: drop --engine (or use --engine plain)")
    local = local_parameters(setup.model, p)
    roles = spec.roles or resolve_targets(a, spec.targets)
    last = local.stage == p.pp - 1
    from memplan.memory.layout import stage_groups

    adapter_tensors: list[tuple[int, int, int]] = []
    per_layer_adapt = 0
    for _, g in stage_groups(a, p)[local.stage]:
        sites = adapter_sites(a, g.layer, spec.rank, roles, p.tp)
        per_layer_adapt = max(per_layer_adapt, sum(x.params for x in sites))
        for x in sites:
            adapter_tensors += [(*x.a_shape, x.count * g.count), (*x.b_shape, x.count * g.count)]
    if last:
        for x in head_sites(a, spec.rank, roles):
            adapter_tensors += [(*x.a_shape, 1), (*x.b_shape, 1)]
    n_adapt = sum(r * c * k for r, c, k in adapter_tensors)
    adapters = LocalParameters(params=n_adapt, stage=local.stage, layers=local.layers, layer_params=per_layer_adapt,
                               largest_module_params=max((r * c for r, c, _ in adapter_tensors), default=0),
                               tensor_numels=adapter_tensors)

    def shard(stage: int) -> int:
        return p.dp if p.zero >= stage else 1

    def where(kind: str) -> str:
        if kind == "weights":
            return p.offload_params if p.offload_params != "none" else "gpu"
        if kind == "gradients":
            return p.offload_optimizer if p.offload_optimizer != "none" and p.zero >= 2 else "gpu"
        return p.offload_optimizer if p.offload_optimizer != "none" else "gpu"

    comps: list[Component] = []

    def add(name, category, dtype, bpp, total, sharded, location, note=""):
        per_rank = math.ceil(total / sharded)
        if location != "gpu":
            per_rank *= p.gpus_on_a_node  # host memory is per node, as in states.py
        comps.append(Component(name=name, category=category, dtype=dtype, bytes_per_param=bpp, sharded_over=sharded,
                               bytes=per_rank, location=location, note=note))

    notes: list[str] = [f"LoRA r={spec.rank} on {', '.join(roles)}: {n_adapt:,} trainable parameters on this GPU "
                        f"({n_adapt / local.params:.3%} of its {local.params:,})"]
    wb = recipe.weights.bytes
    frozen_note = "frozen: no gradients, master weights or optimizer states"
    if spec.quantize_base:
        q = quantized_base(a, local, p, spec.quantize_base, double_quant=True, last_stage=last)
        rest = local.params - q.quantized_params
        label = "nf4 + 8-bit absmax (double quant)" if spec.quantize_base == "nf4" else "int8 + fp32 row scales"
        add(f"frozen base linears ({spec.quantize_base})", "weights", label, q.quantized_bytes / q.quantized_params,
            q.quantized_bytes, shard(3), where("weights"), f"{q.tensors:,} tensors; {frozen_note}")
        add("frozen base: embeddings, norms, biases, LM head", "weights", recipe.weights.value, wb, rest * wb,
            shard(3), where("weights"), "not quantised (bitsandbytes quantises nn.Linear only)")
    else:
        add("frozen base weights", "weights", recipe.weights.value, wb, local.params * wb, shard(3),
            where("weights"), frozen_note)

    add("LoRA adapters", "weights", recipe.weights.value, wb, n_adapt * wb, shard(3), where("weights"),
        "A: r x in, B: out x r per adapted linear")
    gb = recipe.gradients.bytes
    add("LoRA adapter gradients", "gradients", recipe.gradients.value, gb, n_adapt * gb, shard(2), where("gradients"))
    if recipe.master_weights is not None:
        mb = recipe.master_weights.bytes
        add("LoRA master weights", "master_weights", recipe.master_weights.value, mb, n_adapt * mb, shard(1),
            where("master"))
    sbytes, slabel, snote = optimizer_state_bytes(opt, recipe, adapters)
    if sbytes:
        if spec.paged_optimizer:
            snote += "; paged (bitsandbytes paged optimizer, QLoRA sec. 3): evicted to CPU RAM under memory pressure"
        add(f"LoRA optimizer states ({opt.name})", "optimizer_states", slabel, sbytes / n_adapt, sbytes, shard(1),
            where("states"), snote)
    if spec.paged_optimizer and sbytes:
        notes.append(f"paged optimizer states ({math.ceil(sbytes / shard(1)):,} B) can page out to CPU RAM: a step "
                     "that overshoots the GPU by less than that still runs, slower (QLoRA sec. 3)")

    if p.zero >= 3:
        # one transformer layer unsharded: its frozen weights as stored + its adapters
        per_layer = per_layer_adapt * wb
        if spec.quantize_base:
            lin_params = q.quantized_params // max(local.layers, 1)  # (BERT's pooler folded in: one small linear)
            per_layer += q.quantized_bytes // max(local.layers, 1) + (local.layer_params - lin_params) * wb
        else:
            per_layer += local.layer_params * wb
        layers = min(LAYERS_IN_FLIGHT, max(local.layers, 1))
        comps.append(Component(name="gathered parameters", category="gathered_parameters",
                               dtype=recipe.weights.value if not spec.quantize_base else spec.quantize_base,
                               bytes=layers * per_layer, location="gpu",
                               note=f"{layers} layer(s) in flight (computing + prefetched), frozen base + adapters"))
    convention = ("LoRA (Hu et al. 2021): frozen base weights only; adapters with gradients, master weights and "
                  "optimizer states per the recipe" + ("; QLoRA NF4 base (Dettmers et al. 2023)"
                                                       if spec.quantize_base == "nf4" else ""))
    # `local` is what the optimizer, the gradient buckets and the backward's gradient trade work on: the adapters
    # (timeline.py and overheads.py read it for trainable-parameter quantities).
    return ModelStates(components=comps, local=adapters, convention=convention, notes=notes)


# ---- what autograd saves: the hook for the activation model (memplan/memory/timeline.py) --------------------
class InputGroup(BaseModel):
    """A tensor of one layer that full fine-tuning saves for some weight gradient."""

    name: str  # attn_in (norm -> q,k,v), attn_ctx (attention output -> o), mlp_in (norm -> gate,up),
    #            mlp_act (-> down), norm_y (RMSNorm's normalised x before the weight multiply)
    roles: list[str]
    width: int  # elements per token on one TP rank
    adapted: bool  # feeds a linear with an adapter: LoRA's A keeps it saved (PEFT, lora_dropout=0)
    bytes: int  # per layer per micro-batch


class LoraActivationAdjustment(BaseModel):
    """How LoRA changes the saved activations and temporaries of a step, relative to full fine-tuning.

    All per GPU, for one micro-batch.  `per_layer_*` multiply by the layers whose activations are held at once
    (all local layers without recompute; with full recompute only the layer being recomputed keeps them).
    """

    tokens: int
    layers: int
    per_layer_added_bytes: int  # A·x saved for dB: tokens x r per adapted linear (+ dropout copies and masks)
    per_layer_removed_bytes: int  # tensors saved only for frozen weights' gradients (the groups not adapted)
    groups: list[InputGroup]
    once_removed_bytes: int  # LM head input + final RMSNorm's y + the first norm's saved input (see below)
    first_norm_removed_bytes: int = 0  # the part of once_removed_bytes that is layer 0's first norm (stage 0)
    # the same bytes by the tensor they are (the `holds` names of implementation-profile rows): how the
    # activation breakdown shows them, as reductions of the rows that hold them
    head_removed: dict[str, int] = {}  # lm_head_in, final_norm_y
    first_norm_removed: dict[str, int] = {}  # first_norm_input, first_norm_stats (per micro-batch)
    dequant_temporary_bytes: int  # QLoRA: one dequantised weight in the compute dtype, alive during its matmul
    notes: list[str] = []


def lora_activation_adjustment(setup: TrainingSetup) -> LoraActivationAdjustment:
    """Saved-tensor changes when the base is frozen.  Autograd saves an operand only for the gradient of the
    other (torch/csrc/autograd derivatives.yaml: mm/addmm save `self` only if the weight requires grad), so:
    - a frozen linear does not save its input, unless an adapter on it does (lora_A needs x for dA; with
      lora_dropout=0 that is the same storage) -- the adapter also saves A·x (tokens x r) for dB;
    - (eager attention only) o_proj's input is a copy that only its weight gradient keeps; sdpa/flash save that
      same storage as their output anyway;
    - a frozen RMSNorm weight (transformers' `weight * hidden_states.to(input_dtype)`) does not save the normalised
      x; LayerNorm (aten native_layer_norm) saves input, mean and rstd either way: no change;
    - the frozen LM head does not save its input (the final norm's output);
    - nothing before the first adapter requires grad (embeddings frozen), so the first layer's first norm saves
      nothing: RMSNorm's fp32 input (4 B x h) and its rsqrt (4 B) per token; LayerNorm's input, mean and rstd.
    """
    spec = setup.lora
    assert spec is not None
    a = _arch(setup)
    p = setup.layout
    names = spec.roles or resolve_targets(a, spec.targets)
    layer = a.first  # the first layer kind stands for all (the layers of one model share these widths)
    at, ffn = layer.attention, layer.ffn
    lins = a.linears(layer)
    by_name = {x.name: x for x in lins}
    roles = {by_name[n].role for n in names if n in by_name} | {n.split(":")[1] for n in names if ":" in n}
    cb = setup.recipe.compute.bytes if setup.recipe.compute.bytes >= 2 else 2  # fp8 recipes save bf16 inputs
    wb = setup.recipe.weights.bytes  # RMSNorm casts back to the input (= weight) dtype
    tokens = setup.layout.micro_batch * setup.seq
    tp = p.tp
    topk = ffn.top_k if ffn.moe else 1
    widths = {"attn_in": a.hidden_size, "attn_ctx": math.ceil(at.out_in_features / tp), "mlp_in": a.hidden_size,
              "mlp_act": math.ceil(ffn.intermediate_size / tp) * topk}
    feeds = {"attn_in": ["q", "k", "v", "qkv", "q_a", "kv_a"], "attn_ctx": ["o"],
             "mlp_in": ["gate", "up", "gate_up"] if ffn.gated else ["up"], "mlp_act": ["down"]}
    present = {x.role for x in lins}
    groups = []
    for name, rs in feeds.items():
        if name == "attn_ctx" and setup.workload.attention != "eager":
            # sdpa/flash kernels return the output in (batch, seq, heads, dim) memory and save it for their own
            # backward: transpose(1, 2).contiguous() is a no-op, so o_proj's input is saved whether or not o is
            # frozen.  Eager attention makes a contiguous copy that only o_proj's weight gradient keeps.
            continue
        groups.append(InputGroup(name=name, roles=[r for r in rs if r in present], width=widths[name],
                                 adapted=any(r in roles for r in rs), bytes=int(tokens * widths[name] * cb)))
    rms = layer.norm.kind == "rmsnorm"
    if rms and layer.norms:
        groups.append(InputGroup(name="norm_y", roles=[], width=layer.norms * a.hidden_size, adapted=False,
                                 bytes=int(tokens * layer.norms * a.hidden_size * wb)))
    removed = sum(g.bytes for g in groups if not g.adapted)
    added = 0
    for site in adapter_sites(a, layer, spec.rank, names, tp):
        routed = 1
        added += tokens * routed * spec.rank * cb
        if spec.dropout:
            # nn.Dropout on x before lora_A: a copy of x in the compute dtype and a bool mask
            added += tokens * routed * site.a_shape[1] * (cb + 1)
    local = local_parameters(setup.model, p)
    head: dict[str, int] = {}
    if a.head.lm_head and local.stage == p.pp - 1:
        head["lm_head_in"] = tokens * a.hidden_size * cb
        if rms and a.head.final_norm:
            head["final_norm_y"] = tokens * a.hidden_size * wb
    first: dict[str, int] = {}
    if local.stage == 0 and layer.norms:
        # RMSNorm saves its fp32 input and rsqrt (4 B per token); LayerNorm its input, mean and rstd (fp32 each)
        first = ({"first_norm_input": tokens * a.hidden_size * 4, "first_norm_stats": tokens * 4} if rms else
                 {"first_norm_input": tokens * a.hidden_size * cb, "first_norm_stats": tokens * 8})
    head = {k: int(v) for k, v in head.items()}
    first = {k: int(v) for k, v in first.items()}
    first_norm = sum(first.values())
    once = sum(head.values()) + first_norm
    temp = 0
    notes = []
    if spec.quantize_base:
        q = quantized_base(a, local, p, spec.quantize_base)
        temp = q.largest_linear * cb
        notes.append("QLoRA: bitsandbytes MatMul4Bit dequantises each weight to the compute dtype for its matmul "
                     "(forward and backward) and saves only the quantised weight")
    return LoraActivationAdjustment(tokens=tokens, layers=local.layers, per_layer_added_bytes=int(added),
                                    per_layer_removed_bytes=int(removed), groups=groups, once_removed_bytes=int(once),
                                    first_norm_removed_bytes=int(first_norm), head_removed=head,
                                    first_norm_removed=first,
                                    dequant_temporary_bytes=int(temp), notes=notes)
