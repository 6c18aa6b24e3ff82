"""The Python API's signatures are generated from the option fields the CLI flags come from, and cannot drift.

Per command: the API function's keywords are the command's flags (minus the CLI's own: --json, --units, files it
writes) plus a few keywords only Python has; every shared flag has the same bounds and choices on both sides.
"""
from __future__ import annotations

import inspect
import subprocess
import sys
import typing

import click
import pytest

import memplan
from memplan import keywords as kw
from memplan.cli.group import cli

# flags the CLI has and the API does not take as keywords: output format, files written beside the answer,
# and (profile) the multi-rank runner and device extras the API does not expose yet
CLI_ONLY = {
    "estimate": {"json", "units", "save_setup", "plot", "force", "compare", "verbose"},  # verbose: the table
    "time": {"json", "save_setup"},
    "plan": {"json", "save_setup"},
    "profile": {"json", "units", "save_setup", "out", "force", "plot", "snapshot", "find_max_batch", "nproc",
                "strategy", "mixed_precision"},
}
# keywords only Python has: LoRA hyper-parameters, int4 group size, plan's explicit pins, the torch.optim choice
# (an estimate flag) on time/plan
API_ONLY = {
    "estimate": {"lora_alpha", "lora_dropout", "int4_group"},
    "time": {"lora_alpha", "lora_dropout", "optimizer_impl"},
    "plan": {"lora_alpha", "lora_dropout", "optimizer_impl", "pin"},
    "profile": set(),
}


def _flags(command: str) -> dict[str, click.Parameter]:
    cmd = cli.get_command(click.Context(cli), command)
    out = {}
    for p in cmd.params:
        if isinstance(p, click.Argument):
            out[p.name] = p
        else:
            long = next(o for o in p.opts if o.startswith("--"))
            out[long[2:].replace("-", "_")] = p
    return out


@pytest.mark.parametrize("command", list(CLI_ONLY))
def test_api_keywords_are_the_cli_flags(command):
    api = set(inspect.signature(getattr(memplan, command)).parameters)
    cli_flags = set(_flags(command))
    assert api - API_ONLY[command] == cli_flags - CLI_ONLY[command], (
        f"API only: {sorted(api - API_ONLY[command] - cli_flags)}; "
        f"CLI only: {sorted(cli_flags - CLI_ONLY[command] - api)}")


def test_estimate_inference_compare_and_build_setup_take_estimates_flags():
    estimate = set(_flags("estimate")) | API_ONLY["estimate"]
    for name in ("estimate_inference", "compare", "build_setup"):
        extra = set(inspect.signature(getattr(memplan, name)).parameters) - estimate
        assert not extra, (name, extra)


def _bounds(field) -> tuple:
    lo = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
    if lo is None:
        lo = next((m.gt + 1 for m in field.metadata if getattr(m, "gt", None) is not None), None)
    hi = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
    return lo, hi


@pytest.mark.parametrize("command", list(CLI_ONLY))
def test_shared_flags_have_the_same_bounds_and_choices(command):
    from memplan.cli.types import BoundedInt

    flags = _flags(command)
    for name in set(flags) & set(kw.keywords(command)):
        t, field = flags[name].type, kw.field_of(command, name)
        if isinstance(t, BoundedInt):
            assert _bounds(field) == (t.minimum, t.maximum), (command, name)
        elif isinstance(t, click.IntRange):
            assert _bounds(field) == (t.min, t.max), (command, name)
        elif isinstance(t, click.Choice):
            ann = kw._non_none(field.annotation)
            assert typing.get_origin(ann) is typing.Literal, (command, name)
            assert set(map(str, typing.get_args(ann))) == set(t.choices), (command, name)


def test_the_signature_names_the_options_a_user_looks_for():
    params = inspect.signature(memplan.estimate).parameters
    for name in ("gpus", "zero", "micro_batch", "seq", "tp", "pp", "precision", "optimizer", "recompute",
                 "lora_rank", "gpu", "mode", "batch", "context"):
        assert name in params, name
    assert params["zero"].kind is inspect.Parameter.KEYWORD_ONLY and params["zero"].default is None
    assert params["zero"].annotation == (int | None)
    assert list(params)[:2] == ["model", "gpu"]
    t = inspect.signature(memplan.time).parameters
    assert t["gpu"].default is inspect.Parameter.empty and "global_batch" in t and "tokens" in t
    assert "emit" in inspect.signature(memplan.plan).parameters


def test_each_docstring_lists_every_keyword_with_its_description_and_an_example():
    for name in ("estimate", "estimate_inference", "compare", "time", "plan", "profile", "build_setup"):
        doc = getattr(memplan, name).__doc__
        assert ">>> " in doc, name
        for key in kw.keywords(name):
            assert f"    {key} (" in doc, (name, key)
    assert "ZeRO stage 0-3.  [default: 0]" in memplan.estimate.__doc__


def test_dir_and_all_list_the_api_and_import_stays_light():
    for name in ("estimate", "estimate_inference", "compare", "time", "plan", "profile", "build_setup",
                 "load_setup", "save_setup", "models", "gpus"):
        assert name in memplan.__all__ and name in dir(memplan) and callable(getattr(memplan, name))
    script = ("import sys, memplan; dir(memplan); assert not any(m.split('.')[0] in ('pydantic', 'click', 'torch') "
              "for m in sys.modules), sorted(sys.modules); import inspect; inspect.signature(memplan.estimate); "
              "memplan.estimate('gpt2'); assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_type_stub_ides_read_is_generated_from_the_same_fields():
    """memplan/__init__.pyi is what a static IDE (Pylance, PyCharm) shows: regenerate it with
    `python -m memplan.keywords > memplan/__init__.pyi` when an option changes."""
    import ast
    from pathlib import Path

    from memplan.stub import stub_text

    stub = Path(memplan.__file__).with_suffix(".pyi")
    assert stub.read_text() == stub_text(), "stale: python -m memplan.keywords > memplan/__init__.pyi"
    defined = {n.name for n in ast.parse(stub.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert defined | {"InputError", "MemplanError"} == set(memplan.__all__)
