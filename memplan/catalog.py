"""Loads the data in profiles/ into spec objects, and resolves names the way users type them.

Adding a GPU, a model, an interconnect or an implementation is adding a JSON file: nothing here changes.
Names are forgiving: case, spaces, '-', '_' and '.' are ignored ('A100 80GB' == 'a100-80gb'), and each
profile may list `aliases`.  Unknown names get a did-you-mean.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from memplan.errors import MemplanError, did_you_mean
from memplan.spec.hardware import GPUSpec, InterconnectSpec
from memplan.spec.model import ModelSpec

T = TypeVar("T", bound=BaseModel)


def profiles_dir() -> Path:
    """$MEMPLAN_PROFILES, else the profiles/ folder of the source tree this package was installed from."""
    env = os.environ.get("MEMPLAN_PROFILES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "profiles"


def normalize(name: str) -> str:
    return re.sub(r"[\s\-_.]+", "", name.lower())


@lru_cache(maxsize=None)
def _load_kind(kind: str, model: type[T]) -> dict[str, T]:
    folder = profiles_dir() / kind
    if not folder.is_dir():
        raise MemplanError(f"profile folder {folder} is missing; set MEMPLAN_PROFILES or reinstall with `pip install -e .`")
    out: dict[str, T] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            out[path.stem] = model.model_validate_json(path.read_text())
        except (ValidationError, ValueError) as exc:
            raise MemplanError(f"bad profile {path}: {str(exc).splitlines()[0]}") from None
    return out


def _lookup(kind: str, model: type[T], name: str, what: str) -> T:
    items = _load_kind(kind, model)
    key = normalize(name)
    for stem, item in items.items():
        names = [stem, getattr(item, "name", stem), *getattr(item, "aliases", [])]
        if key in {normalize(n) for n in names}:
            return item
    raise MemplanError(did_you_mean(name, items, what) + f" (list them with `memplan {kind}`)")


def models() -> dict[str, ModelSpec]:
    return _load_kind("models", ModelSpec)


def gpus() -> dict[str, GPUSpec]:
    return _load_kind("gpus", GPUSpec)


def interconnects() -> dict[str, InterconnectSpec]:
    return _load_kind("interconnects", InterconnectSpec)


def get_model_profile(name: str) -> ModelSpec:
    return _lookup("models", ModelSpec, name, "model")


def get_gpu(name: str) -> GPUSpec:
    return _lookup("gpus", GPUSpec, name, "GPU")


def get_interconnect(name: str) -> InterconnectSpec:
    return _lookup("interconnects", InterconnectSpec, name, "interconnect")


def load_json(path: Path) -> dict:
    from memplan.userfiles import read_user_json  # bounded, regular files only, UTF-8, depth-limited

    return read_user_json(path)


def resolve_model(text: str, overrides: dict | None = None) -> ModelSpec:
    """MODEL as typed on the command line: a parameter count, a profile name, or a config.json path/folder.

    `overrides` are architecture fields (from --layers, --hidden, ...) applied on top; with a bare count and
    overrides, the overrides must describe a whole architecture.
    """
    from memplan.spec.units import parse_count

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = Path(text).expanduser()
    spec: ModelSpec
    if path.exists() or "/" in text or text.endswith(".json"):
        from memplan.spec.hfconfig import load_hf_config

        if not path.exists() and not text.endswith(".json"):
            try:  # a hub id such as meta-llama/Llama-2-7b-hf is a profile alias, not a path
                return _with_overrides(get_model_profile(text), overrides)
            except MemplanError:
                pass
        spec = load_hf_config(path)
    elif text.strip()[:1].isdigit() or text.strip()[:1] == ".":
        spec = ModelSpec(name=text, total_parameters=parse_count(text))
    else:
        spec = get_model_profile(text)
    return _with_overrides(spec, overrides)


def _with_overrides(spec: ModelSpec, overrides: dict) -> ModelSpec:
    from memplan.spec.model import Architecture

    if not overrides:
        return spec
    base = spec.architecture.model_dump() if spec.architecture else {}
    try:
        arch = Architecture.model_validate({**base, **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise MemplanError(f"architecture flag {field or ''}: {err['msg']}"
                           + ("; a bare parameter count needs --layers --hidden --heads --ffn --vocab"
                              if not base else "")) from None
    return ModelSpec(name=f"{spec.name}*" if base else "custom", source=spec.source, architecture=arch)
