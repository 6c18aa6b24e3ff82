"""Reading a config file safely: memplan.userfiles reads it (a regular file, bounded, UTF-8), then it is parsed
as JSON, YAML or TOML and its size as a tree is bounded too.

Every failure is one line naming the file (and the line for a syntax error), never a traceback.  YAML needs
PyYAML and TOML needs tomllib (Python >= 3.11) or tomli; both are imported only when such a file is read.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from memplan.errors import MemplanError
from memplan.userfiles import MAX_JSON_DEPTH, format_json_value, json_depth, json_kind, loads_json, read_user_text

MAX_BYTES = 1 << 20  # engine configs and launch scripts are kilobytes; 1 MiB stops a wrong path (a dataset,
#                      /dev/zero, a 15 MiB script) before a pure-Python parser spends minutes on it
MAX_NODES = 200_000  # settings in one file, YAML aliases counted each time they are used (a "billion laughs")
MAX_DEPTH = MAX_JSON_DEPTH  # sections inside sections: configs nest ~4 levels; the YAML composer and tomllib
#                             recurse once per level (RecursionError near 1000, a C stack overflow in libyaml)
MAX_STRING = 16 * 1024  # characters in one value or key: a path, a name, a list of modules
MAX_INT_DIGITS = 18  # a whole number in a setting: no count memplan reads comes near 10^18 (a float converts
#                      up to 1e308 only: 10**400 would be an OverflowError wherever it is formatted or divided)
Syntax = Literal["json", "yaml", "toml"]
SYNTAX_BY_SUFFIX: dict[str, Syntax] = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
                                       ".hjson": "json"}
_LONG_DIGITS = re.compile(r"[0-9][0-9_]{%d,}" % (MAX_INT_DIGITS * 2))


def read_text_bounded(path: str | os.PathLike, what: str = "config") -> str:
    return read_user_text(Path(path).expanduser(), what, max_bytes=MAX_BYTES)


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
    """A config's text -> its settings (a mapping), every value bounded (see `parse_any`)."""
    data = parse_any(path, text, syntax)
    if not isinstance(data, dict):
        raise MemplanError(f"{path}: the top level is {json_kind(data)}, not a mapping of settings")
    return data


def parse_any(path: str | os.PathLike, text: str, syntax: Syntax) -> Any:
    """JSON, YAML or TOML text -> a value whose size is bounded: nesting (MAX_DEPTH, checked *before* a parser
    recurses), settings (MAX_NODES, aliases counted at each use), strings (MAX_STRING), whole numbers
    (MAX_INT_DIGITS digits; Python refuses over 4,300 with a ValueError) and numbers finite (no NaN, no
    infinity, no 1e400).  Every failure -- the parser's own included -- is one MemplanError naming the file and
    the line or the field."""
    try:
        data = {"json": _json, "yaml": _yaml, "toml": _toml}[syntax](path, text)
    except RecursionError:  # belt and braces: the depth is checked before each parser runs
        raise MemplanError(f"{path} nests too deeply to be a config file") from None
    except MemplanError:
        raise
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # a parser's own failure, whatever its kind
        raise MemplanError(_parser_failure(path, text, syntax, exc)) from None
    _bounded(path, data)
    return data


def _parser_failure(path, text: str, syntax: Syntax, exc: BaseException) -> str:
    digits = _LONG_DIGITS.search(text)
    if "digits" in str(exc) or (digits and isinstance(exc, ValueError)):
        line = text.count("\n", 0, digits.start()) + 1 if digits else None
        return (f"{path}{f' line {line}' if line else ''} holds a number of over {MAX_INT_DIGITS} digits; no "
                "setting is that large")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{path} is not valid {syntax.upper()} ({first[:200]})"


def _field(where: str, key: Any) -> str:
    k = key if isinstance(key, str) else repr(key)
    k = k if len(k) <= 60 else k[:57] + "..."
    return f"{where}[{k}]" if isinstance(key, int) else f"{where}.{k}" if where else k


