"""Serving memory per GPU: weights (with quantisation scales), the KV cache, the prefill workspace, overheads;
and the largest batch or context that fits.

KV cache (Pope et al. 2022, sec. 2; the layout of transformers' DynamicCache and vLLM's paged blocks):
    2 (keys and values) x layers x KV heads x head dim x cached tokens x sequences x bytes per element
with the KV heads of GQA/MQA (Ainslie et al. 2023; Shazeer 2019), split over tensor-parallel ranks (a rank holds
at least one KV head: when tp exceeds the KV heads they are replicated, as vLLM does), the layers of the most
loaded pipeline stage, and the cached tokens capped by the sliding window where the config has one
(Mistral 7B, Jiang et al. 2023, sec. 2 "Rolling Buffer Cache": a fixed cache of W tokens).

Weights: the transformer layers' linear weights in --weights-dtype with their scales; embeddings, norms, biases and
the LM head stay 16-bit (what AWQ/GPTQ checkpoints and LLM.int8() do):
    int8  per-output-channel fp32 scale (LLM.int8(), Dettmers et al. 2022; vLLM's W8 per-channel scales)
    int4  AWQ GEMM layout (Lin et al. 2023; AutoAWQ WQLinear_GEMM): packed 4-bit qweight, an fp16 scale and a
          4-bit zero point per group of 128 input channels of each output channel
    fp8   one fp32 per-tensor scale (vLLM/TensorRT-LLM fp8 checkpoints)

Prefill workspace (no autograd: a tensor dies when its last user is done), for the tokens of one forward pass
(the batch's prompts, or one --prefill-chunk), as transformers' decoder forward holds them (measured with
memplan.measure.tracker, tests/test_inference.py): the larger of the MLP stage (embedding output, layer input,
residual, normed input: 4h; gate/act, up and their product: 3f/tp per routed token) and the attention stage
(3h; the rotated q, the output and k before rotation: (2q+kv)/tp), in the compute dtype; eager attention peaks at
the softmax (16-bit scores plus softmax's fp32 input copy and output, the causal mask, repeat_kv's copies); and
the logits of the last token of each sequence (16-bit then upcast to fp32 for sampling).
"""
from __future__ import annotations

import math

from pydantic import ValidationError

from memplan.memory.search import largest_fitting
from memplan.errors import MemplanError
from memplan.memory.layout import local_parameters
from memplan.results.inference import InferenceEstimate, InferencePerGPU
from memplan.results.memory import Component
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup
from memplan.spec.layout import Layout
from memplan.spec.training import DType

INT4_SCALE_BYTES = 2  # fp16 scale per group (AutoAWQ WQLinear_GEMM.scales)
INT4_ZERO_BYTES = 0.5  # 4-bit zero point per group, packed 8 to an int32 (WQLinear_GEMM.qzeros)
CHANNEL_SCALE_BYTES = 4  # fp32 per output channel (bitsandbytes Int8Params.SCB)
TENSOR_SCALE_BYTES = 4  # fp32 per tensor (fp8)


def build_inference_setup(**kw) -> InferenceSetup:
    """Kept for callers of the old name: memplan.setups.serving_setup builds serving setups now."""
    from memplan.setups import serving_setup

    return serving_setup(kw.pop("model"), **kw)


# ---- the pieces ------------------------------------------------------------------------------------------
def _linear_shapes(setup: InferenceSetup) -> list[tuple[int, int, int, bool]]:
    """(rows, cols, tensors, is_expert) of the quantisable linear weights on one GPU (TP rank, PP stage)."""
    a, p = setup.model.arch, setup.layout
    layers = local_parameters(setup.model, p).layers
    out = []
    for lin in a.linears():
        if lin.role == "router":
            continue  # routers stay 16-bit (AutoAWQ/vLLM keep the gate unquantised)
        rows, cols = lin.out_features, lin.in_features
        if lin.split == "column":
            rows = math.ceil(rows / p.tp)
        elif lin.split == "row":
            cols = math.ceil(cols / p.tp)
        out.append((rows, cols, lin.count * layers, lin.count > 1))
    return out


def quantized_tensor_bytes(rows: int, cols: int, dtype: DType, group: int = 128) -> int:
    """One weight (rows = output channels, cols = input channels) stored in `dtype` with its scales."""
    if dtype == DType.int8:
        return rows * cols + CHANNEL_SCALE_BYTES * rows
    if dtype == DType.int4:
        groups = math.ceil(cols / group)
        return math.ceil(rows * cols / 2 + rows * groups * (INT4_SCALE_BYTES + INT4_ZERO_BYTES))
    if dtype == DType.fp8:
        return rows * cols + TENSOR_SCALE_BYTES
    return int(rows * cols * dtype.bytes)


