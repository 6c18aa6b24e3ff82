"""`memplan time`: FLOPs per token, step time and its breakdown, days, GPU-hours and cost."""
from __future__ import annotations

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import build_setup, json_option, pop_training_kwargs, resolve_gpu, training_options
from memplan.cli.types import FRACTION, NAME, NON_NEGATIVE_FLOAT, PATH, POSITIVE_FLOAT, BoundedInt
from memplan.results.time import TimeEstimate
from memplan.spec.units import format_bytes, format_count, parse_count


def _tokens(text: str | None) -> float | None:
    return None if text is None else float(parse_count(text))


def efficiency_options(f):
    """--mfu / --achieved-tflops / --measured / --overlap / links / --price: shared by time and plan."""
    for opt in reversed([
        click.option("--mfu", type=FRACTION, help="Compute efficiency: the fraction of the dense peak the step's "
                                               "FLOPs run at (default: the GPU profile's, per generation)."),
        click.option("--achieved-tflops", type=POSITIVE_FLOAT, help="Sustained TFLOP/s per GPU (hardware FLOPs, "
                                                           "recompute included); sets the efficiency."),
        click.option("--measured", type=PATH,
                     help="A `memplan profile` record (cuda): use its measured TFLOP/s as the efficiency."),
        click.option("--overlap", type=click.Choice(["none", "dp", "all"]), default="dp", show_default=True,
                     help="What communication overlaps compute: none; dp = gradient reduction during backward; "
                          "all = everything, up to compute time."),
        click.option("--interconnect", type=NAME,
                     help="Intra-node link profile (default: the GPU's), e.g. nvlink4, pcie4."),
        click.option("--internode", type=NAME,
                     help="Inter-node link profile (default: the GPU's), e.g. infiniband-ndr."),
        click.option("--cpu-bandwidth", type=POSITIVE_FLOAT, default=200.0, show_default=True,
                     help="Host memory GB/s per node, for the CPU optimizer step of offload layouts."),
        click.option("--price", type=NON_NEGATIVE_FLOAT,
                     help="USD per GPU-hour (default: the GPU profile's labelled price)."),
        click.option("--causal-flops", is_flag=True,
                     help="Count attention FLOPs over the causal half only (default: full, as PaLM/Megatron)."),
    ]):
        f = opt(f)
    return f


@click.command("time")
@training_options
@click.option("--gpu", "-g", "gpu_name", type=NAME, required=True, help="GPU profile name (see `memplan gpus`).")
@click.option("--tokens", "-t", type=NAME, help="Tokens to train on: 300B, 1.4T, 2e11.")
@click.option("--steps", type=BoundedInt(1, "steps"), help="Optimizer steps (with --global-batch).")
@click.option("--global-batch", "-B", type=BoundedInt(1, "batch"),
              help="Sequences per optimizer step; sets gradient accumulation = B / (micro-batch x dp).")
@efficiency_options
@json_option
def time_command(**kwargs) -> None:
    """How long training MODEL takes, and what it costs.

    \b
    memplan time gpt2 --gpus 16 --gpu a100-80gb --steps 400000 --global-batch 512 --seq 1024 -b 32
    memplan time 175B --layers 96 --hidden 12288 --heads 96 --ffn 49152 --vocab 51200 \\
        --gpus 1024 --gpu a100-80gb --tp 8 --pp 8 --tokens 300B --global-batch 1536 --seq 2048
    """
    as_json = kwargs.pop("as_json")
    gpu = resolve_gpu(kwargs.pop("gpu_name"))
    opts = {k: kwargs.pop(k) for k in ("tokens", "steps", "global_batch", "mfu", "achieved_tflops", "measured",
                                       "overlap", "interconnect", "internode", "price", "causal_flops",
                                       "cpu_bandwidth")}
    training = pop_training_kwargs(kwargs)
    check_flag_combinations(training)
    setup = build_setup(**training)
    from memplan.perf.time import estimate_time

    est = estimate_time(setup, gpu, tokens=_tokens(opts["tokens"]), steps=opts["steps"],
                        global_batch=opts["global_batch"], mfu=opts["mfu"], achieved_tflops=opts["achieved_tflops"],
                        measured=opts["measured"], overlap=opts["overlap"], interconnect=opts["interconnect"],
                        internode=opts["internode"], price=opts["price"], causal=opts["causal_flops"],
                        cpu_bandwidth_gbps=opts["cpu_bandwidth"])
    click.echo(est.model_dump_json(indent=2) if as_json else time_table(est))


