"""Plain-text view of a serving estimate: memory per GPU, verdict, what fits, roofline throughput."""
from __future__ import annotations

from tabulate import tabulate

from memplan.results.inference import InferenceEstimate
from memplan.spec.units import Units, format_bytes, format_count


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _short(note: str, width: int = 72) -> str:
    """The first clause of a note, for the table (the JSON keeps it whole)."""
    first = note.split("; ")[0]
    return first if len(first) <= width else first[: width - 3] + "..."


def inference_table(est: InferenceEstimate, units: Units = Units.GiB) -> str:
    s = est.setup
    p = s.layout
    lines = [
        f"{est.model}: {est.parameters:,} parameters ({format_count(est.parameters)}), serving",
        f"weights {s.weights_dtype.value}, KV cache {s.kv_dtype.value}; {s.batch} sequence(s) x {s.context:,} tokens "
        f"(prompt {s.prompt_tokens:,}); {p.gpus} GPU(s): tp={p.tp} pp={p.pp} replicas={p.dp}",
        "",
    ]
    rows = [[c.name, c.dtype or "-", format_bytes(c.bytes, units), _short(c.note)] for c in est.components]
    lines.append(tabulate(rows, headers=["component (per GPU)", "dtype", f"size ({units.value})", "note"]))
    g = est.per_gpu
    lines += ["", f"required per GPU  {format_bytes(g.required, units)}",
              f"KV cache: {est.kv_bytes_per_token:,} B per token per sequence on this GPU, {est.kv_tokens:,} "
              "tokens cached per sequence"]
    if est.gpu:
        head = format_bytes(abs(est.headroom or 0), units)
        verdict = "FITS" if est.fits else "DOES NOT FIT"
        lines.append(f"{verdict} on {est.gpu} ({format_bytes(est.gpu_memory, units)}): "
                     + (f"{head} headroom" if est.fits else f"short by {head}"))
    if est.max_batch is not None:
        lines.append(f"max batch: {est.max_batch:,} concurrent sequences of {s.context:,} tokens")
    if est.max_context is not None:
        lines.append(f"max context: {est.max_context:,} tokens per sequence at batch {s.batch}")
    r = est.roofline
    if r is not None:
        lines += ["", f"roofline on {r.gpu} ({r.memory_bandwidth_gbps:,.0f} GB/s, {r.peak_tflops:g} TFLOP/s "
                      f"{r.compute_dtype}): upper bounds", tabulate([
                          ["decode step (full context)", _seconds(r.decode_step_seconds), f"{r.decode_bound} bound, "
                           f"{format_bytes(r.decode_bytes_per_step, units)} read per GPU"
                           + (f", TP all-reduces {_seconds(r.decode_comm_seconds)}" if r.decode_comm_seconds else "")],
                          ["decode tokens/s per GPU", f"{r.decode_tokens_per_second_per_gpu:,.0f}",
                           f"{r.decode_tokens_per_second:,.0f} over all {p.gpus} GPU(s); "
                           f"{r.decode_tokens_per_second_per_sequence:,.1f} per sequence"],
                          ["prefill tokens/s per GPU", f"{r.prefill_tokens_per_second_per_gpu:,.0f}",
                           f"{r.prefill_bound} bound"],
                          ["time to first token", _seconds(r.time_to_first_token_seconds),
                           f"prefill of {s.batch} x {s.prompt_tokens:,} prompt tokens"],
                      ], tablefmt="plain")]
        lines += [f"note: {n}" for n in r.notes]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)
