"""Click options shared by estimate, time, plan and profile.

The layout, workload, architecture, recipe and LoRA options are generated from pydantic fields (spec/layout.py
Layout, spec/training.py Workload, memplan/keywords.py ArchitectureKeywords, RecipeKeywords, LoraKeywords): the
field's description is the help, its bounds the flag's type, its default is shown and applied by pydantic (the
option itself defaults to None), so a flag means the same everywhere, every default lives in one place, and the
Python API's signatures (memplan/api.py) come from the same fields.  Building the setup is memplan/setups.py's job.
"""
from __future__ import annotations

import typing
from collections.abc import Callable

import click

from memplan.cli.types import NAME, PATH, BoundedInt, NonEmptyText
from memplan.errors import MemplanError
from memplan.keywords import ArchitectureKeywords, LoraKeywords, RecipeKeywords
from memplan.spec.layout import Layout
from memplan.spec.training import Workload
from memplan.spec.units import Units

POSITIVE = click.IntRange(min=1)


def _stack(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def field_option(model, name: str, *decls: str, **extra) -> Callable:
    """A click option for pydantic field `name` of `model`: type from its annotation and bounds, help from its
    description, default shown from the field but left to pydantic (None when the flag is absent)."""
    field = model.model_fields[name]
    flag = "--" + name.replace("_", "-")
    ann = field.annotation
    args = typing.get_args(ann)
    base = next((a for a in args if a is not type(None)), ann) if args and type(None) in args else ann
    schema = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    shown = schema.get("shown_default", field.default)
    kwargs: dict = {"default": None, "help": (field.description or "").rstrip(".") + "."}
    if shown is not None and not callable(shown):
        kwargs["help"] += f"  [default: {shown}]"
    if typing.get_origin(base) is typing.Literal:
        kwargs["type"] = click.Choice([str(x) for x in typing.get_args(base)])
    elif base is bool:
        return click.option(*(decls or (f"{flag}/--no-{flag[2:]}",)), name, default=None, help=kwargs["help"],
                            **extra)
    elif base is int:
        lo = next((m.gt + 1 for m in field.metadata if getattr(m, "gt", None) is not None), None)
        lo = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), lo)
        hi = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
        # a small closed range (a ZeRO stage) reads best as click's range; a size gets the bound's reason
        small = hi is not None and hi <= 64
        bound = schema.get("bound", hi)  # a named bound (cli/types.py BOUNDS) also says what it is measured against
        kwargs["type"] = click.IntRange(lo, hi) if small else BoundedInt(lo if lo is not None else 0, bound)
    elif base is str and any(getattr(m, "min_length", None) for m in field.metadata):
        kwargs["type"] = NonEmptyText(schema["text"]) if "text" in schema else NAME
    kwargs.update(extra)
    return click.option(*(decls or (flag,)), name, **kwargs)


model_argument = click.argument("model", metavar="MODEL", type=NAME, required=False)
setup_file_options = _stack(
    click.option("--setup", "setup_file", type=PATH, help="Read the setup from a file: memplan's own (--save-setup "
                 "writes it; JSON/YAML/TOML) or an engine's (DeepSpeed ds_config.json, accelerate YAML, torchtitan "
                 "TOML, axolotl YAML, HF TrainingArguments JSON, Megatron-LM launch script); flags override it."),
    click.option("--save-setup", type=PATH, help="Write the setup used as a memplan setup file (JSON or .yaml)."),
    click.option("--download", is_flag=True, default=None,
                 help="MODEL is a Hugging Face hub id: fetch its config.json (no weights) with huggingface_hub."),
)

architecture_options = _stack(*(field_option(ArchitectureKeywords, name, *(("--tied/--untied",) if name == "tied"
                                                                             else ()))
                                  for name in ArchitectureKeywords.model_fields))

_RECIPE_SHORT = {"precision": ("--precision", "-p"), "optimizer": ("--optimizer", "-o")}
precision_options = _stack(*(field_option(RecipeKeywords, name, *_RECIPE_SHORT.get(name, ()))
                             for name in RecipeKeywords.model_fields))

_SHORT = {"gpus": ("--gpus", "-n"), "zero": ("--zero", "-z"), "micro_batch": ("--micro-batch", "-b")}
parallel_options = _stack(*(field_option(Layout, name, *_SHORT.get(name, ())) for name in
                            ("gpus", "gpus_per_node", "tp", "pp", "cp", "ep", "etp", "sequence_parallel",
                             "virtual_stages", "first_stage_layers", "last_stage_layers", "zero",
                             "offload_optimizer", "offload_params", "engine")))

workload_options = _stack(
    field_option(Layout, "micro_batch", "--micro-batch", "-b"),
    field_option(Workload, "seq", "--seq", "-s"),
    field_option(Layout, "grad_accum"),
    field_option(Layout, "recompute"),
    field_option(Layout, "recompute_every"),
    field_option(Workload, "attention"),
    field_option(Workload, "implementation", type=NAME),
)

