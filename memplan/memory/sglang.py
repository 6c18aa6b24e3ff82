"""SGLang's startup on each GPU, in its own order (python/sglang/srt/model_executor/model_runner.py and
model_runner_kv_cache_mixin.py @v0.5.10.post1), and whether it starts.

1. ModelRunner.init_torch_distributed: `min_per_gpu_memory` = the free memory (GiB, cudaMemGetInfo after
   empty_cache) once the CUDA context and the TP/PP communicators exist: the "pre-model-load" memory.
2. load_model: the weights (memory/quantized.py, the same served formats as vLLM's layers).
3. profile_max_num_token(pre): no dummy forward - the KV pool takes what `mem_fraction_static` leaves:
       rest = post_load_free - pre x (1 - mem_fraction_static)     (GiB)
       max_total_num_tokens = int(rest x 2**30) // cell_size
   with cell_size = KV heads on the rank x (head_dim + v_head_dim) x layers x KV dtype bytes (MLA:
   (kv_lora_rank + qk_rope_head_dim) x layers x bytes; hybrid SWA models split full/SWA pools by
   swa_full_tokens_ratio); then _resolve_token_capacity (--max-total-tokens cap, page alignment, the minimum
   over PP ranks) and _resolve_max_num_reqs.  So mem_fraction_static bounds weights + KV pool as a share of the
   memory free before the load (not of the GPU's total), and everything else - activations of a chunked prefill,
   CUDA graphs, sampler - must fit in the pre x (1 - mem_fraction_static) left over.
4. init_memory_pool raises "Not enough memory. Please try to increase --mem-fraction-static." when
   max_total_num_tokens <= 0; then the CUDA graphs are captured (cuda_graph_bs; piecewise prefill graphs up to
   chunked_prefill_size) out of the reserve; an out-of-memory there is a startup failure after the KV pool.
"""
from __future__ import annotations

from memplan.errors import MemplanError
from memplan.memory.kv_cache import elems_per_token
from memplan.memory.layout import stage_groups
from memplan.memory.quantized import model_dtype, stage_weights
from memplan.memory.vllm_profile import forward_peak
from memplan.results.inference import SglangStartup, VllmPhase
from memplan.serving.sglang import (GIB, HYBRID_SWA_FAMILIES, MIB, SGLANG_VERSION, SWA_FULL_TOKENS_RATIO, defaults,
                                    load_extra, max_running_requests, pre_load_used)
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup

# The sampler / logits of the largest CUDA-graph batch and the graphs themselves are not profiled by SGLang;
# memplan charges its own reserve estimate (server_args.py: cuda_graph_max_bs x 2 MiB for the graphs).
GRAPH_MIB_PER_BS = 2


def _pre_load_used(gpu: GPUSpec, setup: InferenceSetup) -> tuple[int, str]:
    p = setup.layout
    return pre_load_used(gpu.generation, gpu.interconnect or "", p.tp * p.pp, gpu.context_bytes)


def cell_size(setup: InferenceSetup, layers: range, kv_bytes: float) -> int:
    """ModelRunnerKVCacheMixin.get_cell_size_per_token over the layers this rank holds (full + SWA layers alike;
    the hybrid-SWA split comes after)."""
    model, tp = setup.model.arch, setup.layout.tp
    total = 0
    i = 0
    for g in model.groups:
        for _ in range(g.count):
            if i in layers:
                total += elems_per_token(g.layer.attention, tp)
            i += 1
    return int(total * kv_bytes)


def full_and_swa(setup: InferenceSetup, layers: range, kv_bytes: float) -> tuple[int, int]:
    """(full-attention, sliding/chunked) KV bytes per token over `layers`; for SGLang's non-hybrid models every
    layer counts as full (their windowed layers keep every token)."""
    model, tp = setup.model.arch, setup.layout.tp
    hybrid = model.family in HYBRID_SWA_FAMILIES
    full = swa = 0.0
    i = 0
    for g in model.groups:
        for _ in range(g.count):
            if i in layers:
                per = elems_per_token(g.layer.attention, tp) * kv_bytes
                if hybrid and g.layer.attention.window_kind in ("sliding", "chunked"):
                    swa += per
                else:
                    full += per
            i += 1
    return int(full), int(swa)


