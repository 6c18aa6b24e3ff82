"""The serving estimate for either engine: components per GPU, the verdict, the largest batch or context, and the
roofline, built from memory/vllm.py (vLLM's startup accounting) or memory/hf_serving.py (transformers) and
perf/roofline.py -- an answer composed from the bytes and the seconds, so it lives in answers/ (it was
memory/inference.py, which imported perf/ and setups upward).

- `--engine vllm`: the components are vLLM's own (weights, peak activation, non-torch memory, CUDA graphs, the
  KV block pool); "fits" means vLLM starts and the batch fits in its blocks and max_num_seqs; --max-batch is the
  concurrency the blocks give at the context (capped by max_num_seqs), --max-context the largest max-model-len
  that starts.
- `--engine hf`: weights + the DynamicCache of batch x context + the prefill workspace + overheads against the
  GPU's memory; --max-batch / --max-context search that sum.
"""
from __future__ import annotations

import math

from memplan.memory.hf_serving import (cached_tokens, heaviest_stage, kv_dtype, overhead_lines,
                                       prefill_workspace_bytes, required_bytes)
from memplan.memory.kv_cache import bytes_per_token, describe, hf_cache_bytes, hf_peak_tokens
from memplan.memory.quantized import model_dtype
from memplan.memory.search import largest_fitting
from memplan.results.inference import InferenceEstimate, InferencePerGPU, ServedWeights
from memplan.results.memory import Component
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup

GiB = 1 << 30
MAX_BATCH_SEARCH = 1 << 20
SUGGESTED_CHUNK = 2048  # vLLM's max_num_batched_tokens default on most GPUs (vllm serve)


def build_inference_setup(**kw) -> InferenceSetup:
    """Kept for callers of the old name: memplan.setups.serving_setup builds serving setups now."""
    from memplan.setups import serving_setup

    return serving_setup(kw.pop("model"), **kw)


def _weight_components(w: ServedWeights, setup: InferenceSetup) -> list[Component]:
    p = setup.layout
    shard = f" (TP/PP shard: tp={p.tp}, pp={p.pp})" if p.tp * p.pp > 1 else ""
    out = []
    if w.quantized:
        out.append(Component(name="weights: quantised modules", category="weights", dtype=w.quantized_dtype,
                             bytes=w.quantized, note=w.format + (f", {w.kernel} kernel" if w.kernel else "") + shard))
    out.append(Component(name="weights: " + ("16-bit tensors" if w.quantized else "all tensors"), category="weights",
                         dtype=w.dtype, bytes=w.unquantized,
                         note=("embeddings, norms, biases, LM head, routers" if w.quantized else "") + shard))
    if w.buffers:
        mla = any(g.layer.attention.mla for g in setup.model.arch.groups)
        out.append(Component(name="weights: buffers", category="weights", dtype=w.dtype, bytes=w.buffers,
                             note="rotary cos/sin caches" + (" + MLA's decompressed W_UK/W_UV" if mla else "")))
    return out


def _load_notes(setup: InferenceSetup, est_notes: list[str]) -> None:
    a = setup.model.arch
    c = setup.context_tokens
    if a.max_positions and c > a.max_positions:
        est_notes.append(f"context {c:,} exceeds the model's {a.max_positions:,} positions: counted as asked, but the "
                         "model needs position extension (e.g. RoPE scaling) to attend that far")


