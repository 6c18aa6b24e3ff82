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

Target names are PEFT's (peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, peft 0.21.2),
mapped to memplan's Architecture.linears() roles per family; PEFT matches a name against the end of each module
path, so GPT-2's "c_proj" hits both the attention and the MLP output projection.
"""
from __future__ import annotations

import math

from pydantic import BaseModel

from memplan.errors import MemplanError, did_you_mean
from memplan.memory.layout import LocalParameters, local_parameters
from memplan.memory.states import LAYERS_IN_FLIGHT, ModelStates, optimizer_state_bytes
from memplan.results.memory import Component
from memplan.spec.model import Architecture
from memplan.spec.setup import LoraSpec, TrainingSetup

# peft 0.21.2 peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, the families memplan
# reads (tests/test_lora.py checks these rows against the installed peft).  Data, not an import: `memplan estimate`
# must not import torch, and peft does.
PEFT_DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"],
    "falcon": ["query_key_value"], "bert": ["query", "value"], "opt": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"], "bloom": ["query_key_value"],
}

_LLAMA_NAMES = {"q_proj": ["q"], "k_proj": ["k"], "v_proj": ["v"], "o_proj": ["o"], "gate_proj": ["gate"],
                "up_proj": ["up"], "down_proj": ["down"]}
_NEOX_NAMES = {"query_key_value": ["qkv"], "dense": ["o"], "dense_h_to_4h": ["up"], "dense_4h_to_h": ["down"]}
# Hugging Face module names -> roles (modeling_<family>.py).  Mixtral's experts are listed with transformers 4's
# names (w1 gate, w3 up, w2 down); transformers 5 fuses them into parameters that are no nn.Linear.
MODULE_ROLES: dict[str, dict[str, list[str]]] = {
    **{f: _LLAMA_NAMES for f in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")},
    "mixtral": {**_LLAMA_NAMES, "w1": ["gate"], "w3": ["up"], "w2": ["down"]},
    "gpt2": {"c_attn": ["qkv"], "c_proj": ["o", "down"], "c_fc": ["up"]},
    "gpt_neox": _NEOX_NAMES, "falcon": _NEOX_NAMES,
    # BertLayer: attention.self.{query,key,value}, attention.output.dense, intermediate.dense, output.dense;
    # BertPooler.dense: "dense" matches all four.
    "bert": {"query": ["q"], "key": ["k"], "value": ["v"], "dense": ["o", "up", "down", "pooler"]},
}
ROLES = ("q", "k", "v", "o", "qkv", "gate", "up", "down", "router", "pooler")
ALL_LINEAR = "all-linear"

# QLoRA / bitsandbytes constants (see the module docstring).
NF4_BLOCK = 64  # bitsandbytes Params4bit blocksize default; QLoRA sec. 3 "blocksize of 64"
NF4_DQ_BLOCK = 256  # quantize_4bit(compress_statistics=True): quantize_blockwise(absmax, blocksize=256)
NF4_CODE_BYTES = 16 * 4  # QuantState.code: the 16 NF4 values in fp32, one per quantised tensor
DQ_OFFSET_BYTES = 4  # QuantState.offset: absmax.mean() in fp32
FP32 = 4


class AdapterSite(BaseModel):
    """One adapted linear, per transformer layer (or once, for BERT's pooler), on one TP rank."""

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


def _arch(setup: TrainingSetup) -> Architecture:
    a = setup.model.architecture
    if a is None:
        raise MemplanError(f"LoRA needs the model's linear layers: {setup.model.name!r} is a bare parameter count; "
                           "use a profile name, a config.json or --layers/--hidden/--heads/--ffn/--vocab")
    return a


def resolve_targets(a: Architecture, targets: list[str] | None) -> list[str]:
    """Roles adapted, from PEFT module names, memplan roles or 'all-linear' (None: PEFT's default for the family)."""
    present = {lin.role for lin in a.linears()} | ({"pooler"} if a.pooler else set())
    if a.fused_qkv:
        # slices of a fused QKV, as the LoRA paper's loralib.MergedLinear(enable_lora=[True, False, True]) does
        present |= {"q", "k", "v"}
    names = MODULE_ROLES.get(a.family, {})
    if targets is None:
        default = PEFT_DEFAULT_TARGETS.get(a.family)
        if default is None:  # custom architecture: the attention query and value, as PEFT does for most families
            return ["qkv"] if a.fused_qkv else ["q", "v"]
        targets = default
    roles: list[str] = []
    for t in targets:
        t = t.strip()
        if t.lower() == ALL_LINEAR:
            # peft tuners_utils._maybe_include_all_linear_layers: every nn.Linear/Conv1D except the output
            # embedding.  In transformers 5 MoE experts and routers are parameters, not nn.Linear: not targeted.
            found = [lin.role for lin in a.linears() if lin.role != "router" and lin.count == 1]
            roles += found + (["pooler"] if a.pooler else [])
        elif t in names:
            roles += [r for r in names[t] if r in present]
        elif t in ROLES:
            if t not in present:
                raise MemplanError(f"--lora-targets {t}: this {a.family} model has no {t!r} projection "
                                   f"(it has {', '.join(sorted(present))})")
            roles.append(t)
        else:
            raise MemplanError(did_you_mean(t, [*names, *sorted(present), ALL_LINEAR], "LoRA target module"))
    out = list(dict.fromkeys(roles))
    if not out:
        raise MemplanError(f"--lora-targets {','.join(targets)} matches no linear layer of this {a.family} model")
    return out


def lora_spec(setup: TrainingSetup, lora_rank: int | None = None, lora_targets: str | list[str] | None = None,
              quantize_base: str | None = None, **extra) -> LoraSpec:
    """The LoraSpec the CLI flags describe (targets resolved to roles; QLoRA implies paged optimizer states)."""
    if lora_rank is None:
        raise MemplanError("--quantize-base needs --lora-rank R: a quantised base is frozen, only adapters train")
    if quantize_base not in (None, "nf4", "int8"):
        raise MemplanError(f"--quantize-base {quantize_base}: choose nf4 or int8")
    a = _arch(setup)
    targets = lora_targets.split(",") if isinstance(lora_targets, str) else lora_targets
    roles = resolve_targets(a, targets)
    smallest = min(min(lin.in_features, lin.out_features) for lin in a.linears() if lin.role in roles or
                   (lin.role == "qkv" and {"q", "k", "v"} & set(roles)))
    if lora_rank > smallest:
        raise MemplanError(f"--lora-rank {lora_rank} exceeds the smallest adapted layer's min(in, out) = {smallest}: "
                           "a LoRA rank is at most that (and usually 4-256)")
    return LoraSpec(rank=lora_rank, targets=targets, quantize_base=quantize_base, roles=roles,
                    paged_optimizer=quantize_base is not None, **extra)


def adapter_sites(a: Architecture, rank: int, roles: list[str], tp: int = 1) -> list[AdapterSite]:
    """Adapters on one TP rank.  Megatron-style split that keeps the adapter local (NeMo ParallelLinearAdapter):
    a column-parallel base splits B by rows (A replicated), a row-parallel base splits A by columns (B replicated)."""
    sites: list[AdapterSite] = []
    linears = a.linears()
    if a.fused_qkv and any(r in roles for r in ("q", "k", "v")):
        # a slice of the fused projection: same in_features, the slice's out_features (loralib MergedLinear)
        from memplan.spec.model import Linear

        fused = linears[0]
        sizes = {"q": a.q_size, "k": a.kv_size, "v": a.kv_size}
        linears = [Linear(role=r, in_features=fused.in_features, out_features=sizes[r], split="column")
                   for r in ("q", "k", "v") if r in roles] + linears
    for lin in linears:
        if lin.role not in roles:
            continue
        i, o = lin.in_features, lin.out_features
        if lin.split == "column":
            a_shape, b_shape = (rank, i), (math.ceil(o / tp), rank)
        elif lin.split == "row":
            a_shape, b_shape = (rank, math.ceil(i / tp)), (o, rank)
        else:
            a_shape, b_shape = (rank, i), (o, rank)
        sites.append(AdapterSite(role=lin.role, in_features=i, out_features=o, count=lin.count, a_shape=a_shape,
                                 b_shape=b_shape))
    if "pooler" in roles and a.pooler:
        h = a.hidden_size
        sites.append(AdapterSite(role="pooler", in_features=h, out_features=h, a_shape=(rank, h), b_shape=(h, rank),
                                 per_layer=False))
    return sites


def adapter_parameters(a: Architecture, rank: int, roles: list[str]) -> int:
    """Trainable parameters exactly as PEFT's get_peft_model creates them (print_trainable_parameters)."""
    return sum(s.params * (a.n_layers if s.per_layer else 1) for s in adapter_sites(a, rank, roles))


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


def quantized_base(a: Architecture, local: LocalParameters, tp: int, kind: str, double_quant: bool = True,
                   last_stage: bool = True) -> QuantizedBase:
    """Every nn.Linear of the transformer layers on this GPU (and BERT's pooler), quantised tensor by tensor."""
    shapes: list[tuple[int, int, int]] = []  # (rows, cols, tensors) per TP rank
    for lin in a.linears():
        if lin.role == "router":
            continue  # transformers 5 MoE routers are not nn.Linear: bitsandbytes leaves them alone
        rows, cols = lin.out_features, lin.in_features
        if lin.split == "column":
            rows = math.ceil(rows / tp)
        elif lin.split == "row":
            cols = math.ceil(cols / tp)
        shapes.append((rows, cols, lin.count * local.layers))
    if a.pooler and last_stage:
        shapes.append((a.hidden_size, a.hidden_size, 1))
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
    sites = adapter_sites(a, spec.rank, roles, p.tp)
    last = local.stage == p.pp - 1
    adapter_tensors: list[tuple[int, int, int]] = []
    for s in sites:
        if not s.per_layer and not last:
            continue
        k = s.count * (local.layers if s.per_layer else 1)
        adapter_tensors += [(*s.a_shape, k), (*s.b_shape, k)]
    n_adapt = sum(r * c * k for r, c, k in adapter_tensors)
    per_layer_adapt = sum(s.params for s in sites if s.per_layer)
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
        q = quantized_base(a, local, p.tp, spec.quantize_base, double_quant=True, last_stage=last)
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
    roles = spec.roles or resolve_targets(a, spec.targets)
    cb = setup.recipe.compute.bytes if setup.recipe.compute.bytes >= 2 else 2  # fp8 recipes save bf16 inputs
    wb = setup.recipe.weights.bytes  # RMSNorm casts back to the input (= weight) dtype
    tokens = setup.layout.micro_batch * setup.seq
    tp = p.tp
    topk = a.experts_per_token if a.n_experts else 1
    widths = {"attn_in": a.hidden_size, "attn_ctx": math.ceil(a.q_size / tp), "mlp_in": a.hidden_size,
              "mlp_act": math.ceil(a.ffn_hidden_size / tp) * topk}
    feeds = {"attn_in": ["q", "k", "v", "qkv"], "attn_ctx": ["o"], "mlp_in": ["gate", "up"] if a.mlp == "swiglu"
             else ["up"], "mlp_act": ["down"]}
    present = {x.role for x in a.linears()}
    groups = []
    for name, rs in feeds.items():
        if name == "attn_ctx" and setup.workload.attention != "eager":
            # sdpa/flash kernels return the output in (batch, seq, heads, dim) memory and save it for their own
            # backward: transpose(1, 2).contiguous() is a no-op, so o_proj's input is saved whether or not o is
            # frozen.  Eager attention makes a contiguous copy that only o_proj's weight gradient keeps.
            continue
        groups.append(InputGroup(name=name, roles=[r for r in rs if r in present], width=widths[name],
                                 adapted=any(r in roles for r in rs), bytes=int(tokens * widths[name] * cb)))
    rms = a.norm == "rmsnorm"
    if rms and a.norms_per_layer:
        groups.append(InputGroup(name="norm_y", roles=[], width=a.norms_per_layer * a.hidden_size, adapted=False,
                                 bytes=int(tokens * a.norms_per_layer * a.hidden_size * wb)))
    removed = sum(g.bytes for g in groups if not g.adapted)
    added = 0
    for s in adapter_sites(a, spec.rank, roles, tp):
        if not s.per_layer:
            continue
        routed = topk if s.count > 1 else 1  # each token visits top-k experts' adapters
        added += tokens * routed * spec.rank * cb
        if spec.dropout:
            # nn.Dropout on x before lora_A: a copy of x in the compute dtype and a bool mask
            added += tokens * routed * s.a_shape[1] * (cb + 1)
    local = local_parameters(setup.model, p)
    once = 0
    if a.lm_head and local.stage == p.pp - 1:
        once += tokens * a.hidden_size * cb + (tokens * a.hidden_size * wb if rms and a.final_norm else 0)
    first_norm = 0
    if local.stage == 0 and a.norms_per_layer:
        first_norm = tokens * (a.hidden_size * 4 + 4) if rms else tokens * (a.hidden_size * cb + 8)
    once += first_norm
    temp = 0
    notes = []
    if spec.quantize_base:
        q = quantized_base(a, local, tp, spec.quantize_base)
        temp = q.largest_linear * cb
        notes.append("QLoRA: bitsandbytes MatMul4Bit dequantises each weight to the compute dtype for its matmul "
                     "(forward and backward) and saves only the quantised weight")
    return LoraActivationAdjustment(tokens=tokens, layers=local.layers, per_layer_added_bytes=int(added),
                                    per_layer_removed_bytes=int(removed), groups=groups, once_removed_bytes=int(once),
                                    first_norm_removed_bytes=int(first_norm),
                                    dequant_temporary_bytes=int(temp), notes=notes)
