"""A Hugging Face config.json (a file, or the folder holding one) -> ModelSpec, offline: the file is read as plain
JSON (no transformers import, no download, no remote code) and handed to its family's reader (registry.py)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from memplan.errors import MemplanError
from memplan.families.registry import read_config
from memplan.spec.model import ModelSpec


# Fields whose transformers default is an infinity (time_step_limit = (0.0, inf): configuration_mamba2.py,
# configuration_bamba.py, configuration_falcon_h1.py, configuration_granitemoehybrid.py,
# configuration_nemotron_h.py at transformers 5.24): a config transformers writes carries it, as a bare Infinity
# (json.dumps) or as {"__float__": "Infinity"} (PreTrainedConfig._encode_special_floats, transformers 5).
NON_FINITE_FIELDS = frozenset({"time_step_limit"})
_FLOAT_TAG_KEY = "__float__"  # transformers/configuration_utils.py _FLOAT_TAG_KEY
_FLOAT_TAGS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}


def decode_special_floats(value: Any) -> Any:
    """transformers' tagged floats ({"__float__": "Infinity"}) back to floats, as
    PreTrainedConfig._decode_special_floats does; iterative (a user's file may nest deeply)."""
    def tagged(v: Any) -> bool:
        return isinstance(v, dict) and set(v) == {_FLOAT_TAG_KEY} and v[_FLOAT_TAG_KEY] in _FLOAT_TAGS

    if tagged(value):
        return _FLOAT_TAGS[value[_FLOAT_TAG_KEY]]
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, v in list(items):
            if tagged(v):
                node[key] = _FLOAT_TAGS[v[_FLOAT_TAG_KEY]]
            elif isinstance(v, (dict, list)):
                stack.append(v)
    return value


def read_json(path: Path) -> dict[str, Any]:
    """The config as a dict: bounded, UTF-8, regular files only, depth-limited (memplan/userfiles.py).

    A NaN or an infinity is refused with the field that holds it, except where transformers itself writes one
    (NON_FINITE_FIELDS), in either of the spellings transformers uses."""
    from memplan.userfiles import describe, first_non_finite, format_json_value, read_user_json

    data = decode_special_floats(read_user_json(path, what="config", allow_non_finite=True))
    rest = {k: v for k, v in data.items() if k not in NON_FINITE_FIELDS}
    bad = first_non_finite(rest)
    if bad is not None:
        field, number = bad
        raise MemplanError(f"{describe(path, 'config')}: field {field} is {format_json_value(number)}; give a "
                           "finite number")
    return data


def spec_name(given: Path, config_path: Path, data: dict[str, Any], model_type: str) -> str:
    """The folder the user named, else a file name that says something, else _name_or_path, else model_type.

    A Hugging Face cache snapshot folder is a commit hash, which names nothing: skip it.
    """
    candidates = [given.name] if given.is_dir() else [given.stem if given.stem != "config" else "",
                                                      config_path.parent.resolve().name]
    for name in candidates:
        if name and not re.fullmatch(r"[0-9a-f]{40}", name):
            return name
    snapshot = config_path.parent.resolve()
    if snapshot.parent.name == "snapshots" and snapshot.parent.parent.name.startswith("models--"):
        return snapshot.parent.parent.name.split("--")[-1]  # huggingface_hub's cache: models--ORG--NAME/snapshots/
    named = data.get("_name_or_path")
    if isinstance(named, str) and named.strip():
        return named.strip().rstrip("/").rsplit("/", 1)[-1]
    return model_type


def config_path_of(path: Path) -> Path:
    given = Path(path).expanduser()
    try:  # Path.is_dir() raises for what the OS refuses outright: a name over 255 bytes, a path over PATH_MAX
        is_dir = given.is_dir()
        if is_dir:
            config_path = given / "config.json"
            if not config_path.is_file():
                raise MemplanError(f"{given} has no config.json; point to a Hugging Face model folder or a config "
                                   "file")
            return config_path
        there = given.exists() or given.is_symlink()
    except OSError as exc:
        from memplan.userfiles import describe, os_error_message

        raise MemplanError(f"{describe(given, 'config')} {os_error_message(exc)}") from None
    if there:
        return given  # read_json refuses what is not a regular file, saying what it is
    raise MemplanError(f"no such file or folder: {given} (give a config.json, its folder, or a profile name)")


def load_hf_config(path: Path) -> ModelSpec:
    """Read a Hugging Face config.json (or a folder holding one) into a ModelSpec with an exact architecture."""
    given = Path(path).expanduser()
    config_path = config_path_of(given)
    data = read_json(config_path)
    model = read_config(data, str(config_path))
    return ModelSpec(name=spec_name(given, config_path, data, model.family),
                     source=f"Hugging Face config {config_path}", architecture=model, hf_config=data)
