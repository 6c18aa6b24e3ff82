"""`memplan time`: FLOPs per token, step time and its breakdown, days, GPU-hours and cost."""
from __future__ import annotations

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import (build_setup, json_option, lora_options, pop_training_kwargs, resolve_gpu,
                                 save_setup_if_asked, training_options)
from memplan.cli.types import FRACTION, NAME, NON_NEGATIVE_FLOAT, PATH, POSITIVE_FLOAT, BoundedInt
from memplan.errors import MemplanError
from memplan.report.time import time_table  # noqa: F401 - the table; the name stays here too
from memplan.spec.units import parse_count

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
    from memplan.answers.time import estimate_time

    est = estimate_time(setup, gpu, tokens=_tokens(opts.pop("tokens")), causal=opts.pop("causal_flops"),
                        cpu_bandwidth_gbps=opts.pop("cpu_bandwidth"), **opts)
    save_setup_if_asked(save, setup)  # once every refusal (-t nan, a --kernel-scale past the peak) has had its say
    click.echo(est.model_dump_json(indent=2) if as_json else time_table(est))
