"""The table `memplan time` prints (and a TimeEstimate's `.table()` and notebook view)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from memplan.report.tables import assumed_lines
from memplan.report.text import brief, describe_layout
from memplan.spec.units import format_bytes, format_count

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.time import TimeEstimate


def _f(x: float) -> str:
    if x == 0:
        return "0 FLOP"
    return format_count(x).replace("B", " G").replace("M", " M").replace("T", " T").replace("K", " K") + "FLOP"


def _s(x: float) -> str:
    return f"{x:.3f} s" if x < 100 else f"{x:,.0f} s"


def _walk_lines(e: TimeEstimate) -> list[str]:
    w = e.walk
    if w is None:
        return []
    head = "op walk" if e.step_source == "op walk" else "op walk (for comparison)"
    lines = [f"{head}: {_s(w.step_seconds)} per step on pipeline stage {w.busiest_stage} ({w.micro_batches} "
             f"micro-batches)",
             f"  GEMMs {_s(w.gemm_seconds)}, attention {_s(w.attention_seconds)}, memory-bound "
             f"{_s(w.memory_bound_seconds)}, optimizer {_s(w.optimizer_seconds)}",
             f"  exposed: tensor-parallel {_s(w.tp_exposed_seconds)} (hidden {_s(w.tp_hidden_seconds)}), "
             f"pipeline sends {_s(w.pp_p2p_seconds)}, bubble {_s(w.bubble_seconds)}, data-parallel "
             f"{_s(w.dp_exposed_seconds)} of {_s(w.dp_total_seconds)}"
             + (f", context-parallel {_s(w.cp_exposed_seconds)}" if w.cp_exposed_seconds else "")
             + (f", expert-parallel {_s(w.ep_exposed_seconds)}" if w.ep_exposed_seconds else "")
             + (f", offload {_s(w.offload_exposed_seconds)}" if w.offload_exposed_seconds else "")]
    if len(w.stages) > 1:
        picks = range(len(w.stages)) if len(w.stages) <= 4 else sorted({0, w.busiest_stage, len(w.stages) - 1})
        shown = [w.stages[i] for i in picks]
        lines.append("  per micro-batch: " + "; ".join(
            f"stage {s.stage} ({s.layers} layers) fwd {s.forward_seconds * 1e3:,.1f} ms bwd "
            f"{s.backward_seconds * 1e3:,.1f} ms" for s in shown))
    return lines


def time_table(e: TimeEstimate) -> str:
    L, f = e.layout, e.flops
    lines = []
    if e.fit_hint:
        lines += [e.fit_hint, ""]
    lines += [
        f"{e.model}: {e.parameters:,} parameters ({format_count(e.parameters)}) on {L.gpus} x {e.gpu}, "
        f"{e.precision}" + (f", execution {e.execution}" if e.execution else ""),
        f"layout: {describe_layout(L)}  (global batch {e.global_batch} x seq {e.seq} = {e.tokens_per_step:,} "
        "tokens/step)",
        *assumed_lines([a for a in e.assumed if a.input != "micro_batch"]),  # time's micro-batch comes from -B
        "",
        "FLOPs per token",
        f"  model (fwd + 2x bwd)      {_f(e.flops_per_token)}    forward: linear {_f(f.forward_linear)}, "
        f"attention {_f(f.forward_attention)}, LM head {_f(f.forward_lm_head)}",
        f"  hardware (+ recompute)    {_f(e.hardware_flops_per_token)}    (recompute: {f.recompute})",
        f"  6N rule                   {_f(f.six_n)}    (N = {format_count(f.n_parameters)})",
        f"  PaLM 6N + 12LHQT          {_f(f.palm)}",
        "",
        f"step {_s(e.step_seconds)} from {e.step_source}",
    ]
    lines += _walk_lines(e)
    for c in e.comm:
        lines.append(f"  {c.parallelism:<7} {c.name:<44} group {c.group:<5} {c.link} {c.bandwidth_gbps:,.0f} GB/s: "
                     f"{c.bytes_per_step / 1e9:,.3g} GB/step, {_s(c.seconds)}, exposed {_s(c.exposed_seconds)}")
    if e.kernels:
        lines.append("efficiencies used (full sources in --json, `kernels`):")
        for k in e.kernels:
            val = f" {k.value:.3g}" if k.value is not None else ""
            src = brief(k.source, 150)
            lines.append(f"  {k.name}{val}: {src}")
    cost = "-"
    if e.cost is not None:
        src = "--price" if e.price_source == "--price" else \
            f"labelled default of the {e.gpu} profile; --price to change"
        cost = f"${e.cost:,.0f} at ${e.price_per_hour:g}/GPU-hour ({src})" if e.cost >= 10 else \
            f"${e.cost:,.2f} at ${e.price_per_hour:g}/GPU-hour ({src})"
    lines += [
        f"throughput {e.tokens_per_second:,.0f} tokens/s ({e.tokens_per_second_per_gpu:,.0f} per GPU), "
        f"{e.achieved_tflops_per_gpu:.1f} TFLOP/s per GPU (hardware FLOPs), MFU {e.mfu:.1%}, HFU {e.hfu:.1%}",
    ]
    if e.measured_step_seconds:
        lines.append(f"measured step in the record: {_s(e.measured_step_seconds)}; the op walk predicts "
                     f"{_s(e.predicted_step_seconds)} for this setup "
                     f"({(e.predicted_step_seconds / e.measured_step_seconds - 1):+.1%})")
    lines += [
        "",
        f"run:       {e.steps:,} steps x {e.tokens_per_step:,} tokens = {format_count(e.tokens)} tokens",
        f"time:      {_duration(e.seconds)}",
        f"GPU-hours: {e.gpu_hours:,.0f}" if e.gpu_hours >= 10 else f"GPU-hours: {e.gpu_hours:,.3g}",
        f"cost:      {cost}",
    ]
    if e.memory_required_bytes is not None:
        verdict = "fits" if e.fits else "DOES NOT FIT"
        lines.append(f"memory:    {format_bytes(e.memory_required_bytes)} per GPU required ({verdict}; "
                     "`memplan estimate` with the same flags gives the breakdown)")
    lines.append("")
    lines += [f"assumption: {a}" for a in e.assumptions]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """Days (and hours) for a run, or hours/minutes/seconds when it is short: never '0.0 days'."""
    if seconds >= 86400:
        return f"{seconds / 86400:,.1f} days ({seconds / 3600:,.1f} hours)"
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} hours"
    if seconds >= 60:
        return f"{seconds / 60:,.1f} minutes"
    return f"{seconds:,.1f} seconds"
