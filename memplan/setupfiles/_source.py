"""Reading a config file safely: memplan.userfiles reads it (a regular file, bounded, UTF-8), then it is parsed
as JSON, YAML or TOML and its size as a tree is bounded too.

Every failure is one line naming the file (and the line for a syntax error), never a traceback.  YAML needs
PyYAML and TOML needs tomllib (Python >= 3.11) or tomli; both are imported only when such a file is read.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from memplan.errors import MemplanError
from memplan.userfiles import MAX_JSON_DEPTH, json_depth, json_kind, loads_json, read_user_text

MAX_BYTES = 16 * 1024 * 1024  # engine configs are kilobytes; this only stops a wrong path (a dataset, /dev/zero)
MAX_NODES = 200_000  # settings in one file, YAML aliases counted each time they are used (a "billion laughs")
Syntax = Literal["json", "yaml", "toml"]
SYNTAX_BY_SUFFIX: dict[str, Syntax] = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
                                       ".hjson": "json"}


def read_text_bounded(path: str | os.PathLike) -> str:
    return read_user_text(Path(path).expanduser(), "config", max_bytes=MAX_BYTES)


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
    try:
        data = {"json": _json, "yaml": _yaml, "toml": _toml}[syntax](path, text)
    except RecursionError:  # the YAML composer and tomllib recurse per nesting level
        raise MemplanError(f"{path} nests too deeply to be a config file") from None
    if not isinstance(data, dict):
        raise MemplanError(f"{path}: the top level is {json_kind(data)}, not a mapping of settings")
    _bounded(path, data)
    return data


def _bounded(path, data: Any) -> None:
    """Count the nodes without recursion; a YAML alias is a shared object, counted at every use (what a walk of
    the settings will visit)."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise MemplanError(f"{path} holds over {MAX_NODES:,} settings (YAML aliases used over and over?); "
                               "not a config file")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _json(path, text: str) -> Any:
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:  # json's C scanner recurses per level: refuse before it hits the recursion limit
        raise MemplanError(f"{path} nests JSON {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    return loads_json(text, str(path), object_pairs_hook=_no_duplicates(path))


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