def weight_bytes(setup: InferenceSetup) -> tuple[int, int, int]:
    """(all weight bytes, bytes in MoE experts, bytes of the 16-bit remainder) on one GPU."""
    local = local_parameters(setup.model, setup.layout)
    shapes = _linear_shapes(setup)
    linear_params = sum(r * c * k for r, c, k, _ in shapes)
    lin_bytes = sum(k * quantized_tensor_bytes(r, c, setup.weights_dtype, setup.int4_group) for r, c, k, _ in shapes)
    expert = sum(k * quantized_tensor_bytes(r, c, setup.weights_dtype, setup.int4_group) for r, c, k, e in shapes if e)
    rest_dtype = DType.fp32 if setup.weights_dtype == DType.fp32 else setup.compute_dtype
    rest = int((local.params - linear_params) * rest_dtype.bytes)
    return lin_bytes + rest, expert, rest


def kv_tokens(setup: InferenceSetup, context: int | None = None) -> int:
    a = setup.model.arch
    c = context if context is not None else setup.context
    return min(c, a.sliding_window) if a.sliding_window else c


def kv_bytes_per_token(setup: InferenceSetup) -> int:
    """Bytes one token of one sequence adds to this GPU's KV cache."""
    a, p = setup.model.arch, setup.layout
    heads = max(1, math.ceil(a.kv_heads / p.tp))
    layers = local_parameters(setup.model, p).layers
    return int(2 * layers * heads * a.head_size * setup.kv_dtype.bytes)


