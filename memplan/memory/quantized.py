"""Served weights on one GPU, byte for byte, in the checkpoint's format: 16-bit, FP8 (per-tensor, per-channel,
block), int8 W8A8, AWQ/GPTQ int4 (groups, zeros, scales, g_idx), compressed-tensors W4A16, MXFP4 experts,
bitsandbytes NF4/FP4/int8.

Two views of the same checkpoint:
- `engine="vllm"`: what stays resident after vLLM's `process_weights_after_loading` (what "Model loading took
  X GiB" counts; vllm/model_executor/layers/quantization/*.py, read at 0.11 and 0.33, /work/research/vllm/vllm.md
  sec. 5).  vLLM fuses q/k/v into qkv_proj and gate/up into gate_up_proj (QKVParallelLinear,
  MergedColumnParallelLinear; DeepSeek's q_a/kv_a into fused_qkv_a_proj), so per-module scales count per fused
  module; Marlin kernels drop GPTQ's zero points when symmetric and its g_idx without act-order; the MLA
  layers keep W_UK_T and W_UV, the decompressed kv_b_proj, in the activation dtype beside kv_b_proj
  (MLAAttention.process_weights_after_loading, layers/attention/mla_attention.py @0.33); rotary layers keep one
  cos_sin_cache [max_positions, rotary_dim] per distinct rotary size (get_rope caches instances); vocabularies
  are padded to a multiple of 64 (VocabParallelEmbedding, DEFAULT_VOCAB_PADDING_SIZE).
- `engine="hf"`: the checkpoint's tensors as transformers loads them (one module per linear, every stored
  tensor: GPTQ's qzeros and g_idx included).

What stays 16-bit: embeddings and the LM head (not LinearBase in vLLM; GPTQ quantises the head only with
`lm_head: true`), norms, biases, attention sinks, MoE routers (vLLM builds gate = ReplicatedLinear(...,
quant_config=None); gpt-oss's router is a plain nn.Linear), and the modules the config ignores; MXFP4 quantises
the MoE experts only (Mxfp4Config.get_quant_method: FusedMoE -> Mxfp4MoEMethod; gpt-oss's OAIAttention is built
without a quant config).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from memplan.errors import MemplanError
from memplan.results.inference import ServedWeights
from memplan.spec.inference import InferenceSetup
from memplan.spec.layout import Layout
from memplan.spec.model import LayerGroup, LayerSpec, Model
from memplan.spec.quantization import WeightQuantization, from_flag, resolve
from memplan.spec.tensors import embedding_tensors, head_tensors
from memplan.spec.training import DType

FP32, FP16 = 4, 2
VOCAB_PADDING = 64  # vllm/model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE
BNB_BLOCK = 64  # bitsandbytes quantize_4bit default blocksize (functional.py: blocksize=None -> 64)
BNB_NESTED_BLOCK = 256  # compress_statistics: absmax quantised in blocks of 256 (quantize_blockwise default)
BNB_CODES = 256 * FP32 + 16 * FP32  # nested state's dynamic map (256 fp32) + the 4-bit code (16 fp32)
MXFP4_BLOCK = 32  # OCP MX: 32 elements share one e8m0 scale byte
# MXFP4 padding of (intermediate, hidden) by the MoE backend vLLM 0.33 picks on each GPU generation
# (fused_moe/oracle/mxfp4.py: _get_priority_backends_for_gpt_oss, mxfp4_round_up_hidden_size_and_intermediate_size):
# Blackwell FLASHINFER_TRTLLM_MXFP4_BF16 (128, 256); Hopper TRITON (64, none); earlier NVIDIA MARLIN (128, 256);
# ROCm AITER (256, 256)
MXFP4_PADDING = {"blackwell": (128, 256), "hopper": (64, 1), "cdna3": (256, 256), "cdna2": (256, 256)}
MXFP4_PADDING_DEFAULT = (128, 256)
MARLIN_GENERATIONS = ("ampere", "ada", "hopper", "blackwell")  # SM >= 80: gptq_marlin / awq_marlin


def mxfp4_padding(generation: str, version: tuple[int, ...] = (0, 33)) -> tuple[int, int]:
    """(intermediate, hidden) padding of MXFP4 MoE weights by the kernel vLLM picks.  Hopper: get_mxfp4_backend
    (model_executor/layers/quantization/mxfp4.py @v0.10.2/@v0.11.0) takes Triton only when OpenAI's
    `triton_kernels` is importable, which neither the 0.10-0.11 wheels nor their Docker image ship
    (requirements/cuda.txt, docker/Dockerfile @v0.11.0), so MARLIN (n % 256, k % 128: intermediate to 128,
    hidden to 256); from 0.12 the wheel vendors it (cmake/external_projects/triton_kernels.cmake,
    vllm/third_party/triton_kernels, has_triton_kernels @v0.12.0..@v0.33.0) and Hopper gets TRITON (intermediate
    to 64).  gpt-oss-120b on an H100: 65.97 GiB logged (issue 23) = Marlin's padding."""
    if generation == "hopper" and tuple(version) < (0, 12):
        return MXFP4_PADDING_DEFAULT
    return MXFP4_PADDING.get(generation, MXFP4_PADDING_DEFAULT)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- the format ----------------------------------------------------------------------------------------------
