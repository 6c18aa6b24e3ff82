"""A Hugging Face config.json (a file, or the folder holding one) -> ModelSpec, offline: the file is read as plain
JSON (no transformers import, no download, no remote code) and handed to its family's reader (registry.py)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from memplan.errors import MemplanError
from memplan.families.registry import read_config
from memplan.spec.model import ModelSpec


def read_json(path: Path) -> dict[str, Any]:
    """The config as a dict: bounded, UTF-8, regular files only, depth-limited (memplan/userfiles.py)."""
    from memplan.userfiles import read_user_json

    return read_user_json(path, what="config")


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
