"""`memplan trace CONFIG`: trace a model's own modeling code into an implementation profile (the activation rows the
estimate reads), from its config.json or a built-in profile.

It needs torch and transformers (imported only inside the command); the estimate that reads the profile stays
torch-free.  The profile is written to --out; without it, into $MEMPLAN_PROFILES/implementations/ when
MEMPLAN_PROFILES names the user's own catalog, else into memplan's user catalog (catalog.user_profiles_dir:
$MEMPLAN_HOME/profiles, else ~/.local/share/memplan/profiles), which the estimate reads before the installed
profiles -- so `memplan trace CONFIG` then `memplan estimate CONFIG` (or the name it prints) works from any folder.
The rows are hf-<type>-<key>.json (<key>: a hash of the config's structure, memory/implementations.py
structure_key, so that two configs of one model_type keep their own rows; a config of a structure already traced is
not traced again).  Never into the profiles installed with memplan: `trace --force` on a folder named like a
shipped profile replaced the shipped profile (scripts/trace_profiles.py regenerates those).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from memplan.errors import MemplanError


def _need_packages() -> None:
    missing = [p for p in ("torch", "transformers") if not _importable(p)]
    if missing:
        raise MemplanError(f"memplan trace needs {' and '.join(missing)}: `pip install 'memplan[trace]'` (torch: "
                           "`pip install torch`, a CPU build is enough: the trace runs on fake tensors)")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _model_profile(name: str, data: dict, profiles, force: bool, out: Path | None = None) -> tuple[Path, dict]:
    """For a model_type no family file covers: the model profile (its Model read from the module tree) the
    estimate needs besides the activation rows; checked writable before the trace runs.  Into the profiles
    folder, or beside --out when the rows go there (nothing is written into the catalog the user did not ask for)."""
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.measure.trace.probe import text_config
    from memplan.report.files import check_writable
    from memplan.spec.model import count_parameters

    model = read_module_tree(text_config(data), name)
    stem = Path(name).parent.name if Path(name).name == "config.json" else Path(name).stem
    stem = stem or str(data["model_type"])
    path = out.with_name(f"{out.stem}.model.json") if out is not None else profiles / "models" / f"{stem}.json"
    from memplan.measure.libraries import transformers  # torch and transformers: in measure/ only

    spec = {"name": stem, "source": f"read by `memplan trace` from {name}: transformers {transformers.__version__} "
                                    f"{data['model_type']} module tree on the meta device (no family file); "
                                    f"{count_parameters(model).total:,} parameters, equal to the module's",
            "architecture": model.model_dump(mode="json"), "_hf_config": data}
    if not _same_model_profile(path, spec):
        check_writable(path, force, "the model profile")
    return path, spec


def _same_model_profile(path: Path, spec: dict) -> bool:
    """`path` already holds the model profile of this very config (same name, config and architecture): a second
    trace of it has nothing to write."""
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(have, dict) and all(have.get(k) == spec[k] for k in ("name", "architecture", "_hf_config"))


def _make_catalog(catalog: Path) -> None:
    """The catalog's models/ and implementations/ folders, made if missing; one line if they cannot be."""
    for kind in ("models", "implementations"):
        try:
            (catalog / kind).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemplanError(f"cannot make {catalog / kind} ({exc.strerror or exc}); set MEMPLAN_HOME to a folder "
                               "you can write, or pass --out PATH") from None


def _same_structure(path: Path, rows_name: str) -> bool:
    """`path` holds traced rows named `rows_name` (the same structure key) under the installed transformers."""
    try:
        prof = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    from memplan.measure.libraries import transformers

    return isinstance(prof, dict) and prof.get("name") == rows_name and \
        (prof.get("traced_with") or {}).get("transformers") == transformers.__version__


def _progress(msg: str) -> None:
    click.echo(f"memplan trace: {msg}", err=True)


def read_config(config: str) -> tuple[str, dict]:
    """(name, config.json dict) of a config file, its folder, or a built-in profile name."""
    path = Path(config).expanduser()
    if path.exists():
        from memplan.families.hf import config_path_of, read_json

        cfg_path = config_path_of(path)
        data = read_json(cfg_path)
        if not isinstance(data.get("model_type"), str):
            raise MemplanError(f"{cfg_path}: missing key 'model_type'; is this a Hugging Face config.json?")
        return str(cfg_path), data
    from memplan.catalog import resolve_model

    spec = resolve_model(config)
    if spec.hf_config is None:
        raise MemplanError(f"{config!r} has no config.json to trace (a bare parameter count, or built from flags); "
                           "give a Hugging Face config.json")
    return spec.name, spec.hf_config