def model_dtype(setup: InferenceSetup) -> DType:
    """dtype of the unquantised tensors: --weights-dtype when 16/32-bit, else the config's torch_dtype (vLLM's
    dtype='auto'; an fp32 config is served in bf16, as vLLM's auto does for float32 checkpoints), else bf16."""
    wd = setup.weights_dtype
    if wd in (DType.bf16, DType.fp16, DType.fp32):
        return wd
    cfg = setup.model.hf_config or {}
    text = cfg.get("torch_dtype") or cfg.get("dtype") or (cfg.get("text_config") or {}).get("torch_dtype")
    return DType.fp16 if str(text) in ("float16", "torch.float16") else DType.bf16


def weight_format(setup: InferenceSetup) -> WeightQuantization | None:
    """The served format: --quantization / the config's quantization_config (checked against each other), or a
    generic --weights-dtype (int8: LLM.int8 layout, int4: AWQ g=int4_group, fp8: per-tensor, nf4: bitsandbytes
    with double quantisation)."""
    wd = setup.weights_dtype
    fmt = resolve(setup.model.hf_config, setup.quantization)
    if wd in (DType.int8, DType.int4, DType.fp8, DType.nf4):
        if fmt is not None and fmt.source.startswith("config"):
            raise MemplanError(f"--weights-dtype {wd.value} contradicts the config's quantization_config "
                               f"({fmt.method}): drop --weights-dtype")
        src = f"--weights-dtype {wd.value}"
        if wd == DType.int4:
            return WeightQuantization(method="awq", weight="int4", strategy="group", group_size=setup.int4_group,
                                      zero_point=True, source=src + " (AWQ GEMM layout)")
        if wd == DType.int8:
            return WeightQuantization(method="bitsandbytes", weight="int8", strategy="channel",
                                      source=src + " (LLM.int8: int8 + fp32 row scale)")
        if wd == DType.fp8:
            return from_flag("fp8").model_copy(update={"source": src + " (per-tensor fp32 scale)"})
        return from_flag("bitsandbytes").model_copy(update={"online": False, "source": src + " (bitsandbytes)"})
    return fmt


# ---- one GPU's modules ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Module:
    """One weight module on one GPU: `parts` output row counts (a fused module has several), `cols` inputs,
    `count` matrices (experts), `bias` bias elements per matrix."""

    name: str
    role: str
    parts: tuple[int, ...]
    cols: int
    count: int = 1
    bias: int = 0
    routed: bool = False
    quantised: bool = True
    members: tuple[str, ...] = ()  # the checkpoint modules a fused module holds (ignore lists name those)

    @property
    def rows(self) -> int:
        return sum(self.parts)


FUSED = {"vllm": (("qkv", ("q", "k", "v")), ("gate_up", ("gate", "up")), ("fused_qkv_a", ("q_a", "kv_a")))}