# the CLI's LoRA flags; lora_alpha and lora_dropout are Python keywords only (memplan/keywords.py LoraKeywords)
lora_options = _stack(*(field_option(LoraKeywords, name) for name in ("lora_rank", "lora_targets", "quantize_base")))

training_options = _stack(model_argument, setup_file_options, architecture_options, precision_options,
                          parallel_options, workload_options)

gpu_option = click.option("--gpu", "-g", "gpu_name", type=NAME,
                          help="GPU profile name (see `memplan gpus`), for the verdict.")
units_option = click.option("--units", type=click.Choice(["GiB", "GB"], case_sensitive=False), default="GiB",
                            show_default=True, help="GiB = 2^30 bytes, GB = 10^9 bytes.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")


def pop_training_kwargs(kwargs: dict) -> dict:
    """Split the training flags out of a command's kwargs (the rest are the command's own); unset ones dropped.

    With --setup FILE the file's setup comes first and the flags given override it (what was read and ignored
    goes to stderr); --save-setup FILE is written once the setup is built (see `save_setup_if_asked`)."""
    from memplan.setups import TRAINING_KEYS, load_setup_file

    flags = {k: v for k in TRAINING_KEYS if k in kwargs for v in [kwargs.pop(k)] if v is not None}
    path, save = kwargs.pop("setup_file", None), kwargs.pop("save_setup", None)
    base: dict = {}
    if path is not None:
        loaded = load_setup_file(path)
        summary = loaded.summary(verbose=bool(kwargs.get("verbose")))  # a short table: each line says memplan
        click.echo("\n".join(f"memplan: {line}" for line in summary.splitlines()), err=True)
        for line in loaded.warnings:  # what the reader could not express: said, and kept in the JSON
            click.echo(f"memplan: warning: {line}", err=True)
        base = dict(loaded.kwargs)
        if loaded.warnings:
            base["warnings"] = list(loaded.warnings)
        if "model" in flags and "model" in base:
            base.pop("model")
    merged = {**base, **flags}
    if kwargs.pop("download", None):
        if not isinstance(merged.get("model"), str):
            raise MemplanError("--download needs MODEL: a Hugging Face hub id (ORG/NAME)")
        from memplan.catalog import download_config

        click.echo(f"memplan: fetching config.json of {merged['model']} from the Hugging Face hub (no weights) ...",
                   err=True)
        merged["model"] = download_config(merged["model"])
        click.echo(f"memplan: config.json downloaded to {merged['model']}", err=True)
    if "model" not in merged:
        raise MemplanError("MODEL is needed: a profile name, a config.json, a parameter count, or a --setup file "
                           "that names the model")
    if save is not None:
        from memplan.report.files import TargetRefused, check_writable

        # the command's own --force (estimate, profile, plan) overwrites an existing --save-setup file too
        ctx = click.get_current_context(silent=True)
        force = bool(ctx is not None and ctx.params.get("force"))
        try:
            check_writable(save, force, what="--save-setup")  # up front: an existing file, a folder, ...
        except TargetRefused as exc:
            if ctx is None or "force" in ctx.params or "--force" not in str(exc):
                raise
            raise MemplanError(f"--save-setup {exc.path}: exists; choose another path (`{ctx.command_path}` has "
                               "no --force)") from None
        merged["_save_setup"] = save
        merged["_save_setup_force"] = force
    return merged


def build_setup(**kw):
    """TrainingSetup from CLI keyword arguments (memplan/setups.py training_setup); --save-setup written here."""
    from memplan.setups import save_setup_file, training_setup

    kw = {k: v for k, v in kw.items() if v is not None}
    save, force = kw.pop("_save_setup", None), kw.pop("_save_setup_force", False)
    setup = training_setup(kw.pop("model"), **kw)
    if save is not None:
        click.echo(f"memplan: setup written to {save_setup_file(save, setup, force=force)}", err=True)
    return setup


def save_setup_if_asked(training: dict, setup) -> None:
    """For commands that build their setup elsewhere (the API): write --save-setup if it was given."""
    save, force = training.pop("_save_setup", None), training.pop("_save_setup_force", False)
    if save is not None:
        from memplan.setups import save_setup_file

        click.echo(f"memplan: setup written to {save_setup_file(save, setup, force=force)}", err=True)


def resolve_gpu(name: str | None):
    from memplan.setups import resolve_gpu as _resolve

    return _resolve(name)


def resolve_gpu_for_device(name: str | None, device: str, progress: Callable[[str], None]):
    """--gpu NAME, else on cuda the profile matching the visible device's name (torch imported by measure/)."""
    gpu = resolve_gpu(name)
    if gpu is None and device == "cuda":
        from memplan.catalog import get_gpu
        from memplan.measure.libraries import cuda_device_name

        try:
            gpu = get_gpu(cuda_device_name())
        except MemplanError:
            progress(f"no GPU profile matches {cuda_device_name()!r}: no peaks or capacity to compare with")
    return gpu


def units_of(text: str) -> Units:
    return Units.GB if text.lower() == "gb" else Units.GiB