def hybrid_split(setup: InferenceSetup, layers: range, kv_bytes: float, tokens: int, page: int) -> int | None:
    """ModelRunnerKVCacheMixin._resolve_hybrid_swa_tokens: for hybrid-SWA architectures the profiled capacity's
    memory, tokens x (F x n_full + S x n_swa), is split so that swa_tokens = 0.8 x full_tokens:
    full_tokens = memory / (F x n_full + 0.8 x S x n_swa), page-aligned; max_total_num_tokens is then the full
    pool's.  None for other models."""
    full, swa = full_and_swa(setup, layers, kv_bytes)
    if not swa or not full:
        return None
    memory = tokens * (full + swa)
    return int(memory / (full + SWA_FULL_TOKENS_RATIO * swa)) // page * page


def _pool_bytes(setup: InferenceSetup, layers: range, kv_bytes: float, tokens: int, page: int) -> int:
    full, swa = full_and_swa(setup, layers, kv_bytes)
    swa_tokens = int(tokens * SWA_FULL_TOKENS_RATIO) // page * page if swa else 0
    return tokens * full + swa_tokens * swa


def sglang_startup(setup: InferenceSetup, gpu: GPUSpec, measured: dict[str, int] | None = None) -> SglangStartup:
    """SGLang's startup on `gpu`.  SGLang's settings come from the InferenceSetup's vLLM-named fields, which mean
    the same thing there: gpu_memory_utilization = --mem-fraction-static, max_num_batched_tokens =
    --chunked-prefill-size, max_num_seqs = --max-running-requests, max_model_len = --context-length,
    block_size = --page-size (default 1), enforce_eager = --disable-cuda-graph.  `measured` may give `weights`
    and `pre_load_used` (bytes) read from a log."""
    measured = measured or {}
    model, layout = setup.model.arch, setup.layout
    mla = any(g.layer.attention.mla for g in model.groups)
    gpu_mem_mib = gpu.memory_bytes / MIB
    d = defaults(gpu_mem_mib, layout.tp, layout.pp, mla, setup.max_num_batched_tokens, None,
                 setup.gpu_memory_utilization, piecewise=not setup.enforce_eager)
    if not 0 < d.mem_fraction_static <= 1:
        raise MemplanError(f"--mem-fraction-static {d.mem_fraction_static}: give a fraction in (0, 1]")
    total = gpu.torch_total_memory_bytes or gpu.memory_bytes
    used, used_src = _pre_load_used(gpu, setup)
    used = measured.get("pre_load_used", used)
    pre = total - used
    dtype = model_dtype(setup)
    kv_dtype = setup.kv_dtype or dtype
    page = setup.block_size or 1
    bounds = layout.stage_bounds(model.n_layers)
    tokens_per_stage, weights_per_stage, cells = [], [], []
    for i, groups in enumerate(stage_groups(model, layout)):
        w = stage_weights(setup, i, groups, "vllm", gpu.generation).total + load_extra()[0]
        w = measured.get("weights", w)
        rest_gib = (pre - w) / GIB - pre / GIB * (1 - d.mem_fraction_static)
        cell = cell_size(setup, range(*bounds[i]), kv_dtype.bytes)
        t = max(int(rest_gib * GIB) // cell, 0) if cell else 0
        split = hybrid_split(setup, range(*bounds[i]), kv_dtype.bytes, t, page)
        tokens_per_stage.append(split if split is not None else t)
        weights_per_stage.append(w)
        cells.append(cell)
    tokens = min(tokens_per_stage) // page * page
    if setup.max_model_len is None:
        context_len = model.max_positions
    else:
        context_len = setup.max_model_len
    k = tokens_per_stage.index(min(tokens_per_stage))
    weights, cell = weights_per_stage[k], cells[k]
    reserve = int(pre * (1 - d.mem_fraction_static))
    chunk = d.chunked_prefill_size
    groups_k = [g for _, g in stage_groups(model, layout)[k]]
    activation = forward_peak(groups_k, model, layout, chunk, dtype)
    graphs = 0 if setup.enforce_eager else len(d.cuda_graph_bs) and d.cuda_graph_max_bs * GRAPH_MIB_PER_BS * MIB
    phases = [VllmPhase(phase="load", needed=weights, limit=pre, fits=weights <= pre,
                        note="the weights in the served format"),
              VllmPhase(phase="kv", needed=weights + cell, limit=int(pre * d.mem_fraction_static),
                        fits=tokens > 0, note="weights + at least one token of KV within mem_fraction_static")]
    need = activation + graphs
    phases.append(VllmPhase(phase="graph capture" if not setup.enforce_eager else "prefill",
                            needed=need, limit=reserve, fits=need <= reserve,
                            note=f"a {chunk:,}-token chunked prefill's activations + CUDA graphs up to batch "
                                 f"{d.cuda_graph_max_bs}, out of the (1 - mem_fraction_static) reserve"))
    failed = next((p.phase for p in phases if not p.fits), None)
    refusal = None
    if failed == "load":
        refusal = f"CUDA out of memory loading {weights / GIB:.2f} GiB of weights into {pre / GIB:.2f} GiB free"
    elif failed == "kv":
        refusal = "Not enough memory. Please try to increase --mem-fraction-static."
    elif failed is not None:
        refusal = (f"CUDA out of memory in {failed}: {need / GIB:.2f} GiB needed, the reserve outside "
                   f"mem_fraction_static {d.mem_fraction_static} is {reserve / GIB:.2f} GiB")
    fixes = []
    if failed == "kv":
        fixes = ["a higher --mem-fraction-static", f"--tp {layout.tp * 2}", "a quantised checkpoint"]
    elif failed in ("graph capture", "prefill"):
        fixes = ["a lower --mem-fraction-static", "a smaller --chunked-prefill-size", "--cuda-graph-max-bs lower"]
    notes = [f"SGLang {SGLANG_VERSION} accounting (server_args.py, model_runner_kv_cache_mixin.py); {used_src} "
             "before the load (profiles/serving/sglang.json)",
             f"mem_fraction_static {d.mem_fraction_static}" + (" (SGLang's default for this GPU and TP: reserved "
                                                                f"{d.reserved_mib:,.0f} MiB of "
                                                                f"{gpu_mem_mib:,.0f})"
                                                                if setup.gpu_memory_utilization is None else ""),
             "radix cache: prefix-shared tokens occupy the pool once; max_total_num_tokens counts slots, not "
             "requests"]
    if model.family in HYBRID_SWA_FAMILIES:
        notes.append(f"hybrid SWA pools: max_total_num_tokens is the full-attention pool; the sliding/chunked pool "
                     f"holds {SWA_FULL_TOKENS_RATIO} x as many tokens (swa_full_tokens_ratio)")
    return SglangStartup(
        version=SGLANG_VERSION, gpu=gpu.name, total_memory=total, gpu_memory_mib=round(gpu_mem_mib),
        pre_load_free=pre, mem_fraction_static=d.mem_fraction_static, reserved_mib=d.reserved_mib,
        weights=weights, kv_pool=_pool_bytes(setup, range(*bounds[k]), kv_dtype.bytes, tokens, page),
        cell_size=cell, max_total_num_tokens=tokens,
        max_running_requests=max_running_requests(tokens, context_len, setup.max_num_seqs) if tokens else 0,
        context_len=context_len, page_size=page, chunked_prefill_size=chunk, cuda_graph_max_bs=d.cuda_graph_max_bs,
        cuda_graph_batch_sizes=0 if setup.enforce_eager else len(d.cuda_graph_bs),
        piecewise_cuda_graph_tokens=len(d.piecewise_tokens), reserve=reserve, activation_estimate=activation,
        cudagraph_estimate=graphs, starts=failed is None, failed_phase=failed, refusal=refusal, fixes=fixes,
        phases=phases, notes=notes)