def prefill_workspace_bytes(setup: InferenceSetup, batch: int | None = None, context: int | None = None) -> int:
    """Peak of the prefill forward pass on one GPU (see the module docstring)."""
    a, p = setup.model.arch, setup.layout
    b = batch if batch is not None else setup.batch
    prompt = min(setup.prompt or (context if context is not None else setup.context),
                 context if context is not None else setup.context)
    tokens = b * prompt
    if setup.prefill_chunk:
        tokens = min(tokens, setup.prefill_chunk)
    cb = setup.compute_dtype.bytes
    h = a.hidden_size
    q, kv = a.q_size / p.tp, a.kv_size / p.tp
    routed = a.experts_per_token if a.n_experts else 1
    # MLP stage: the embedding output (kept by the model's forward), the layer input (kept by the caller until
    # the layer returns), the post-attention residual, the normed input; gate/act, up and their product
    mlp = 4 * h + 3 * a.ffn_hidden_size / p.tp * routed
    # attention stage (the rotated k and v are the KV cache, counted there): embedding output, layer input,
    # normed input (3h); the rotated q and the output, with k before rotation still alive (2q + kv)
    attn = 3 * h + 2 * q + kv
    scores = 0
    if setup.attention == "eager":
        # at the softmax: the rotated q, repeat_kv's copies of k and v for every query head (GQA/MQA), and per head
        # on this rank the 16-bit scores plus softmax(dtype=float32)'s fp32 input copy and output; the 16-bit causal
        # mask per sequence
        attn = 3 * h + q + (2 * q if kv < q else 0)
        q_tokens = min(prompt, setup.prefill_chunk or prompt)
        seqs = max(1, tokens // q_tokens)
        keys = prompt  # eager computes every score and masks the ones outside a sliding window
        scores = seqs * q_tokens * keys * (math.ceil(a.n_heads / p.tp) * (cb + 8) + cb)
    peak = max(tokens * attn * cb + scores, tokens * mlp * cb)  # the scores live in the attention stage
    logits = b * math.ceil(a.vocab_size / p.tp) * (cb + 4)
    return int(peak + logits)


def overhead_lines(setup: InferenceSetup, gpu: GPUSpec | None) -> list[Component]:
    """The training estimate's overheads that serving has too (memory/overheads.py): CUDA context, cuBLAS
    workspace, NCCL buffers of the TP/PP groups.  No allocator reserve: serving engines (vLLM, TensorRT-LLM)
    allocate the KV cache up front in one block, so the caching allocator's fragmentation does not grow with it."""
    from memplan.memory.overheads import overhead_components
    from memplan.spec.setup import TrainingSetup

    return overhead_components(TrainingSetup(model=setup.model, layout=setup.layout), gpu)


def overhead_bytes(setup: InferenceSetup, gpu: GPUSpec | None) -> int:
    return sum(c.bytes for c in overhead_lines(setup, gpu))


def required_bytes(setup: InferenceSetup, gpu: GPUSpec | None, batch: int, context: int) -> int:
    w, _, _ = weight_bytes(setup)
    kv = kv_bytes_per_token(setup) * kv_tokens(setup, context) * batch
    return w + kv + prefill_workspace_bytes(setup, batch, context) + overhead_bytes(setup, gpu)


# ---- the estimate ----------------------------------------------------------------------------------------
MAX_BATCH_SEARCH = 1 << 20


def estimate_inference(setup: InferenceSetup, gpu: GPUSpec | None = None, max_batch: bool = False,
                       max_context: bool = False) -> InferenceEstimate:
    a = setup.model.arch
    notes: list[str] = []
    if a.max_positions and setup.context > a.max_positions:
        notes.append(f"context {setup.context:,} exceeds the model's {a.max_positions:,} positions: counted as asked, "
                     "but the model needs position extension (e.g. RoPE scaling) to attend that far")
    w_total, w_expert, w_rest = weight_bytes(setup)
    per_tok = kv_bytes_per_token(setup)
    tokens = kv_tokens(setup)
    kv = per_tok * tokens * setup.batch
    act = prefill_workspace_bytes(setup)
    overheads = overhead_lines(setup, gpu)
    over = sum(c.bytes for c in overheads)
    wd = setup.weights_dtype
    scale_note = {DType.int8: "+ fp32 scale per output channel", DType.fp8: "+ fp32 scale per tensor",
                  DType.int4: f"+ fp16 scale and 4-bit zero per {setup.int4_group} inputs (AWQ)"}.get(wd, "")
    p = setup.layout
    comps = [
        Component(name="weights: transformer linears", category="weights", dtype=wd.value,
                  bytes=w_total - w_rest, note=scale_note + (f" (TP/PP shard: tp={p.tp}, pp={p.pp})"
                                                             if p.tp * p.pp > 1 else "")),
        Component(name="weights: embeddings, norms, biases, LM head", category="weights",
                  dtype=(DType.fp32 if wd == DType.fp32 else setup.compute_dtype).value, bytes=w_rest),
        Component(name="KV cache", category="kv_cache", dtype=setup.kv_dtype.value, bytes=kv,
                  note=f"{per_tok:,} B/token x {tokens:,} tokens x {setup.batch} sequence(s)"
                       + (f"; sliding window {a.sliding_window} caps the context" if a.sliding_window
                          and a.sliding_window < setup.context else "")),
        Component(name="prefill workspace", category="activations", dtype=setup.compute_dtype.value, bytes=act,
                  note=(f"chunks of {setup.prefill_chunk} tokens" if setup.prefill_chunk else
                        f"{setup.batch} x {setup.prompt_tokens} prompt tokens in one pass") + f", {setup.attention}"),
        *overheads,
    ]
    required = w_total + kv + act + over
    per_gpu = InferencePerGPU(weights=w_total, kv_cache=kv, activations=act, overheads=over, required=required,
                              total=required)
    if setup.kv_dtype == DType.fp8:
        notes.append("fp8 KV cache: per-layer k/v scales (a few bytes) not counted")
    if a.sliding_window and a.sliding_window < setup.context:
        notes.append(f"sliding window: {a.sliding_window} cached tokens per sequence (transformers keeps "
                     f"{a.sliding_window - 1} between steps and concatenates the new one)")
    est = InferenceEstimate(model=setup.model.name, parameters=setup.model.parameters.total, setup=setup,
                            components=comps, per_gpu=per_gpu, kv_bytes_per_token=per_tok, kv_tokens=tokens,
                            notes=notes)
    notes = est.notes  # the model holds its own copy of the list
    if gpu is None:
        notes.append("no --gpu: no verdict and no throughput roofline")
        return est
    cap = gpu.memory_bytes
    est.gpu, est.gpu_memory = gpu.name, cap
    est.headroom = cap - required
    est.fits = est.headroom >= 0
    if max_batch:
        est.max_batch = largest_fitting(lambda b: required_bytes(setup, gpu, b, setup.context) <= cap,
                                        MAX_BATCH_SEARCH)
    if max_context:
        limit = a.max_positions
        est.max_context = largest_fitting(lambda c: required_bytes(setup, gpu, setup.batch, c) <= cap, limit)
        if est.max_context == limit:
            notes.append(f"max context = the model's max positions ({limit}); memory alone would allow more")
    from memplan.perf.roofline import serving_roofline

    est.roofline = serving_roofline(setup, gpu, w_total, w_expert, kv)
    return est
