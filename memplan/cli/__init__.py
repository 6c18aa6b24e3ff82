"""The `memplan` command.  Thin: parse flags, call memplan.api, render with memplan.report.

Each subcommand lives in its own module and is imported only when it runs, so `memplan estimate` never pays
for (or imports) torch, which only `profile`, `bench` and the distributed runner need.  This module itself
imports nothing but the standard library at load time: the console script (`memplan = "memplan.cli:run"`)
imports it before `run()` installs the Ctrl-C handler (memplan.interrupt), and that window must stay short.
The click group lives in memplan.cli.group.
"""
from __future__ import annotations

import sys


def _started_as_the_program() -> bool:
    """True while the console script (`memplan`, a wrapper whose __main__ has no module spec) or `python -m
    memplan` is importing this module; False for a library import (tests, a notebook, the API)."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None:
        return getattr(spec, "name", "") == "memplan.__main__"
    name = str(getattr(main_module, "__file__", "") or "").replace("\\", "/").rsplit("/", 1)[-1].lower()
    return name in ("memplan", "memplan.exe", "memplan-script.py", "memplan-script.pyw")


if _started_as_the_program():
    # Ctrl-C quiet from the first memplan line the console script runs (before click, pydantic or the command's
    # imports start): the handler raises nothing, so no KeyboardInterrupt traceback can come out of start-up.
    import memplan.interrupt as _interrupt

    _interrupt.install()


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    import click

    from memplan.cli.group import cli
    from memplan.errors import MemplanError

    try:
        cli.main(args=argv, prog_name="memplan", standalone_mode=False)
    except MemplanError as exc:
        click.echo(f"memplan: error: {_one_line(str(exc))}", err=True)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):  # in-process callers keep Python's own SIGINT handler
        click.echo("memplan: aborted", err=True)
        return 130
    except click.ClickException as exc:
        msg = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        click.echo(f"memplan: error: {msg}{hint}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        return 0
    return 0


MAX_ERROR_CHARS = 600


def _one_line(message: str) -> str:
    """An error as exactly one line of readable length, whatever it quotes (a 20,000-character model_type, a value
    with a newline): whitespace runs become one space, the middle of a long message is elided."""
    text = " ".join(message.split())
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS - 120]} ... ({len(text):,} characters) ... {text[-80:]}"
    return text


def run() -> None:
    """The console script: Ctrl-C quiet from here on (memplan.interrupt), then the command."""
    import os

    import memplan.interrupt as interrupt

    interrupt.install()
    # memplan uses no pydantic plugins; without this pydantic scans every installed distribution's entry points
    # (importlib.metadata) when the first model class is built: ~30 ms of each command's start-up
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__" and "pydantic.plugin._loader" not in sys.modules:
        # ... and its plugin loader imports importlib.metadata at load time even then (~20 ms, 15% of a plain
        # estimate's CPU time); with every plugin disabled its one function returns nothing, so stand in for it
        # (pydantic/plugin/_schema_validator.py imports get_plugins from it when the first validator is built)
        import types

        loader = types.ModuleType("pydantic.plugin._loader")
        loader.get_plugins = lambda: ()
        sys.modules["pydantic.plugin._loader"] = loader
    sys.exit(main())


def __getattr__(name: str):
    # `from memplan.cli import cli` (and COMMANDS) still work, without importing click when this package loads
    if name in ("cli", "COMMANDS", "LazyGroup"):
        from memplan.cli import group

        return getattr(group, name)
    raise AttributeError(f"module 'memplan.cli' has no attribute {name!r}")
