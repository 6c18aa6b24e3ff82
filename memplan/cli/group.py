"""The `memplan` click group: subcommands found by name and imported only when they run."""
from __future__ import annotations

import importlib
import importlib.util

import click


# name -> (module, help line). Adding a command is adding a module and a row here.
COMMANDS = {
    "estimate": ("memplan.cli.estimate", "Estimate memory per GPU, CPU RAM and NVMe for training or inference."),
    "models": ("memplan.cli.catalog_cmds", "List built-in model profiles, or show one with its parameter breakdown."),
    "gpus": ("memplan.cli.catalog_cmds", "List GPU profiles (memory, bandwidth, dense TFLOP/s)."),
    "interconnects": ("memplan.cli.catalog_cmds", "List interconnect profiles (NVLink, PCIe, InfiniBand, RoCE)."),
    "time": ("memplan.cli.time", "FLOPs, step time, training days, GPU-hours and cost."),
    "plan": ("memplan.cli.plan", "Search parallel strategies that fit and rank them by time or cost."),
    "serve": ("memplan.cli.serve", "Capacity planning: GPUs, engine settings and replicas for a request rate."),
    "profile": ("memplan.cli.profile", "Measure a real training step (cuda, cpu or fake tensors) beside the estimate."),
    "bench": ("memplan.cli.bench", "Measure tensor-core TFLOP/s and memory bandwidth of this device."),
    "rl": ("memplan.cli.rl", "Plan RL post-training / preference tuning: memory per phase, time per step, what fits."),
    "trace": ("memplan.cli.trace", "Trace a model's own code (transformers, fake tensors) into activation rows."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return getattr(module, name.replace("-", "_") + "_command")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            from memplan.errors import did_you_mean

            raise click.UsageError(did_you_mean(args[0], COMMANDS, "command")) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="memplan")
def cli() -> None:
    """memplan: will it fit, with which strategy, how fast, at what cost?"""