# ---- transformers --------------------------------------------------------------------------------------------------
def _hf_estimate(setup: InferenceSetup, gpu: GPUSpec | None, max_batch: bool, max_context: bool
                 ) -> InferenceEstimate:
    ctx, b = setup.context_tokens, setup.sequences
    stage, w, kinds = heaviest_stage(setup, ctx)
    prompt = min(setup.prompt_tokens, ctx)
    kv = hf_cache_bytes(kinds, prompt, ctx, b, setup.prefill_chunk)
    act = prefill_workspace_bytes(setup)
    overheads = overhead_lines(setup, gpu)
    over = sum(c.bytes for c in overheads)
    comps = _weight_components(w, setup)
    for k in kinds:
        toks = hf_peak_tokens(k, prompt, ctx, setup.prefill_chunk)
        comps.append(Component(name=f"KV cache: {k.layers} {k.kind}" + (f" ({k.window})" if k.window else ""),
                               category="kv_cache", dtype=k.dtype, bytes=b * k.bytes_per_token * toks,
                               note=f"{k.bytes_per_token:,} B/token x {toks:,} tokens x {b} sequence(s); {k.note}"))
    chunked = f"chunks of {setup.prefill_chunk} tokens" if setup.prefill_chunk else \
        f"{b} x {setup.prompt_tokens:,} prompt tokens in one pass"
    comps.append(Component(name="prefill workspace", category="activations", dtype=model_dtype(setup).value, bytes=act,
                           note=f"{chunked}, {setup.attention}"))
    comps += overheads
    required = w.total + kv + act + over
    notes: list[str] = []
    _load_notes(setup, notes)
    if w.quantized_dtype == "mxfp4":
        notes.append("MXFP4 experts: transformers keeps them packed only with triton and the `kernels` package; "
                     "otherwise it dequantises them to bf16 at load (quantizers/quantizer_mxfp4.py @5.24)")
    if kv_dtype(setup).bytes == 1:
        notes.append("fp8 KV cache: transformers' DynamicCache stores the model dtype; a quantized cache (e.g. "
                     "QuantizedCache) is needed, counted here at 1 byte per element")
    if any(k.window and k.window - 1 < ctx for k in kinds):
        notes.append("sliding/chunked layers: transformers' DynamicSlidingWindowLayer shows window - 1 tokens, but "
                     "after a one-pass prefill it holds the whole prompt's storage until the first decode step, then "
                     "window tokens (cache_utils.py @5.24); --prefill-chunk caps the first")
    if not setup.prefill_chunk and act > max(kv, w.total // 4):
        chunk = setup.model_copy(update={"prefill_chunk": SUGGESTED_CHUNK})
        notes.append(f"the unchunked prefill of {b} x {setup.prompt_tokens:,} tokens dominates ({act / GiB:.2f} GiB); "
                     f"--prefill-chunk {SUGGESTED_CHUNK} needs {prefill_workspace_bytes(chunk) / GiB:.2f} GiB (vLLM "
                     "chunks prefills by max_num_batched_tokens: --engine vllm)")
    est = InferenceEstimate(
        model=setup.model.name, parameters=setup.model.parameters.total, setup=setup, engine="hf", components=comps,
        per_gpu=InferencePerGPU(weights=w.total, kv_cache=kv, activations=act, overheads=over, required=required,
                                total=required),
        weights=w, kv_bytes_per_token=bytes_per_token(kinds), kv_tokens=cached_tokens(setup, kinds, ctx),
        kv_layers=kinds,
        context=ctx, prompt=setup.prompt_tokens, output=setup.output_tokens, batch=b, notes=notes)
    if gpu is None:
        est.notes.append("no --gpu: no verdict and no throughput roofline")
        return est
    cap = gpu.torch_total_memory_bytes or gpu.memory_bytes
    est.gpu, est.gpu_memory = gpu.name, cap
    est.headroom = cap - required
    est.fits = est.headroom >= 0
    if max_batch:
        est.max_batch = largest_fitting(lambda n: required_bytes(setup, gpu, n, ctx) <= cap, MAX_BATCH_SEARCH)
    if max_context:
        limit = setup.model.arch.max_positions
        est.max_context = largest_fitting(lambda c: required_bytes(setup, gpu, b, c) <= cap, limit)
        if est.max_context == limit:
            est.notes.append(f"max context = the model's max positions ({limit:,}); memory alone would allow more")
    from memplan.perf.roofline import serving_roofline

    est.roofline = serving_roofline(setup, gpu, w, kinds, b, ctx)
    return est


# ---- vLLM --------------------------------------------------------------------------------------------------------
def _vllm_components(costs, kv_need: int, b: int, ctx: int, kv_dtype: str, kinds, setup, in_budget: bool | None,
                     s) -> list[Component]:
    graphs = f"{len(s.piecewise)} + {len(s.full)} graphs" if not s.eager else "--enforce-eager: none"
    where = "" if in_budget is None else ("; in the KV budget" if in_budget else "; outside gpu_memory_utilization")
    return _weight_components(costs.weights, setup) + [
        Component(name="peak activation (profile run)", category="activations", dtype=s.dtype.value,
                  bytes=costs.peak, note=f"{costs.peak_source} (max_num_batched_tokens {s.max_num_batched_tokens:,},"
                                         f" max_num_seqs {s.max_num_seqs})"),
        Component(name="non-torch memory", category="overheads", bytes=costs.non_torch,
                  note="assumed from published vLLM logs (memory/vllm_profile.py)"),
        Component(name="CUDA graphs", category="overheads", bytes=costs.cudagraph, note=graphs + where),
        Component(name=f"KV cache: {b} x {ctx:,} tokens", category="kv_cache", dtype=kv_dtype, bytes=kv_need,
                  note=f"in whole blocks of {s.block_size} tokens ({describe(kinds)})"),
    ]


def _vllm_estimate(setup: InferenceSetup, gpu: GPUSpec | None, max_batch: bool, max_context: bool
                   ) -> InferenceEstimate:
    """per_gpu: what this load needs on the GPU vLLM starts out of (weights, peak, non-torch, graphs and the KV
    blocks of `batch` requests of the context); vllm: the startup itself (its whole KV pool, blocks, concurrency)."""
    from memplan.memory.kv_cache import layer_kinds
    from memplan.memory.layout import stage_groups
    from memplan.memory.vllm import Settings, stage_costs, vllm_startup

    ctx = setup.context_tokens
    b = setup.sequences
    notes: list[str] = []
    _load_notes(setup, notes)
    s = Settings(setup, gpu)
    plan = s.kv_plan(setup)
    st = vllm_startup(setup, gpu, context=ctx) if gpu is not None else None
    costs = stage_costs(setup, s, gpu.generation if gpu else "", gpu=gpu)
    stage = 0
    if st is not None and st.stages:
        stage = next(x.stage for x in st.stages if x.num_gpu_blocks == st.num_gpu_blocks)
    c = costs[stage]
    groups = stage_groups(setup.model.arch, setup.layout)
    kinds = layer_kinds((g for _, g in groups[stage]), setup.layout, s.kv_dtype)
    kv_need = plan.bytes_per_block(c.layers) * plan.blocks_per_request(min(ctx, s.max_model_len)) * b
    in_budget = st.cudagraph_in_budget if st is not None else None
    comps = _vllm_components(c, kv_need, b, ctx, s.kv_dtype.value, kinds, setup, in_budget, s)
    required = c.weights.total + c.peak + c.non_torch + c.cudagraph + kv_need
    est = InferenceEstimate(
        model=setup.model.name, parameters=setup.model.parameters.total, setup=setup, engine="vllm",
        components=comps,
        per_gpu=InferencePerGPU(weights=c.weights.total, kv_cache=kv_need, activations=c.peak,
                                overheads=c.non_torch + c.cudagraph, required=required, total=required),
        weights=c.weights, kv_bytes_per_token=sum(plan.specs[i].bytes_per_token for i in c.layers), kv_tokens=ctx,
        kv_layers=kinds, context=ctx, prompt=setup.prompt_tokens, output=setup.output_tokens, batch=b, vllm=st,
        notes=notes)
    if st is None:
        notes.append("no --gpu: vLLM's budget is a share of the GPU's memory, so no KV blocks, concurrency or verdict "
                     f"(vLLM's defaults for an unknown GPU assumed: max_num_batched_tokens {s.max_num_batched_tokens},"
                     f" max_num_seqs {s.max_num_seqs}); pass -g GPU")
        return est
    conc_ctx = st.concurrency_at_context or st.max_concurrency
    batch = setup.batch
    est.gpu, est.gpu_memory = gpu.name, st.total_memory
    est.fits = st.starts and (batch is None or (batch <= conc_ctx and batch <= st.max_num_seqs))
    est.headroom = st.kv_cache_available - st.kv_cache_shortfall - kv_need
    if batch is not None and batch > st.max_num_seqs:
        notes.append(f"--batch {batch} exceeds max_num_seqs {st.max_num_seqs}: vLLM schedules at most that many at "
                     "once")
    elif batch is not None and batch > conc_ctx:
        notes.append(f"--batch {batch} sequences of {ctx:,} tokens exceed the {conc_ctx:.2f} the KV blocks hold: vLLM "
                     "queues (or preempts) the rest")
    if max_batch:
        est.max_batch = min(st.max_num_seqs, math.floor(conc_ctx)) if st.starts else 0
        notes.append(f"max batch (vLLM): {conc_ctx:.2f} requests of {ctx:,} tokens fit in the KV blocks, "
                     f"max_num_seqs {st.max_num_seqs}")
    if max_context:
        est.max_context = _largest_max_model_len(setup, gpu, st)
        limit = setup.model.arch.max_positions
        if est.max_context == limit:
            notes.append(f"max context = the model's max positions ({limit:,}); the KV blocks would hold more (vLLM "
                         "refuses a longer --max-model-len without VLLM_ALLOW_LONG_MAX_MODEL_LEN)")
    from memplan.perf.roofline import serving_roofline

    decode_batch = batch or max(1, min(st.max_num_seqs, math.floor(conc_ctx)))
    est.roofline = serving_roofline(setup, gpu, c.weights, kinds, decode_batch, ctx,
                                    prefill_chunk=st.max_num_batched_tokens)
    return est


def _largest_max_model_len(setup: InferenceSetup, gpu: GPUSpec, st) -> int:
    """The largest --max-model-len vLLM starts with (its startup check), up to the model's max positions (vLLM
    refuses longer without VLLM_ALLOW_LONG_MAX_MODEL_LEN)."""
    from memplan.memory.vllm import Settings

    s = Settings(setup, gpu)
    plan = s.kv_plan(setup)
    upper = setup.model.arch.max_positions
    bounds = setup.layout.stage_bounds(setup.model.arch.n_layers)
    stages = st.stages or [None]
    best = upper
    for i, x in enumerate(stages):
        avail = x.kv_cache_available if x is not None else st.kv_cache_available
        bpb = x.bytes_per_block if x is not None else st.bytes_per_block
        usable = avail - (bpb if s.rules.null_block_reserved else 0)
        if avail <= 0:
            return 0
        best = min(best, plan.largest_len(usable, range(*bounds[i]), upper))
    return best


# ---- SGLang ------------------------------------------------------------------------------------------------------
def _sglang_estimate(setup: InferenceSetup, gpu: GPUSpec | None, max_batch: bool, max_context: bool
                     ) -> InferenceEstimate:
    """per_gpu: weights + the KV of `batch` requests of the context + the reserve outside mem_fraction_static;
    sglang: the startup itself (max_total_num_tokens, max_running_requests, whether it starts)."""
    from memplan.memory.kv_cache import layer_kinds
    from memplan.memory.layout import stage_groups
    from memplan.memory.quantized import stage_weights
    from memplan.memory.sglang import cell_size, full_and_swa, sglang_startup

    ctx, b = setup.context_tokens, setup.sequences
    notes: list[str] = []
    _load_notes(setup, notes)
    kv_dt = setup.kv_dtype or model_dtype(setup)
    groups = stage_groups(setup.model.arch, setup.layout)
    kinds = layer_kinds((g for _, g in groups[0]), setup.layout, kv_dt)
    layers = range(*setup.layout.stage_bounds(setup.model.arch.n_layers)[0])
    cell = cell_size(setup, layers, kv_dt.bytes)
    w = stage_weights(setup, 0, groups[0], "vllm", gpu.generation if gpu else "")
    st = sglang_startup(setup, gpu) if gpu is not None else None
    full, swa = full_and_swa(setup, layers, kv_dt.bytes)
    window = max((k.window or 0) for k in kinds) if swa else 0
    kv_need = (full * ctx + swa * min(ctx, window or ctx)) * b  # the SWA pool evicts outside the window
    act = st.activation_estimate if st else 0
    over = (st.reserve - st.activation_estimate) if st else 0
    comps = _weight_components(w, setup) + [
        Component(name=f"KV cache: {b} x {ctx:,} tokens", category="kv_cache", dtype=kv_dt.value, bytes=kv_need,
                  note=f"{cell:,} B per token in the token pool (page size {setup.block_size or 1}); "
                       f"{describe(kinds)}")]
    if st is not None:
        comps += [Component(name="chunked prefill activations", category="activations", dtype=model_dtype(setup).value,
                            bytes=act, note=f"{st.chunked_prefill_size:,} tokens per chunk (memplan's estimate)"),
                  Component(name="reserve outside mem_fraction_static", category="overheads", bytes=max(over, 0),
                            note=f"SGLang's reserve of {st.reserve / 2**30:.2f} GiB less the prefill activations "
                                 f"above; (1 - {st.mem_fraction_static}) x the free memory before the load: CUDA "
                                 "graphs, sampler, NCCL")]
    required = w.total + kv_need + act + max(over, 0)
    est = InferenceEstimate(
        model=setup.model.name, parameters=setup.model.parameters.total, setup=setup, engine="sglang",
        components=comps, per_gpu=InferencePerGPU(weights=w.total, kv_cache=kv_need, activations=act,
                                                  overheads=max(over, 0), required=required, total=required),
        weights=w, kv_bytes_per_token=cell, kv_tokens=ctx, kv_layers=kinds, context=ctx, prompt=setup.prompt_tokens,
        output=setup.output_tokens, batch=b, sglang=st, notes=notes)
    if st is None:
        notes.append("no --gpu: SGLang's pool is a share of the GPU's free memory, so no token count or verdict; "
                     "pass -g GPU")
        return est
    est.gpu, est.gpu_memory = gpu.name, st.total_memory
    fits_tokens = st.max_total_num_tokens >= ctx * (setup.batch or 1)
    est.fits = st.starts and fits_tokens and (setup.batch is None or setup.batch <= st.max_running_requests)
    est.headroom = st.max_total_num_tokens * cell - kv_need
    if ctx > st.max_total_num_tokens:
        notes.append(f"a request of {ctx:,} tokens exceeds max_total_num_tokens {st.max_total_num_tokens:,}: SGLang "
                     "rejects it")
    if max_batch:
        est.max_batch = min(st.max_running_requests, st.max_total_num_tokens // max(ctx, 1)) if st.starts else 0
    if max_context:
        est.max_context = min(st.max_total_num_tokens, setup.model.arch.max_positions) if st.starts else 0
    from memplan.perf.roofline import serving_roofline

    decode_batch = setup.batch or max(1, min(st.max_running_requests, st.max_total_num_tokens // max(ctx, 1)))
    est.roofline = serving_roofline(setup, gpu, w, kinds, decode_batch, ctx, prefill_chunk=st.chunked_prefill_size)
    return est


def estimate_inference(setup: InferenceSetup, gpu: GPUSpec | None = None, max_batch: bool = False,
                       max_context: bool = False) -> InferenceEstimate:
    if setup.engine == "sglang":
        return _sglang_estimate(setup, gpu, max_batch, max_context)
    if setup.engine == "vllm":
        return _vllm_estimate(setup, gpu, max_batch, max_context)
    return _hf_estimate(setup, gpu, max_batch, max_context)