def _bounded(path, data: Any) -> None:
    """Walk the settings without recursion; a YAML alias is a shared object, counted at every use (what a walk of
    the settings will visit)."""
    stack: list[tuple[str, int, Any]] = [("", 0, data)]
    seen = 0
    while stack:
        where, depth, node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise MemplanError(f"{path} holds over {MAX_NODES:,} settings (YAML aliases used over and over?); "
                               "not a config file")
        if depth > MAX_DEPTH:
            raise MemplanError(f"{path}: {where or 'the top level'} nests too deeply (over {MAX_DEPTH} levels); not "
                               "a config file")
        field = where or "(top level)"
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and len(key) > MAX_STRING:
                    raise MemplanError(f"{path}: {field} has a key of {len(key):,} characters; the limit is "
                                       f"{MAX_STRING:,}")
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise MemplanError(f"{path}: {field} has a key that is {json_kind(key)}; keys are names")
                stack.append((_field(where, key), depth + 1, value))
        elif isinstance(node, list):
            stack.extend((_field(where, i), depth + 1, v) for i, v in enumerate(node))
        elif isinstance(node, str):
            if len(node) > MAX_STRING:
                raise MemplanError(f"{path}: {field} is a string of {len(node):,} characters; the limit is "
                                   f"{MAX_STRING:,}")
        elif isinstance(node, bool) or node is None:
            pass
        elif isinstance(node, int):
            if abs(node) >= 10 ** MAX_INT_DIGITS:
                raise MemplanError(f"{path}: {field} is a number of {len(str(abs(node))):,} digits; no setting is "
                                   f"that large (the limit is {MAX_INT_DIGITS} digits)")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise MemplanError(f"{path}: {field} is {format_json_value(node)}; give a finite number")
        elif not isinstance(node, (str, int, float)):  # YAML dates, timestamps, sets, bytes: not a config value
            pass


def _json(path, text: str) -> Any:
    depth = json_depth(text)
    if depth > MAX_DEPTH:  # json's C scanner recurses per level: refuse before it hits the recursion limit
        raise MemplanError(f"{path} nests JSON {depth} levels deep; the limit is {MAX_DEPTH}")
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
    """YAML: the event stream first (the parser is a state machine, iterative), checking the nesting, the length
    of each scalar and how many digits a plain number has, line by line; only then the composer (recursive) and
    the constructor build the value.  libyaml's C loader when PyYAML has it (10x faster), else the Python one."""
    yaml = yaml_module(f"reading {path}")
    loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    try:
        depth = 0
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise MemplanError(f"{path} line {_line(event)} nests too deeply (over {MAX_DEPTH} levels); "
                                       "not a config file")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent):
                value = event.value
                if len(value) > MAX_STRING:
                    raise MemplanError(f"{path} line {_line(event)} holds a value of {len(value):,} characters; "
                                       f"the limit is {MAX_STRING:,}")
                if not event.style and _LONG_DIGITS.fullmatch(value.lstrip("+-")):
                    raise MemplanError(f"{path} line {_line(event)} holds a number of over {MAX_INT_DIGITS} digits; "
                                       "no setting is that large")
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        if "nesting depth" in str(problem):  # libyaml's own limit (1000), met before the events reach ours
            raise MemplanError(f"{path}{where.replace(' at', '')} nests too deeply (over {MAX_DEPTH} levels); not a "
                               "config file") from None
        raise MemplanError(f"{path} is not valid YAML ({str(problem)[:200]}{where})") from None


def _line(event) -> str:
    mark = getattr(event, "start_mark", None)
    return str(mark.line + 1) if mark is not None else "?"


def _toml(path, text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise MemplanError(f"reading {path} needs tomli on Python < 3.11: pip install tomli") from None
    depth, line = toml_depth(text)
    if depth > MAX_DEPTH:  # tomllib recurses per nested array or inline table
        raise MemplanError(f"{path} line {line} nests too deeply (over {MAX_DEPTH} levels); not a config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MemplanError(f"{path} is not valid TOML ({str(exc).splitlines()[0][:200]})") from None


_TOML_TOKENS = re.compile(r'''"""(?:[^"\\]|\\.|"(?!""))*"""|\'\'\'(?:[^\']|\'(?!\'\'))*\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}\n]''', re.DOTALL)


def toml_depth(text: str) -> tuple[int, int]:
    """(the deepest nesting of [ and { outside strings and comments, the line it is reached on), in one linear
    pass (a scan, no recursion).  Table headers count one or two levels; that is all they add."""
    depth = deepest = 0
    line = at = 1
    for m in _TOML_TOKENS.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest, at = depth, line
        elif tok in ("]", "}"):
            depth = max(0, depth - 1)
        else:
            line += tok.count("\n")
    return deepest, at


def load(path: str | os.PathLike, syntax: Syntax | None = None) -> tuple[dict[str, Any], Syntax]:
    text = read_text_bounded(path)
    syntax = syntax or sniff_syntax(path, text)
    return parse(path, text, syntax), syntax
