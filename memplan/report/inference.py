"""Plain-text view of a serving estimate: memory per GPU, the verdict (or whether vLLM starts), what fits, the KV
cache per layer kind, and the roofline throughput."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from memplan.report.text import first_clause
from memplan.spec.units import Units, format_bytes, format_count

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.inference import InferenceEstimate, Roofline, SglangStartup, VllmStartup


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _short(note: str, width: int = 72) -> str:
    """The first clause of a note, for the table (the JSON keeps it whole)."""
    return first_clause(note, width)


def _required_meaning(est: InferenceEstimate) -> str:
    """What the required line counts, where the engine's own startup (below it) allocates something else: vLLM and
    SGLang take a share of the GPU and fill it with KV blocks, whatever the requests need."""
    if est.vllm is None and est.sglang is None:
        return ""
    return (f"  (the components above: {est.batch} request(s) of {est.context:,} tokens; the engine allocates "
            "its share of the GPU, in the startup below)")


def _header(est: InferenceEstimate) -> list[str]:
    s, p = est.setup, est.setup.layout
    w = est.weights
    fmt = w.format if w else "-"
    kv = est.kv_layers[0].dtype if est.kv_layers else "-"
    load = f"{est.batch} sequence(s) x {est.context:,} tokens (prompt {est.prompt:,} + output {est.output:,})" \
        if est.engine == "hf" or s.batch else f"requests of {est.context:,} tokens (prompt {est.prompt:,} + output " \
                                              f"{est.output:,})"
    return [f"{est.model}: {est.parameters:,} parameters ({format_count(est.parameters)}), serving with "
            + {"vllm": "vLLM", "sglang": "SGLang"}.get(est.engine, "transformers (hf)"),
            f"weights {fmt}; KV cache {kv}; {load}; {p.gpus} GPU(s): tp={p.tp} pp={p.pp} replicas={p.dp}", ""]


def _kv_lines(est: InferenceEstimate) -> list[str]:
    rows = [[k.kind + (f" ({k.window})" if k.window else ""), k.layers, f"{k.bytes_per_token_per_layer:,}",
             f"{k.bytes_per_token:,}", _short(k.note, 60)] for k in est.kv_layers]
    return ["", "KV cache per layer kind (one GPU):",
            tabulate(rows, headers=["layers", "count", "B/token/layer", "B/token", "stores"], tablefmt="plain")]


def _vllm_lines(v: VllmStartup, units: Units) -> list[str]:
    b = lambda x: format_bytes(x, units)  # noqa: E731
    folded = bool(v.cudagraph) and v.peak_activation != v.profile_peak  # graphs counted inside the logged peak
    out = ["", f"vLLM {v.version} startup on {v.gpu}: total {b(v.total_memory)} (torch-reported) x "
               f"gpu_memory_utilization {v.gpu_memory_utilization} = {b(v.requested)} requested",
           tabulate([["weights (Model loading took)", b(v.weights)],
                     # vLLM's log line folds the estimated CUDA graphs into its peak (memory/vllm.py
                     # peak_logged) where it subtracts them: shown as one line, the graphs beneath it
                     ["peak activation" + (" (incl. CUDA graphs, as vLLM logs it)" if folded else ""),
                      b(v.peak_activation)],
                     *([["- of which CUDA graphs", b(v.cudagraph)]] if folded else []),
                     ["non-torch memory", b(v.non_torch)],
                     *([] if folded else [["CUDA graphs" + ("" if v.cudagraph_in_budget else " (outside the budget)"),
                                           b(v.cudagraph)]]),
                     ["Available KV cache memory", b(v.kv_cache_available)
                      + (f" ({b(v.kv_cache_shortfall)} short)" if v.kv_cache_shortfall else "")]],
                    tablefmt="plain")]
    specs = [[s.spec + (f" ({s.window})" if s.window else ""), s.layers, f"{s.page_size_bytes:,}",
              s.blocks_per_request] for s in v.layer_kinds]
    out += ["", tabulate(specs, headers=["KV spec", "layers", f"page (B, {v.block_size} tokens)",
                                         f"blocks/request at {v.max_model_len:,}"], tablefmt="plain")]
    if len(v.groups) > 1:
        out.append(f"{len(v.groups)} KV cache groups of {max(g.layers for g in v.groups)} layer slots: "
                   + ", ".join(f"{g.spec} x{g.layers}" for g in v.groups))
    out += [f"{v.kv_bytes_per_token:,} B per token, {v.bytes_per_block:,} B per block; GPU blocks: "
            f"{v.num_gpu_blocks:,}; GPU KV cache size: {v.gpu_kv_cache_tokens:,} tokens",
            f"Maximum concurrency for {v.max_model_len:,} tokens per request: {v.max_concurrency:.2f}x"
            + (f" ({v.concurrency_at_context:.2f}x at the given context)" if v.concurrency_at_context
               and abs(v.concurrency_at_context - v.max_concurrency) > 5e-3 else "")]
    if v.starts:
        out.append(f"STARTS (max_num_seqs {v.max_num_seqs}, max_num_batched_tokens {v.max_num_batched_tokens:,})")
    else:
        out.append("DOES NOT START" + (f" (fails in {v.failed_phase})" if v.failed_phase else "")
                   + f": {v.refusal}")
        out += [f"  try: {f}" for f in v.fixes]
    return out


def _sglang_lines(v: SglangStartup, units: Units) -> list[str]:
    b = lambda x: format_bytes(x, units)  # noqa: E731
    out = ["", f"SGLang {v.version} startup on {v.gpu}: {b(v.pre_load_free)} free before the load x "
               f"mem_fraction_static {v.mem_fraction_static} = {b(int(v.pre_load_free * v.mem_fraction_static))} "
               "for weights + KV pool",
           tabulate([["weights (Load weight end: mem usage)", b(v.weights)],
                     ["KV pool", f"{b(v.kv_pool)} ({v.cell_size:,} B per token)"],
                     ["reserve (activations, CUDA graphs)", b(v.reserve)]], tablefmt="plain"),
           f"max_total_num_tokens={v.max_total_num_tokens:,}, chunked_prefill_size={v.chunked_prefill_size:,}, "
           f"max_running_requests={v.max_running_requests:,}, context_len={v.context_len:,}; CUDA graphs for "
           f"{v.cuda_graph_batch_sizes} batch sizes up to {v.cuda_graph_max_bs}"]
    if v.starts:
        out.append("STARTS")
    else:
        out.append(f"DOES NOT START (fails in {v.failed_phase}): {v.refusal}")
        out += [f"  try: {f}" for f in v.fixes]
    return out + [f"note: {n}" for n in v.notes]


def _roofline_lines(r: Roofline, est: InferenceEstimate, units: Units) -> list[str]:
    p = est.setup.layout
    out = ["", f"roofline on {r.gpu} ({r.memory_bandwidth_gbps:,.0f} GB/s, {r.peak_tflops:g} TFLOP/s "
               f"{r.compute_dtype}): upper bounds, batch {r.batch}" + (
                   "" if est.setup.batch else " (no --batch: as many full-length requests as the KV cache holds)"),
           tabulate([
                   ["decode step (full context)", _seconds(r.decode_step_seconds), f"{r.decode_bound} bound, "
                    f"{format_bytes(r.decode_bytes_per_step, units)} read per GPU (KV "
                    f"{format_bytes(r.decode_kv_bytes_per_step, units)})"
                    + (f", TP all-reduces {_seconds(r.decode_comm_seconds)}" if r.decode_comm_seconds else "")],
                   ["decode tokens/s per GPU", f"{r.decode_tokens_per_second_per_gpu:,.0f}",
                    f"{r.decode_tokens_per_second:,.0f} over all {p.gpus} GPU(s); "
                    f"{r.decode_tokens_per_second_per_sequence:,.1f} per sequence"],
                   ["prefill tokens/s per GPU", f"{r.prefill_tokens_per_second_per_gpu:,.0f}",
                    f"{r.prefill_bound} bound, {r.prefill_passes} pass(es)"],
                   ["time to first token", _seconds(r.time_to_first_token_seconds),
                    f"prefill of {r.batch} x {est.prompt:,} prompt tokens"],
               ], tablefmt="plain")]
    return out + [f"note: {n}" for n in r.notes]


def inference_table(est: InferenceEstimate, units: Units = Units.GiB) -> str:
    lines = _header(est)
    rows = [[c.name, c.dtype or "-", format_bytes(c.bytes, units), _short(c.note)] for c in est.components]
    lines.append(tabulate(rows, headers=["component (per GPU)", "dtype", f"size ({units.value})", "note"]))
    g = est.per_gpu
    lines += ["", f"required per GPU  {format_bytes(g.required, units)}" + _required_meaning(est)]
    if est.kv_layers:
        lines += _kv_lines(est)
    if est.vllm is not None:
        lines += _vllm_lines(est.vllm, units)
    elif est.sglang is not None:
        lines += _sglang_lines(est.sglang, units)
    elif est.gpu:
        head = format_bytes(abs(est.headroom or 0), units)
        verdict = "FITS" if est.fits else "DOES NOT FIT"
        lines.append(f"{verdict} on {est.gpu} ({format_bytes(est.gpu_memory, units)}): "
                     + (f"{head} headroom" if est.fits else f"short by {head}"))
    if est.vllm is not None and est.setup.batch:
        lines.append(("batch FITS" if est.fits else "batch DOES NOT FIT") + f": {est.batch} x {est.context:,} tokens")
    if est.max_batch is not None:
        lines.append(f"max batch: {est.max_batch:,} concurrent sequences of {est.context:,} tokens")
    if est.max_context is not None:
        what = "largest --max-model-len that starts" if est.engine == "vllm" else \
            f"tokens per sequence at batch {est.batch}"
        lines.append(f"max context: {est.max_context:,} ({what})")
    if est.roofline is not None:
        lines += _roofline_lines(est.roofline, est, units)
    if est.vllm is not None:
        lines += [f"note: {n}" for n in est.vllm.notes]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)