def layer_modules(model: Model, layer: LayerSpec, layout: Layout, engine: str) -> list[Module]:
    """This layer's weight modules on one GPU, fused as the engine's model code fuses them."""
    mods: list[Module] = []
    for lin in model.linears(layer):
        sh = lin.shard(layout.tp, layout.ep, layout.etp)
        quantisable = lin.role not in ("router", "shared_gate")
        # a fused gate_up holds two checkpoint tensors (gate, up): scales and padding apply to each
        parts = (sh.rows // 2, sh.rows - sh.rows // 2) if lin.role == "gate_up" else (sh.rows,)
        mods.append(Module(lin.name, lin.role, parts, sh.cols, sh.count, sh.bias, lin.routed, quantisable,
                           (lin.name,)))
    for fused, roles in FUSED.get(engine, ()):
        for shared in (False, True):
            members = [m for m in mods if m.role in roles and not m.routed
                       and ("shared" in m.name) == shared]
            if len(members) == len(roles):
                first = mods.index(members[0])
                merged = Module(members[0].name.rsplit(".", 1)[0] + f".{fused}_proj", fused,
                                tuple(r for m in members for r in m.parts), members[0].cols,
                                bias=sum(m.bias for m in members), members=tuple(m.name for m in members))
                mods = [m for m in mods if m not in members]
                mods.insert(first, merged)
    return mods


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    """vLLM's skip rules: Fp8Config.is_layer_skipped (exact prefix), AWQ modules_to_not_convert (substring),
    compressed-tensors `ignore` ("re:" regular expressions, else exact names)."""
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif p == name or p in name:
            return True
    return False


# ---- bytes of one module ---------------------------------------------------------------------------------------
def _fp8_scales(m: Module, f: WeightQuantization, engine: str) -> int:
    if f.strategy == "channel":
        return FP32 * m.rows
    if f.strategy == "block":
        bn, bk = f.block or (128, 128)
        if engine == "vllm" and not m.routed:
            rows = _cdiv(m.rows, bn)  # BlockQuantScaleParameter over the fused output_size_per_partition
        else:
            rows = sum(_cdiv(p, bn) for p in m.parts)  # per checkpoint tensor; MoE w13: 2 x cdiv(I, 128)
        return FP32 * rows * _cdiv(m.cols, bk)
    # per-tensor: vLLM requantises a fused module to its max scale (requantize_with_max_scale); a checkpoint has
    # one scale per tensor
    return FP32 * (1 if engine == "vllm" and not m.routed else len(m.parts))


def _int4_group_bytes(m: Module, f: WeightQuantization, engine: str, kernel: str) -> int:
    """AWQ / GPTQ / compressed-tensors W4A16 and GPTQ 8-bit, one matrix."""
    n, k = m.rows, m.cols
    bits = 8 if f.weight == "int8" else 4
    g = f.group_size or k
    groups = _cdiv(k, g)
    packed = n * k * bits // 8
    scales = groups * n * FP16
    zeros = groups * n * bits // 8
    g_idx = k * 4
    if f.method == "awq":
        return packed + scales + (zeros if f.zero_point else 0)  # qweight, scales, qzeros (awq_marlin: same bytes)
    if f.method == "compressed-tensors":
        zp = _cdiv(n, 8) * groups * 4 if f.zero_point else 0
        return packed + scales + 16 + zp + (g_idx if f.desc_act else 0)  # + weight_shape int64[2]
    # GPTQ
    if engine != "vllm":
        return packed + zeros + scales + g_idx  # qweight, qzeros, scales, g_idx as stored
    if kernel == "marlin":
        # MarlinLinearKernel: symmetric -> qzeros replaced by an empty tensor; act-order keeps g_idx and its sort
        # indices, else both empty
        return packed + scales + (2 * g_idx if f.desc_act else 0)
    # exllama `gptq` kernel: keeps qzeros; g_idx sorted when act-order, else emptied (gptq.py @0.11)
    return packed + zeros + scales + (g_idx if f.desc_act else 0)


def _bnb_bytes(m: Module, f: WeightQuantization) -> int:
    if f.weight == "int8":
        return m.rows * m.cols + FP32 * m.rows  # LLM.int8: int8 CB [N, K] + fp32 SCB [N]
    total = 0
    for n in m.parts:  # bitsandbytes quantises each checkpoint tensor with its own QuantState
        elems = n * m.cols
        blocks = _cdiv(elems, BNB_BLOCK)
        if f.double_quant:
            stats = blocks + FP32 * _cdiv(blocks, BNB_NESTED_BLOCK) + FP32 + BNB_CODES
        else:
            stats = FP32 * blocks + 16 * FP32
        total += _cdiv(elems, 2) + stats
    return total


def _mxfp4_bytes(m: Module, pad: tuple[int, int], dtype_bytes: float) -> int:
    """One expert's matrix: uint8 packed pairs + one e8m0 scale per 32 inputs + its bias, rows/cols padded as the
    MoE backend needs (w13: rows 2 I', cols H'; w2: rows H', cols I')."""
    pi, ph = pad
    if m.role in ("gate_up", "gate", "up"):
        rows = sum(_cdiv(p, pi) * pi for p in m.parts)
        cols = _cdiv(m.cols, ph) * ph
    else:
        rows = _cdiv(m.rows, ph) * ph
        cols = _cdiv(m.cols, pi) * pi
    bias = int(rows * dtype_bytes) if m.bias else 0
    return rows * cols // 2 + rows * _cdiv(cols, MXFP4_BLOCK) + bias


def module_bytes(m: Module, f: WeightQuantization | None, dtype: DType, engine: str, kernel: str = "",
                 mxfp4_pad: tuple[int, int] = (1, 1)) -> int:
    """Every tensor of one module on one GPU (all its experts), bias included."""
    b = dtype.bytes
    plain = int(m.count * (m.rows * m.cols + m.bias) * b)
    if f is None or not m.quantised or (f.experts_only and not m.routed):
        return plain
    bias = int(m.count * m.bias * b)
    if f.weight == "mxfp4":
        if engine == "vllm":
            return m.count * _mxfp4_bytes(m, mxfp4_pad, b)
        return m.count * (m.rows * m.cols // 2 + m.rows * _cdiv(m.cols, MXFP4_BLOCK)) + bias  # blocks + scales
    if f.method == "bitsandbytes":
        return m.count * _bnb_bytes(m, f) + bias
    if f.weight in ("fp8", "int8") and f.method != "gptq":
        inputs = FP32 * (1 if engine == "vllm" and not m.routed else len(m.parts)) if f.static_input_scale else 0
        return m.count * (m.rows * m.cols + _fp8_scales(m, f, engine) + inputs) + bias
    return m.count * _int4_group_bytes(m, f, engine, kernel) + bias


def gptq_kernel(f: WeightQuantization, generation: str, version: tuple[int, ...]) -> str:
    """vLLM's GPTQ linear kernel: Marlin on SM >= 80 for symmetric 4/8-bit (GPTQMarlinConfig.
    is_gptq_marlin_compatible: TYPE_MAP {(4, True), (8, True)}), unless `--quantization gptq` forced the exllama
    kernel (vLLM < 0.24; from 0.24 auto_gptq.py serves GPTQ through Marlin-family kernels only)."""
    if f.method != "gptq":
        return ""
    if version >= (0, 24):
        return "marlin"
    if f.forced_kernel == "gptq" or f.zero_point or generation not in MARLIN_GENERATIONS:
        return "exllama"
    return "marlin"


# ---- one pipeline stage ----------------------------------------------------------------------------------------
@dataclass
class _Tally:
    quantised: int = 0
    plain: int = 0
    experts: int = 0
    buffers: int = 0
    notes: list[str] = field(default_factory=list)


def stage_weights(setup: InferenceSetup, stage: int, groups: list[tuple[int, LayerGroup]], engine: str,
                  generation: str = "", version: tuple[int, ...] = (0, 33)) -> ServedWeights:
    """Weights resident on one GPU of pipeline stage `stage` (its layer groups as memory.layout.stage_groups
    gives them), in the served format."""
    model = setup.model.arch
    layout = setup.layout
    f = weight_format(setup)
    dtype = model_dtype(setup)
    kernel = gptq_kernel(f, generation, version) if f is not None else ""
    pad = mxfp4_padding(generation, version) if f is not None and f.weight == "mxfp4" else (1, 1)
    t = _Tally()
    bounds = layout.stage_bounds(model.n_layers)
    first_layer = bounds[stage][0]
    pos = first_layer
    for _, g in groups:
        mods = layer_modules(model, g.layer, layout, engine)
        for i in range(pos, pos + g.count):
            for m in mods:
                skip = f is not None and bool(f.ignore) and any(
                    _ignored(f"model.layers.{i}.{name}", f.ignore) for name in m.members or (m.name,))
                mm = replace(m, quantised=False) if skip else m
                n = module_bytes(mm, None if skip else f, dtype, engine, kernel, pad)
                quantised = f is not None and mm.quantised and not (f.experts_only and not mm.routed)
                if quantised:
                    t.quantised += n
                else:
                    t.plain += n
                if m.routed:
                    t.experts += n
        vec = sum(v.shard(layout.tp) for v in g.layer.vectors(model.hidden_size, model.module_names))
        t.plain += int(g.count * vec * dtype.bytes)
        if engine == "vllm" and g.layer.attention.mla:
            t.buffers += g.count * _mla_absorbed_bytes(g.layer, layout, dtype)
        pos += g.count
    if stage == 0:
        t.plain += _vocab_bytes(model, layout, embedding_tensors(model), dtype, engine)
    if stage == layout.pp - 1:
        head = head_tensors(model)
        if model.head.lm_head and model.head.tied and layout.pp > 1:
            head = head + [t0 for t0 in embedding_tensors(model) if t0.name == "embed_tokens"]
        if f is not None and f.lm_head and not model.head.tied:
            lm = Module("lm_head", "lm_head", (_cdiv(model.vocab_size, layout.tp),), model.hidden_size)
            t.quantised += module_bytes(lm, f, dtype, engine, kernel)
            head = [x for x in head if x.name != "lm_head.weight"]
        t.plain += _vocab_bytes(model, layout, head, dtype, engine)
    if engine == "vllm":
        t.buffers += _rotary_bytes(model, [g for _, g in groups], dtype)
    total = t.quantised + t.plain + t.buffers
    return ServedWeights(total=total, quantized=t.quantised, unquantized=t.plain, buffers=t.buffers,
                         experts=t.experts, format=f.describe() if f else dtype.value,
                         quantized_dtype=f.weight if f else None, dtype=dtype.value,
                         kernel=kernel or None, stage=stage)


def _vocab_bytes(model: Model, layout: Layout, tensors, dtype: DType, engine: str) -> int:
    """Embedding / head tensors on this GPU; vocab-parallel ones split over TP (vLLM pads the vocabulary to a
    multiple of 64 first)."""
    total = 0
    for t in tensors:
        rows = t.shape[0]
        if t.split == "vocab":
            if engine == "vllm":
                rows = _cdiv(rows, VOCAB_PADDING) * VOCAB_PADDING
            rows = _cdiv(rows, layout.tp)
        total += int(rows * math.prod(t.shape[1:]) * dtype.bytes)
    return total


def _rotary_bytes(model: Model, groups: list[LayerGroup], dtype: DType) -> int:
    """vLLM's RotaryEmbedding.cos_sin_cache [max_position, rotary_dim] in the model dtype, one per distinct rotary
    size (vllm/model_executor/layers/rotary_embedding get_rope caches instances by their parameters)."""
    dims = set()
    for g in groups:
        a = g.layer.attention
        if a.position != "rotary":
            continue
        dims.add(a.qk_rope_head_dim if a.mla else int(a.head_dim * a.rotary_fraction))
    return int(sum(model.max_positions * d * dtype.bytes for d in dims))


def _mla_absorbed_bytes(layer: LayerSpec, layout: Layout, dtype: DType) -> int:
    """W_UK_T [heads, nope, kv_lora] and W_UV [heads, kv_lora, v] in the activation dtype, this rank's heads."""
    a = layer.attention
    heads = _cdiv(a.heads, layout.tp)
    nope = a.head_dim - a.qk_rope_head_dim
    return int(heads * (a.kv_lora_rank or 0) * (nope + a.value_dim) * dtype.bytes)
