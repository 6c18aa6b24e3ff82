"""`memplan estimate`: memory per GPU, CPU RAM and NVMe for training, fine-tuning (LoRA/QLoRA) or inference."""
from __future__ import annotations

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import (field_option, gpu_option, json_option, lora_options, pop_training_kwargs,
                                 training_options, units_option, units_of)
from memplan.cli.serve_options import SERVING_OPTION_KEYS, allow_serving_engines, run_inference, serving_options
from memplan.cli.types import PATH
from memplan.errors import MemplanError
from memplan.spec.training import Workload

INFERENCE_KEYS = SERVING_OPTION_KEYS
LORA_KEYS = ("lora_rank", "lora_targets", "quantize_base")


@click.command("estimate")
@training_options
@gpu_option
@click.option("--mode", type=click.Choice(["training", "inference"]), default="training", show_default=True)
@lora_options
@serving_options
@click.option("--max-micro-batch", is_flag=True, help="Training: the largest micro-batch that fits on --gpu.")
@click.option("--max-seq", is_flag=True, help="Training: the longest sequence that fits on --gpu.")
@click.option("--calibration", type=PATH, help="A `memplan profile` record to calibrate with.")
@field_option(Workload, "optimizer_impl")
@click.option("--compare", is_flag=True, help="One row per strategy: fp32, mixed, ZeRO-1/2/3, ZeRO-3 + offload.")
@click.option("--plot", type=PATH, metavar="FILE.png",
              help="Also draw memory by component against the GPU and the step's timeline (needs matplotlib).")
@click.option("--force", is_flag=True, help="Overwrite --plot/--save-setup files that exist.")
@click.option("--verbose", "-v", is_flag=True,
              help="Every activation row with the traced ops behind it, the sources of each assumption in full, "
                   "and every key a --setup file had that was ignored.")
@units_option
@json_option
def estimate_command(**kwargs) -> None:
    """Estimate memory for training (or serving) MODEL.

    MODEL is a parameter count (7B, 124M, 1.3e9), a built-in profile (see `memplan models`), or a path to a Hugging
    Face config.json (or its folder).
    """
    as_json, units = kwargs.pop("as_json"), units_of(kwargs.pop("units"))
    gpu_name = kwargs.pop("gpu_name")
    mode = kwargs.pop("mode")
    inference = {k: kwargs.pop(k) for k in INFERENCE_KEYS}
    lora = {k: kwargs.pop(k) for k in LORA_KEYS}
    wants_max = {k: kwargs.pop(k) for k in ("max_micro_batch", "max_seq")}
    calibration_path, compare = kwargs.pop("calibration"), kwargs.pop("compare")
    plot, force = kwargs.pop("plot"), kwargs.pop("force")
    if plot is not None and not plot.strip():
        raise MemplanError("--plot needs a file name, e.g. --plot memory.png")
    if plot and (compare or mode == "inference"):
        raise MemplanError("--plot draws one training estimate: drop --compare / --mode inference")
    training = pop_training_kwargs(kwargs)
    verbose = kwargs.pop("verbose")
    save_setup, save_force = training.pop("_save_setup", None), training.pop("_save_setup_force", False)
    if save_setup and (mode == "inference" or compare):
        raise MemplanError("--save-setup writes one training setup: drop --compare / --mode inference")
    check_flag_combinations(training, lora=lora)
    if (wants_max["max_micro_batch"] or wants_max["max_seq"] or inference["max_batch"] or inference["max_context"]) \
            and gpu_name is None:
        raise MemplanError("--max-micro-batch/--max-seq/--max-batch/--max-context need --gpu NAME to fit against")

    _reject_flags_of_the_other_mode(mode, training, inference, lora, wants_max, calibration_path, compare)
    import memplan.api as api

    if mode == "inference":
        run_inference(gpu_name, training, inference, as_json, units)
        return
    from memplan.report.tables import compare_table, memory_table

    training.update({k: v for k, v in lora.items() if v is not None})
    if compare:
        cmp = api.compare(gpu=gpu_name, **training)
        click.echo(cmp.model_dump_json(indent=2) if as_json else compare_table(cmp, units))
        return
    if plot:
        from memplan.report.files import check_writable

        check_writable(plot, force, what="--plot")  # before the work, not after
    est = api.estimate(gpu=gpu_name, calibration=calibration_path, **wants_max, **training)
    if save_setup:
        from memplan.setups import save_setup_file

        click.echo(f"memplan: setup written to {save_setup_file(save_setup, est.setup, force=save_force)}", err=True)
    for line in est.warnings:  # the setup file's were said when it was read (cli/options.py)
        if line not in est.setup.warnings:
            click.echo(f"memplan: warning: {line}", err=True)
    click.echo(est.model_dump_json(indent=2) if as_json else memory_table(est, units, verbose=verbose))
    if plot:
        from memplan.report.plot import estimate_plot

        written = estimate_plot(est, plot, units, force=force)
        click.echo(f"memplan estimate: plot written to {written}", err=True)


# flags of one mode only: given with the other mode, an error, never silently ignored
TRAINING_ONLY = ("micro_batch", "seq", "grad_accum", "recompute", "optimizer", "optimizer_impl", "zero",
                 "offload_optimizer", "offload_params", "grads_dtype", "master_dtype", "states_dtype",
                 "cp", "virtual_stages", "first_stage_layers", "last_stage_layers", "sequence_parallel")
INFERENCE_ONLY = SERVING_OPTION_KEYS  # --engine is shared: its value is checked for the mode


def _reject_flags_of_the_other_mode(mode, training, inference, lora, wants_max, calibration, compare) -> None:
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    if mode == "inference":
        given = [k for k in TRAINING_ONLY if training.get(k) is not None]
        given += [k for k, v in {**lora, **wants_max}.items() if v]
        given += [k for k, v in (("calibration", calibration), ("compare", compare)) if v]
        if given:
            hint = " (use --batch and --context)" if {"micro_batch", "seq"} & set(given) else ""
            raise MemplanError(f"{', '.join(flag(k) for k in given)}: training flag(s), not used with --mode "
                               f"inference{hint}")
    else:
        given = [k for k in INFERENCE_ONLY if inference.get(k) not in (None, False)]
        if given:
            hint = " (use --micro-batch and --seq)" if {"batch", "context"} & set(given) else ""
            raise MemplanError(f"{', '.join(flag(k) for k in given)}: inference flag(s), need --mode inference{hint}")


allow_serving_engines(estimate_command)
