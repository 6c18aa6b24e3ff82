"""Reading a config file safely: a regular file, at most MAX_BYTES, UTF-8, parsed as JSON, YAML or TOML.

Every failure is one line naming the file (and the line for a syntax error), never a traceback.  YAML needs
PyYAML and TOML needs tomllib (Python >= 3.11) or tomli; both are imported only when such a file is read.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

from memplan.errors import MemplanError

MAX_BYTES = 16 * 1024 * 1024  # engine configs are kilobytes; this only stops a wrong path (a dataset, /dev/zero)
Syntax = Literal["json", "yaml", "toml"]
SYNTAX_BY_SUFFIX: dict[str, Syntax] = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
                                       ".hjson": "json"}


def read_text_bounded(path: str | os.PathLike) -> str:
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MemplanError(f"no such file: {path}") from None
    except OSError as exc:
        raise MemplanError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MemplanError(f"{path} is not a regular file; give the config file itself")
    if info.st_size > MAX_BYTES:
        raise MemplanError(f"{path} is {info.st_size:,} bytes; a config file is at most {MAX_BYTES:,} "
                           "(is this the right file?)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise MemplanError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise MemplanError(f"{path} grew past {MAX_BYTES:,} bytes while being read")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MemplanError(f"{path} is not UTF-8 text (byte {exc.start}); give the config file itself") from None


def sniff_syntax(path: str | os.PathLike, text: str) -> Syntax:
    """By the suffix, else by the first meaningful character: '{' JSON, '[section]' TOML, else YAML."""
    suffix = Path(path).suffix.lower()
    if suffix in SYNTAX_BY_SUFFIX:
        return SYNTAX_BY_SUFFIX[suffix]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            return "json"
        if re.fullmatch(r"\[\[?[\w.\-\" ]+\]\]?", line):  # [section] or [[table]]
            return "toml"
        return "yaml"
    return "json"


def parse(path: str | os.PathLike, text: str, syntax: Syntax) -> dict[str, Any]:
    data = {"json": _json, "yaml": _yaml, "toml": _toml}[syntax](path, text)
    if not isinstance(data, dict):
        raise MemplanError(f"{path}: the top level is a {type(data).__name__}, not a mapping of settings")
    return data


def _json(path, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(path))
    except json.JSONDecodeError as exc:
        raise MemplanError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _no_duplicates(path):
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:  # json.loads would keep the last silently; DeepSpeed refuses (dict_raise_error_on_...)
                raise MemplanError(f"{path}: key {key!r} appears twice; keep one")
            out[key] = value
        return out
    return hook


def yaml_module(doing: str):
    try:
        import yaml
    except ImportError:
        raise MemplanError(f"{doing} needs PyYAML: pip install pyyaml") from None
    return yaml


def _yaml(path, text: str) -> Any:
    yaml = yaml_module(f"reading {path}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MemplanError(f"{path} is not valid YAML ({problem}{where})") from None


def _toml(path, text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise MemplanError(f"reading {path} needs tomli on Python < 3.11: pip install tomli") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MemplanError(f"{path} is not valid TOML ({str(exc).splitlines()[0]})") from None


def load(path: str | os.PathLike, syntax: Syntax | None = None) -> tuple[dict[str, Any], Syntax]:
    text = read_text_bounded(path)
    syntax = syntax or sniff_syntax(path, text)
    return parse(path, text, syntax), syntax
