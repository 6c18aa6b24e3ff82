"""`memplan profile --nproc N --strategy ddp|zero1|zero2|zero3`: the multi-rank options and their runner.

`distributed_options` adds the flags to the profile command; when any of them is given, the command hands all
its keyword arguments to `run_distributed`.  Under `torchrun --nproc-per-node N -m memplan profile --strategy S`
every rank runs this; rank 0 prints (and writes --out), the others stay silent.
"""
from __future__ import annotations

import json

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import _stack, build_setup, pop_training_kwargs, save_setup_if_asked, units_of
from memplan.cli.types import BoundedInt
from memplan.errors import MemplanError

STRATEGY_CHOICES = ["ddp", "zero1", "zero2", "zero3"]

distributed_options = _stack(
    click.option("--nproc", type=BoundedInt(1, "gpus"), default=None,
                 help="Ranks to run: local processes with gloo (--device cpu) or one GPU each with nccl (cuda); with "
                      "--device fake, the world size emulated (e.g. 64, 1024). Under torchrun: its world size."),
    click.option("--strategy", type=click.Choice(STRATEGY_CHOICES), default=None,
                 help="ddp: DistributedDataParallel; zero1: + ZeroRedundancyOptimizer; zero2/zero3: FSDP2 "
                      "fully_shard with reshard_after_forward False/True. Default with --nproc: ddp."),
    click.option("--mixed-precision/--no-mixed-precision", default=None,
                 help="zero2/zero3: run the recipe as FSDP MixedPrecisionPolicy(param_dtype=compute, "
                      "reduce_dtype=fp32) over fp32 shards (default: on for recipes with fp32 master weights)."),
)


def wants_distributed(kwargs: dict) -> bool:
    return any(kwargs.get(k) is not None for k in ("nproc", "strategy", "mixed_precision"))


def run_distributed(**kw) -> None:
    """Run the multi-rank profile from the profile command's keyword arguments, print it, save it."""
    from memplan.cli.preflight import need_torch

    need_torch("memplan profile --nproc")  # the same one line as the single-device profile, before torch is imported
    from memplan.measure.distributed import DistributedRequest, profile_distributed, under_torchrun

    nproc, strategy, mixed = kw.pop("nproc", None), kw.pop("strategy", None), kw.pop("mixed_precision", None)
    for flag, key in (("--plot", "plot"), ("--snapshot", "snapshot"), ("--find-max-batch", "find_max_batch")):
        if kw.get(key):
            raise MemplanError(f"{flag} measures one device; drop it with --nproc/--strategy")
    if kw.get("zero") or kw.get("engine") not in (None, "plain") or kw.get("gpus") not in (None, 1):
        raise MemplanError("--strategy decides ZeRO and the engine and --nproc the GPU count: drop --zero/--engine/"
                           "--gpus (the estimate compared is printed with the result)")
    if strategy is None:
        if mixed is not None and nproc is None:
            raise MemplanError("--mixed-precision needs --strategy zero2 or zero3")
        strategy = "ddp"
    as_json, units = kw.pop("as_json", False), units_of(kw.pop("units", "GiB"))
    out, force = kw.pop("out", None), kw.pop("force", False)
    training = pop_training_kwargs(kw)
    check_flag_combinations(training)
    save = {k: training.pop(k) for k in ("_save_setup", "_save_setup_force") if k in training}
    setup = build_setup(**training)  # --save-setup: written by rank 0 once the ranks have run (below)
    from memplan.cli.preflight import check_device, check_outputs, need_torch, need_transformers

    check_outputs(out, None, None, force)  # before the ranks start, not after
    torch = need_torch("memplan profile --nproc/--strategy")
    device = kw.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(torch, device)
    if (kw.get("model_source") or "hf") == "hf" and not kw.get("factory"):
        need_transformers("memplan profile")
    if nproc is None:
        nproc = 1
    source = kw.get("factory") or kw.get("model_source") or "hf"
    # DDP rebuilds its buckets in the second step's forward: measure a step after that
    warmup = max(2, kw.get("warmup_steps") or 1)
    req = DistributedRequest(setup=setup, strategy=strategy, nproc=nproc, device=device, model_source=source,
                             mixed_precision=mixed, warmup_steps=warmup, optimizer_impl=kw.get("optimizer_impl"))
    if not under_torchrun():
        click.echo(f"memplan profile: {strategy} on {nproc} rank(s), device {device}", err=True)
    profile = profile_distributed(req)
    if profile is None:  # a torchrun rank other than 0
        return
    save_setup_if_asked(save, setup)
    if out:
        _save(profile, out, force)
    if as_json:
        click.echo(json.dumps(profile.model_dump(mode="json"), indent=2))
    else:
        from memplan.report.distributed import distributed_table

        click.echo(distributed_table(profile, units))


def _save(profile, out: str, force: bool) -> None:
    from memplan.catalog import runs_dir
    from memplan.report.files import timestamped_path, write_new_file

    auto = out == "auto"
    path = (timestamped_path(runs_dir(), profile.model, profile.strategy, f"w{profile.world_size}",
                             profile.device) if auto else out)
    written = write_new_file(path, profile.model_dump_json(indent=2) + "\n", force=force and not auto, unique=auto)
    click.echo(f"memplan profile: record written to {written}", err=True)
