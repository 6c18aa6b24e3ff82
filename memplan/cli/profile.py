"""`memplan profile`: measure one real training step (cuda, cpu or fake tensors) and show it beside the estimate.

torch is imported only inside the command (memplan.measure), so `memplan --help` and the other commands stay light.
"""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.distributed_opts import distributed_options
from memplan.cli.options import (build_setup, gpu_option, json_option, pop_training_kwargs,
                                 resolve_gpu_for_device, save_setup_if_asked,
                                 training_options, units_of, units_option)
from memplan.cli.types import PATH, BoundedInt, NonEmptyText
from memplan.errors import MemplanError


def _progress(msg: str) -> None:
    click.echo(f"memplan profile: {msg}", err=True)


@click.command("profile")
@training_options
@gpu_option
@click.option("--device", type=click.Choice(["cuda", "cpu", "fake"]), default=None,
              help="cuda: a real GPU step; cpu: real tensors on the CPU; fake: FakeTensorMode (exact tensor bytes, "
                   "no memory). Default: cuda if torch sees one, else fake.")
@click.option("--model-source", type=click.Choice(["hf", "reference"]), default="hf", show_default=True,
              help="Build the model with Hugging Face transformers or memplan's reference decoder (random weights).")
@click.option("--factory", type=NonEmptyText("MODULE:FUNCTION"), metavar="MODULE:FUNCTION",
              help="Build the model with your function (returns nn.Module).")
@click.option("--optimizer-impl", type=click.Choice(["for-loop", "foreach", "fused"]), default=None,
              help="torch.optim implementation (default: torch's choice for the device; recorded).")
@click.option("--warmup-steps", type=BoundedInt(1, "repeat"), default=1, show_default=True)
@click.option("--timed-steps", type=BoundedInt(1, "repeat"), default=5, show_default=True,
              help="cuda: steps timed with CUDA events (median).")
@click.option("--out", type=PATH, is_flag=False, flag_value="auto", default=None, metavar="[PATH]",
              help="Save a schema-versioned JSON record (no PATH: a new file under profiles/runs/ of a source "
                   "checkout, else ./memplan-runs/).")
@click.option("--force", is_flag=True, help="Overwrite --out/--plot/--save-setup files that exist.")
@click.option("--plot", type=PATH, help="PNG: timeline and categories vs GPU capacity.")
@click.option("--snapshot", type=PATH, help="cuda: allocator snapshot (pytorch.org/memory_viz).")
@click.option("--find-max-batch", is_flag=True, help="Bisect the largest micro-batch that runs (cuda: until OOM; "
                                                     "cpu/fake: until the peak exceeds --gpu's memory).")
@distributed_options
@units_option
@json_option
def profile_command(**kwargs) -> None:
    """Measure a steady-state training step of MODEL and compare it with `memplan estimate`.

    MODEL as for estimate: a built-in profile, a config.json, or a count with --layers/--hidden/... flags.
    An out-of-memory at any phase is a result: what was measured, the phase, and a record with "oom": true.
    """
    if kwargs["nproc"] is not None or kwargs["strategy"] is not None or kwargs["mixed_precision"] is not None:
        from memplan.cli.distributed_opts import run_distributed
        return run_distributed(**kwargs)
    as_json, units = kwargs.pop("as_json"), units_of(kwargs.pop("units"))
    gpu_name = kwargs.pop("gpu_name")
    device, source, factory = kwargs.pop("device"), kwargs.pop("model_source"), kwargs.pop("factory")
    impl, warmup, timed = kwargs.pop("optimizer_impl"), kwargs.pop("warmup_steps"), kwargs.pop("timed_steps")
    out, force, plot, snapshot = kwargs.pop("out"), kwargs.pop("force"), kwargs.pop("plot"), kwargs.pop("snapshot")
    find_max = kwargs.pop("find_max_batch")
    training = pop_training_kwargs(kwargs)
    check_flag_combinations(training)
    save = {k: training.pop(k) for k in ("_save_setup", "_save_setup_force") if k in training}
    setup = build_setup(**training)  # --save-setup is written once the measurement answered
    if find_max and (out or plot or snapshot):
        raise MemplanError("--find-max-batch prints the largest micro-batch; it writes no --out/--plot/--snapshot "
                           "(profile that micro-batch afterwards to record it)")
    from memplan.cli.preflight import check_device, check_outputs, need_torch, need_transformers

    check_outputs(out, plot, snapshot, force)  # before minutes of measurement, not after

    torch = need_torch("memplan profile")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "fake"
        _progress(f"device {device}" + ("" if device == "cuda" else " (torch sees no CUDA device)"))
    check_device(torch, device)
    if snapshot and device != "cuda":
        raise MemplanError("--snapshot records the CUDA caching allocator; it needs --device cuda")
    if source == "hf" and not factory:
        need_transformers("memplan profile")
    gpu = resolve_gpu_for_device(gpu_name, device, _progress)
    if factory:
        from memplan.measure.models import load_factory

        load_factory(factory)  # a bad MODULE:FUNCTION fails here, before anything is built
    model_source = factory or source
    _refuse_what_cannot_run(setup, device, torch, smallest_batch=find_max)

    from memplan.measure.runner import find_max_micro_batch, measure_training_step

    cuda_options = {"timed_steps": timed, "snapshot": snapshot, "snapshot_force": force} if device == "cuda" \
        else None
    if find_max:
        capacity = None
        if device != "cuda":
            if gpu is None:
                raise MemplanError("--find-max-batch on cpu/fake needs --gpu NAME (the capacity to fit in)")
            capacity = gpu.memory_bytes - (gpu.context_bytes or 0)
        # each probe only needs its peak: no timed steps, no FLOP count
        probe_options = {"timed_steps": 0, "count_flops": False} if device == "cuda" else None
        best, tried = find_max_micro_batch(setup, device, model_source, capacity_bytes=capacity,
                                           progress=_progress, warmup_steps=warmup, optimizer_impl=impl,
                                           cuda_options=probe_options)
        _print_max_batch(best, tried, capacity, as_json, units)
        save_setup_if_asked(save, setup)  # once it answered: a refusal writes nothing
        return

    measured = measure_training_step(setup, device=device, model_source=model_source, warmup_steps=warmup,
                                     optimizer_impl=impl, progress=_progress, cuda_options=cuda_options)
    save_setup_if_asked(save, setup)  # once the step ran (or ran out of memory, a result): a refusal writes nothing
    from memplan.memory.estimate import estimate_memory
    from memplan.report.profile import profile_json, profile_plot, profile_table

    # estimate the step that ran: the optimizer implementation torch picked (or --optimizer-impl) decides the
    # optimizer step's temporaries; cpu/fake runs keep what PyTorch's CPU kernels keep (dropout masks, norm stats)
    est = estimate_memory(measured.setup or setup, gpu, kernels="cuda" if device == "cuda" else "cpu")
    if measured.oom:
        from memplan.spec.units import format_bytes

        _progress(f"OUT OF MEMORY during {measured.oom_phase} (measured so far: peak "
                  f"{format_bytes(measured.peak_allocated, units)}): {measured.oom_message}")
    if out:
        _save_record(out, force, measured, est, gpu)
    if plot:
        profile_plot(measured, est, plot, capacity_bytes=gpu.memory_bytes if gpu else None, units=units,
                     force=force)
        _progress(f"plot written to {plot}")
    if as_json:
        click.echo(json.dumps(profile_json(measured, est), indent=2))
    else:
        click.echo(profile_table(measured, est, units))