def _f(x: float) -> str:
    if x == 0:
        return "0 FLOP"
    return format_count(x).replace("B", " G").replace("M", " M").replace("T", " T").replace("K", " K") + "FLOP"


def _s(x: float) -> str:
    return f"{x:.3f} s" if x < 100 else f"{x:,.0f} s"


def time_table(e: TimeEstimate) -> str:
    L, f = e.layout, e.flops
    lines = [
        f"{e.model}: {e.parameters:,} parameters ({format_count(e.parameters)}) on {L.gpus} x {e.gpu}, "
        f"{e.precision}",
        f"layout: {L.short()}  (global batch {e.global_batch} x seq {e.seq} = {e.tokens_per_step:,} tokens/step)",
        "",
        "FLOPs per token",
        f"  model (fwd + 2x bwd)      {_f(e.flops_per_token)}    forward: linear {_f(f.forward_linear)}, "
        f"attention {_f(f.forward_attention)}, LM head {_f(f.forward_lm_head)}",
        f"  hardware (+ recompute)    {_f(e.hardware_flops_per_token)}    (recompute: {f.recompute})",
        f"  6N rule                   {_f(f.six_n)}    (N = {format_count(f.n_parameters)})",
        f"  PaLM 6N + 12LHQT          {_f(f.palm)}",
        "",
        f"peak x efficiency: {e.peak_tflops:g} TFLOP/s dense {e.compute_dtype} x {e.efficiency.value:.3g} "
        f"({e.efficiency.source})",
        f"step {_s(e.step_seconds)} = compute {_s(e.compute_seconds)} + exposed communication "
        f"{_s(e.exposed_comm_seconds)} + pipeline bubble {_s(e.bubble_seconds)}",
    ]
    for c in e.comm:
        lines.append(f"  {c.parallelism:<7} {c.name:<42} group {c.group:<5} {c.link} {c.bandwidth_gbps:g} GB/s: "
                     f"{c.bytes_per_step / 1e9:,.3g} GB/step, {_s(c.seconds)}, exposed {_s(c.exposed_seconds)}")
    cost = "-"
    if e.cost is not None:
        src = "--price" if e.price_source == "--price" else \
            f"labelled default of the {e.gpu} profile; --price to change"
        cost = f"${e.cost:,.0f} at ${e.price_per_hour:g}/GPU-hour ({src})"
    lines += [
        f"throughput {e.tokens_per_second:,.0f} tokens/s ({e.tokens_per_second_per_gpu:,.0f} per GPU), "
        f"{e.achieved_tflops_per_gpu:.1f} TFLOP/s per GPU, MFU {e.mfu:.1%}, HFU {e.hfu:.1%}",
        "",
        f"run:       {e.steps:,} steps x {e.tokens_per_step:,} tokens = {format_count(e.tokens)} tokens",
        f"time:      {e.days:,.1f} days ({e.seconds / 3600:,.1f} hours)",
        f"GPU-hours: {e.gpu_hours:,.0f}",
        f"cost:      {cost}",
    ]
    if e.memory_required_bytes is not None:
        verdict = "fits" if e.fits else "DOES NOT FIT"
        lo = e.layout
        same = (f"--gpus {lo.gpus} --tp {lo.tp} --pp {lo.pp} --zero {lo.zero} -b {lo.micro_batch} "
                f"--grad-accum {lo.grad_accum}" + (f" --recompute {lo.recompute}" if lo.recompute != "none" else "")
                + (" --sequence-parallel" if lo.sequence_parallel else ""))
        lines.append(f"memory:    {format_bytes(e.memory_required_bytes)} per GPU required ({verdict}; "
                     f"`memplan estimate` with {same} gives the breakdown)")
    lines.append("")
    lines += [f"assumption: {a}" for a in e.assumptions]
    return "\n".join(lines)
