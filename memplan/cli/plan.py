"""`memplan plan`: search parallel strategies that fit, rank them by step time or cost."""
from __future__ import annotations

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import (build_setup, json_option, lora_options, pop_training_kwargs, resolve_gpu,
                                 save_setup_if_asked, training_options)
from memplan.cli.time import _tokens, walk_options
from memplan.cli.types import NAME, PATH, SIZE, BoundedInt
from memplan.report.plan import plan_table
from memplan.report.text import describe_layout
from memplan.results.plan import PlanResult

# Training flags that, given on the command line, pin that dimension of the search (the rest are searched).
PINNABLE = ("tp", "pp", "cp", "ep", "etp", "sequence_parallel", "virtual_stages", "first_stage_layers",
            "last_stage_layers", "zero", "offload_optimizer", "offload_params", "micro_batch", "recompute")
WALK_KEYS = ("kernel_scale", "system", "execution", "overlap", "interconnect", "internode", "price")


@click.command("plan")
@training_options
@lora_options
@click.option("--gpu", "-g", "gpu_name", type=NAME, required=True, help="GPU profile name (see `memplan gpus`).")
@click.option("--global-batch", "-B", type=BoundedInt(1, "batch"), required=True, help="Sequences per optimizer step.")
@click.option("--by", type=click.Choice(["time", "cost"]), default="time", show_default=True,
              help="Rank by step time, or by GPU-seconds per step (cost; differs when GPU counts differ).")
@click.option("--top", type=BoundedInt(1, "repeat"), default=5, show_default=True, help="Candidates to show.")
@click.option("--min-gpus", is_flag=True, help="Find the fewest GPUs on which any strategy fits, then rank there.")
@click.option("--max-gpus", type=BoundedInt(1, "gpus"), default=4096, show_default=True,
              help="With --min-gpus: give up above this many GPUs. Without: also try doubling --gpus up to this.")
@click.option("--scale", is_flag=True, help="Also try 2x, 4x, ... --gpus up to --max-gpus (useful with --by cost).")
@click.option("--max-micro-batch", type=BoundedInt(1, "batch"), help="Largest micro-batch to consider.")
@click.option("--cpu-memory", type=SIZE,
              help="CPU RAM per node (e.g. 1TB, 2TiB): layouts that need more are dropped.  [default: 1 TiB]")
@click.option("--reference", is_flag=True,
              help="The layout flags given (--tp, --pp, --virtual-stages, -b, --recompute, ...) describe a layout to "
                   "rank and explain (e.g. a paper's) instead of pinning the search.")
@click.option("--emit", type=click.Choice(["deepspeed", "accelerate", "torchtitan", "megatron"]),
              help="Write the best layout in that engine's own format (ds_config.json, accelerate YAML, torchtitan "
                   "TOML, Megatron-LM arguments); --emit-to names the file.")
@click.option("--emit-to", type=PATH, help="File for --emit (default: the engine's conventional name, here).")
@click.option("--force", is_flag=True, help="Overwrite the --emit file if it exists.")
@click.option("--tokens", "-t", type=NAME, help="Tokens for days/cost (default: 20 per parameter, Chinchilla).")
@click.option("--steps", type=BoundedInt(1, "steps"), help="Optimizer steps for days/cost.")
@walk_options
@json_option
def plan_command(**kwargs) -> None:
    """Search data x tensor x pipeline x context x expert layouts, interleaving, uneven stages, sequence
    parallelism, ZeRO, offload, recompute and micro-batch for MODEL.

    Any layout flag (--tp, --pp, --cp, --ep, --virtual-stages, --sequence-parallel, --zero, --offload-*,
    --micro-batch, --recompute) given on the command line pins that choice; the others are searched (--grad-accum
    follows from --global-batch).  With --reference they describe a layout to rank instead.

    \b
    memplan plan llama-2-70b --gpu h100-sxm --gpus 1024 --global-batch 1024 --seq 4096
    memplan plan gpt2-xl --gpu a100-40gb --global-batch 512 --seq 1024 --min-gpus
    """
    as_json = kwargs.pop("as_json")
    emit, emit_to, force = kwargs.pop("emit"), kwargs.pop("emit_to"), kwargs.pop("force")
    if emit_to and not emit:
        from memplan.errors import MemplanError

        raise MemplanError("--emit-to needs --emit deepspeed|accelerate|torchtitan|megatron")
    gpu = resolve_gpu(kwargs.pop("gpu_name"))
    opts = {k: kwargs.pop(k) for k in ("global_batch", "by", "top", "min_gpus", "max_gpus", "scale",
                                       "max_micro_batch", "cpu_memory", "tokens", "steps", "reference",
                                       "cpu_bandwidth", *WALK_KEYS)}
    ctx = click.get_current_context()
    given = {k: kwargs[k] for k in PINNABLE
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    training = pop_training_kwargs(kwargs)
    check_flag_combinations(training, pp_searched="pp" not in given)
    reference_wanted = opts["reference"]
    # pinned dimensions constrain the search; the base setup keeps only what is not searched (a --virtual-stages
    # pin without --pp is a property of the pipelined candidates, not of a pp=1 base layout)
    base = training if reference_wanted else {k: v for k, v in training.items() if k not in given}
    save = {k: base.pop(k) for k in ("_save_setup", "_save_setup_force") if k in base}
    setup = build_setup(**base)
    gpus = [setup.layout.gpus]
    if opts.pop("scale"):
        while gpus[-1] * 2 <= opts["max_gpus"]:
            gpus.append(gpus[-1] * 2)
    from memplan.perf.plan import plan
    from memplan.perf.time import layout_for_batch

    reference = None
    if opts.pop("reference"):
        reference = layout_for_batch(setup.layout, opts["global_batch"])
        given = {}
    result = plan(setup, gpu, gpus=gpus, cpu_bandwidth_gbps=opts.pop("cpu_bandwidth"),
                  tokens=_tokens(opts.pop("tokens")), cpu_memory_bytes=opts.pop("cpu_memory"),
                  fixed=given or None, reference=reference, progress=lambda msg: click.echo(msg, err=True), **opts)
    save_setup_if_asked(save, setup)  # once the search has answered: a refused plan writes nothing
    click.echo(result.model_dump_json(indent=2) if as_json else plan_table(result))
    if emit:
        _emit(result, setup, emit, emit_to, force)


def _emit(result: PlanResult, setup, fmt: str, path: str | None, force: bool) -> None:
    """The best candidate in an engine's own config format (memplan/setupfiles), written as a new file: the API's
    emit_plan, worded for the CLI."""
    import warnings

    from memplan.api import emit_plan
    from memplan.errors import MemplanError

    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            written, _ = emit_plan(result, setup, fmt, path, force=force)
    except MemplanError as exc:
        raise MemplanError(str(exc).replace("emit: ", "--emit: ", 1).replace("the result's `why`", "the table for "
                                                                               "why").replace("emit_to", "--emit-to")) from None
    click.echo(f"memplan plan: the best layout written as {fmt} to {written}", err=True)
    for w in said:
        click.echo(f"memplan plan: {w.message}", err=True)


__all__ = ["plan_command", "plan_table", "describe_layout"]