def _refuse_what_cannot_run(setup, device: str, torch, smallest_batch: bool) -> None:
    """A step whose estimated peak is far above the memory it would run in is refused before building it."""
    from memplan.cli.preflight import check_profile_size, device_memory_bytes
    from memplan.memory.estimate import estimate_memory

    probe = setup
    if smallest_batch:  # --find-max-batch starts from one sequence
        probe = setup.model_copy(update={"layout": setup.layout.replace(micro_batch=1)})
    peak = None
    if setup.model.architecture is not None:
        peak = estimate_memory(probe, kernels="cuda" if device == "cuda" else "cpu").per_gpu.peak_allocated
    check_profile_size(probe, device, peak, device_memory_bytes(torch, device), warn=_progress)


def _save_record(out: str, force: bool, measured, est, gpu) -> None:
    from memplan.catalog import runs_dir
    from memplan.report.files import timestamped_path, write_new_file
    from memplan.report.profile import error_percent
    from memplan.results.profile import ProfileRecord

    record = ProfileRecord(
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), measured=measured,
        estimated=est.model_dump(mode="json"),
        # a step cut short by an out-of-memory has no peak to compare with
        error_percent=None if measured.oom else error_percent(est.per_gpu.peak_allocated, measured.peak_allocated),
        gpu=gpu.name if gpu else None, host=platform.node(), oom=measured.oom)
    auto = out == "auto"
    path = (timestamped_path(runs_dir(), measured.model, measured.device, measured.recipe,
                             f"b{measured.micro_batch}") if auto else out)
    written = write_new_file(path, record.model_dump_json(indent=2) + "\n", force=force and not auto, unique=auto)
    _progress(f"record written to {written}" + (" (oom: true)" if measured.oom else ""))


def _print_max_batch(best: int, tried, capacity: int | None, as_json: bool, units) -> None:
    from tabulate import tabulate

    from memplan.spec.units import format_bytes

    if as_json:
        click.echo(json.dumps({"max_micro_batch": best, "capacity_bytes": capacity,
                               "tried": [{"micro_batch": r.micro_batch, "peak_allocated": r.peak_allocated,
                                          "oom": r.oom, "oom_phase": r.oom_phase} for r in tried]}, indent=2))
        return
    rows = [[r.micro_batch, format_bytes(r.peak_allocated, units),
             "OOM in " + str(r.oom_phase) if r.oom else
             ("over capacity" if capacity is not None and r.peak_allocated > capacity else "runs")] for r in tried]
    click.echo(tabulate(rows, headers=["micro-batch", f"peak allocated ({units.value})", "result"]))
    click.echo(f"\nlargest micro-batch that runs: {best}"
               + (f" (capacity {format_bytes(capacity, units)})" if capacity is not None else ""))