@click.command("trace")
@click.argument("config", metavar="CONFIG")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the profile (default: profiles/implementations/hf-<family>.json, where the "
                   "estimate finds it).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes tracing variants at once (default: the cores, at most 4).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON instead of a summary.")
def trace_command(config: str, out: str | None, force: bool, workers: int | None, as_json: bool) -> None:
    """Trace CONFIG's modeling code (transformers) under fake tensors and write its activation profile.

    CONFIG: a config.json, the folder holding one, or a built-in profile name.  One layer period of the model is
    run at small probe sizes in every precision mode, with CPU kernels and the CUDA ones emulated, eager and sdpa
    attention, with and without full recompute; every tensor saved for backward and every transient becomes a row
    (memplan/measure/trace/)."""
    name, data = read_config(config)
    from memplan.families.registry import find_family

    model_type = data["model_type"]
    known = find_family(model_type) is not None
    if not known:
        from memplan.families.registry import REFUSED

        if model_type in REFUSED:
            raise MemplanError(f"{name}: model_type {model_type!r} is {REFUSED[model_type]}")
    _need_packages()
    from memplan.catalog import profiles_dir, user_profiles_dir
    from memplan.report.files import check_writable, write_new_file

    from memplan.measure.trace.probe import read_model, text_config, with_class_defaults
    from memplan.memory.activations import keyed_rows_stem

    # rows keyed by the config's structure (model_type + a hash of what decides the rows: layer kinds, head), so
    # that two configs of one model_type keep their own rows; configs that differ in sizes only share them
    rows_name = keyed_rows_stem(read_model(with_class_defaults(text_config(data)), name), model_type)
    file_name = f"{rows_name}.json"
    # never the installed catalog: $MEMPLAN_PROFILES when the user named one, else the user catalog, which the
    # estimate reads before the installed profiles (catalog.user_profiles_dir)
    catalog = profiles_dir() if os.environ.get("MEMPLAN_PROFILES") else user_profiles_dir()
    if not out:
        _make_catalog(catalog)
        if not os.environ.get("MEMPLAN_PROFILES"):
            _progress(f"writing into memplan's user catalog {catalog} (read before the installed profiles; "
                      "MEMPLAN_HOME moves it; --out PATH writes elsewhere)")
    target = Path(out) if out else catalog / "implementations" / file_name
    reuse = not force and not as_json and target.is_file() and _same_structure(target, rows_name)
    if not reuse:
        check_writable(target, force, "--out")
    from memplan.measure.trace.profile import dumps, trace_profile

    t0 = time.time()
    model_profile = None
    if not known:
        model_profile = _model_profile(name, data, catalog, force, Path(out) if out else None)
    if reuse:  # a config of the same structure was traced: its rows are this one's (they are sizes' polynomials)
        _progress(f"{target} holds the rows of a config of the same structure ({rows_name}): not traced again "
                  "(--force retraces)")
        prof, written = json.loads(target.read_text()), target
    else:
        _progress(f"tracing {name} ({model_type})" + ("" if known else ": no family file, layers read from "
                                                                          "transformers' module tree"))
        prof = trace_profile(data, progress=_progress, workers=workers, keyed=True)
        prof["sources"].insert(0, f"traced from {name} by `memplan trace`")
        written = write_new_file(target, dumps(prof), force=force)
    if model_profile is not None:
        path, spec = model_profile
        if force or not _same_model_profile(path, spec):
            write_new_file(path, json.dumps(spec, indent=1) + "\n", force=force)
        if out:
            _progress(f"model profile written to {path}: put it in <profiles>/models/{spec['name']}.json and the "
                      f"rows in <profiles>/implementations/, then `MEMPLAN_PROFILES=<profiles> memplan estimate "
                      f"{spec['name']}`")
        else:
            _progress(f"model profile written to {path}: `memplan estimate {spec['name']}` reads it (its "
                      f"activations from {target.name})")
    if as_json:
        click.echo(json.dumps(prof, indent=1))
        return
    rows = {k: len(v) for k, v in prof.items() if isinstance(v, list) and (not v or isinstance(v[0], dict))}
    click.echo(f"{prof['name']} ({model_type}): {sum(rows.values())} rows in {time.time() - t0:.1f}s -> {written}")
    for region, n in rows.items():
        if n:
            click.echo(f"  {region:15s} {n:4d} rows")
    if out:
        click.echo(f"the estimate reads traced profiles from {profiles_dir() / 'implementations'}; copy it there "
                   "(or set MEMPLAN_PROFILES) for `--implementation hf` to use it")
    sys.stdout.flush()
