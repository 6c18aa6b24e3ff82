"""The frozen interface: every command's flags and every result's JSON field paths, as a snapshot
(tests/interface.json) that tests/test_interface.py compares with the code.

A flag or a field may be added (then the snapshot is updated on purpose: `python -m tests.interface --update`),
never removed or renamed: scripts and setup files depend on them (docs/architecture.md, "JSON field names are an
interface").
"""
from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

SNAPSHOT = Path(__file__).with_name("interface.json")

RESULTS = {
    "estimate": ("memplan.results.memory", "MemoryEstimate"),
    "estimate --compare": ("memplan.results.memory", "Comparison"),
    "estimate --mode inference": ("memplan.results.inference", "InferenceEstimate"),
    "time": ("memplan.results.time", "TimeEstimate"),
    "plan": ("memplan.results.plan", "PlanResult"),
    "serve": ("memplan.results.capacity", "CapacityPlan"),
    "profile": ("memplan.results.profile", "ProfileResult"),
    "profile --nproc": ("memplan.results.distributed", "DistributedProfile"),
    "bench": ("memplan.results.profile", "BenchResult"),
    "bench --system": ("memplan.results.system", "SystemRecord"),
}


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def field_paths(model: type[BaseModel], prefix: str = "", seen: tuple = ()) -> set[str]:
    """Every JSON field path of `model` (nested models as a.b; lists and dicts of models the same)."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = field.serialization_alias or field.alias or name
        path = f"{prefix}{key}"
        out.add(path)
        for sub in _models_in(field.annotation):
            if sub not in seen:
                out |= field_paths(sub, path + ".", seen + (model,))
    return out


def command_flags() -> dict[str, list[str]]:
    import click

    from memplan.cli.group import COMMANDS, cli

    ctx = click.Context(cli)
    out = {}
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if command is None:
            continue
        flags = []
        for p in command.params:
            if isinstance(p, click.Option):
                flags += [*p.opts, *p.secondary_opts]
            else:
                flags.append(f"<{p.name}>")
        out[name] = sorted(flags)
    return out


def result_fields() -> dict[str, list[str]]:
    import importlib

    return {label: sorted(field_paths(getattr(importlib.import_module(mod), cls)))
            for label, (mod, cls) in RESULTS.items()}


def current() -> dict:
    return {"flags": command_flags(), "fields": result_fields()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.interface --update   (rewrites tests/interface.json from the code)")
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
