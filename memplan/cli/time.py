"""`memplan time`: FLOPs per token, step time and its breakdown, days, GPU-hours and cost."""
from __future__ import annotations

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import (build_setup, json_option, lora_options, pop_training_kwargs, resolve_gpu,
                                 save_setup_if_asked, training_options)
from memplan.cli.types import FRACTION, NAME, NON_NEGATIVE_FLOAT, PATH, POSITIVE_FLOAT, BoundedInt
from memplan.report.tables import assumed_lines
from memplan.report.text import brief
from memplan.results.time import TimeEstimate, describe_layout
from memplan.errors import MemplanError
from memplan.spec.units import format_bytes, format_count, parse_count

EFFICIENCY_KEYS = ("mfu", "achieved_tflops", "measured", "kernel_scale", "system", "execution", "overlap",
                   "interconnect", "internode", "price", "cpu_bandwidth")


def _tokens(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(parse_count(text))
    except MemplanError as exc:  # the same grammar as a parameter count, but these are tokens
        raise MemplanError(str(exc).replace("parameter count", "token count").replace(
            "as a token count", "as a token count (--tokens)")) from None


END_TO_END_OPTIONS = [
    click.option("--achieved-tflops", type=POSITIVE_FLOAT,
                 help="Measured end to end: hardware TFLOP/s per GPU over the whole step (recompute included, as "
                      "Megatron-LM reports it). The step takes hardware FLOPs / X."),
    click.option("--mfu", type=FRACTION, help="Measured end to end: model FLOPs / (step x dense peak), as PaLM "
                                              "reports it. The step takes model FLOPs / (X x peak)."),
    click.option("--measured", type=PATH,
                 help="A `memplan profile --device cuda` record: its measured TFLOP/s, end to end."),
]
WALK_OPTIONS = [
    click.option("--kernel-scale", type=POSITIVE_FLOAT, default=1.0, show_default=True,
                 help="Multiplies every kernel efficiency of the op walk (GEMMs, attention, memory-bound ops)."),
    click.option("--system", type=PATH,
                 help="A `memplan bench --system` record of your GPU: its measured GEMMs, attention, bandwidth and "
                      "collectives replace the efficiency profile."),
    click.option("--execution", type=NAME,
                 help="Execution profile (profiles/execution/): what the engine overlaps and fuses, e.g. "
                      "megatron-core, megatron-2022, pytorch. Default: the engine's."),
    click.option("--overlap", type=click.Choice(["auto", "none", "dp", "all"]), default="auto", show_default=True,
                 help="auto: computed from the execution profile; override: none (nothing overlaps), dp (the "
                      "gradient reduction overlaps the backward), all (every transfer hidden up to compute)."),
    click.option("--interconnect", type=NAME, help="Intra-node link profile (default: the GPU's), e.g. nvlink4."),
    click.option("--internode", type=NAME, help="Inter-node link profile (default: the GPU's), e.g. "
                                                "infiniband-ndr."),
    click.option("--cpu-bandwidth", type=POSITIVE_FLOAT, default=200.0, show_default=True,
                 help="Host memory GB/s per node, for the CPU optimizer step of offload layouts."),
    click.option("--price", type=NON_NEGATIVE_FLOAT, help="USD per GPU-hour (default: the GPU profile's labelled "
                                                          "price)."),
]


def _apply(options, f):
    for opt in reversed(options):
        f = opt(f)
    return f


def walk_options(f):
    """Kernel efficiencies, execution, overlap, links, price: shared by time and plan."""
    return _apply(WALK_OPTIONS, f)


def efficiency_options(f):
    """time's options: the end-to-end figures and the walk's."""
    return _apply(END_TO_END_OPTIONS + WALK_OPTIONS, f)


@click.command("time")
@training_options
@lora_options
@click.option("--gpu", "-g", "gpu_name", type=NAME, required=True, help="GPU profile name (see `memplan gpus`).")
@click.option("--tokens", "-t", type=NAME, help="Tokens to train on: 300B, 1.4T, 2e11.")
@click.option("--steps", type=BoundedInt(1, "steps"), help="Optimizer steps (with --global-batch).")
@click.option("--global-batch", "-B", type=BoundedInt(1, "batch"),
              help="Sequences per optimizer step; sets gradient accumulation = B / (micro-batch x dp).")
@efficiency_options
@click.option("--causal-flops", is_flag=True,
              help="Count attention FLOPs over the causal half only (default: full, as PaLM/Megatron).")
@json_option
def time_command(**kwargs) -> None:
    """How long training MODEL takes, and what it costs.

    \b
    memplan time gpt2 --gpus 16 --gpu a100-80gb --steps 400000 --global-batch 512 --seq 1024 -b 32
    memplan time gpt3-175b --gpus 1024 --gpu a100-80gb --tp 8 --pp 8 --recompute full --tokens 300B \\
        --global-batch 1536 --seq 2048 --achieved-tflops 140
    """
    as_json = kwargs.pop("as_json")
    gpu = resolve_gpu(kwargs.pop("gpu_name"))
    opts = {k: kwargs.pop(k) for k in ("tokens", "steps", "global_batch", "causal_flops", *EFFICIENCY_KEYS)}
    training = pop_training_kwargs(kwargs)
    check_flag_combinations(training)
    save = {k: training.pop(k) for k in ("_save_setup", "_save_setup_force") if k in training}
    setup = build_setup(**training)
    from memplan.perf.time import estimate_time

    est = estimate_time(setup, gpu, tokens=_tokens(opts.pop("tokens")), causal=opts.pop("causal_flops"),
                        cpu_bandwidth_gbps=opts.pop("cpu_bandwidth"), **opts)
    save_setup_if_asked(save, setup)  # once every refusal (-t nan, a --kernel-scale past the peak) has had its say
    click.echo(est.model_dump_json(indent=2) if as_json else time_table(est))


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

