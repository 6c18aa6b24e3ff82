"""Reading a file the user named: bounded, regular files only, UTF-8, JSON nested no deeper than a limit.

Every file memplan reads on a user's behalf (a config.json, a `--calibration` or `--measured` record, a setup
file) goes through `read_user_text` / `read_user_json`, so every one of them fails the same way: one
`MemplanError` line that names the file and says what is wrong.  What can go wrong and why it is checked here:
- not a regular file: a FIFO blocks `open()` until a writer comes (a hang), /dev/zero never ends, a folder or a
  socket cannot be read.  The kind is checked with `os.stat` before opening, and the file is opened with
  O_NONBLOCK (a FIFO swapped in after the check then opens without blocking) and checked again with `fstat`;
- size: at most `max_bytes` are read (64 MiB by default: a config or a record is kilobytes), counted while
  reading, since /proc files report size 0 and a file may grow;
- text: strict UTF-8 (a leading byte-order mark is allowed);
- nesting: json's C scanner recurses once per level and raises RecursionError near Python's recursion limit
  (~1000); the depth is counted from the brackets outside strings *before* parsing, iteratively;
- the OS: a symlink loop (ELOOP), a name over 255 bytes (ENAMETOOLONG), a missing or unreadable file.
"""
from __future__ import annotations

import errno
import itertools
import json
import math
import operator
import os
import re
import stat
import sys
from typing import Any

from memplan.errors import MemplanError

MAX_JSON_BYTES = 64 * 2**20  # a config.json or a profile record is kilobytes; 64 MiB leaves room for timelines
MAX_JSON_DEPTH = 64  # HF configs nest ~4 levels, profile records ~8
MAX_INT_DIGITS = 18  # a whole number in a config or a record: sizes, counts and bytes stay below 10^18; a larger
#                      one (10**400) would overflow wherever it becomes a float (OverflowError), so it is refused
_READ_CHUNK = 1 << 20

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string (escapes included), unrolled
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")  # opener -> 2, closer -> 0; minus 1 below
# outside strings, what can parse to a NaN or an infinity: the literals, or an exponent of 3+ digits (1e400)
_MAYBE_NON_FINITE = re.compile(r"NaN|Infinity|[eE][+-]?[0-9]{3,}")
_MAYBE_HUGE_INT = re.compile(r"[0-9]{%d,}" % (MAX_INT_DIGITS + 1))  # outside strings: a run of 19+ digits

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def describe(path: str | os.PathLike, what: str = "") -> str:
    """How error messages name a file: '--measured file run.json' or 'file run.json' (a very long name shortened)."""
    name = os.fspath(path)
    if len(name) > 120:
        name = f"{name[:60]}...{name[-40:]} ({len(name)} characters)"
    return f"{what} file {name}" if what else f"file {name}"


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a folder', ... for a non-regular st_mode; 'a regular file' otherwise."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode)
                else "not a regular file")


_WRITE_ERRORS = {
    errno.ENOENT: "the folder does not take new files", errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
}


def os_error_message(exc: OSError, writing: bool = False) -> str:
    """The part of an OSError a user can act on, in plain words (`writing`: the error came from creating or
    writing a file)."""
    if writing and exc.errno in _WRITE_ERRORS:
        return _WRITE_ERRORS[exc.errno]
    plain = {
        errno.ENOENT: "does not exist",
        errno.ELOOP: "is a symlink loop (a link that points back to itself)",
        errno.ENAMETOOLONG: "has a name too long for the file system (255 bytes per component)",
        errno.EACCES: "cannot be read (permission denied)",
        errno.EPERM: "cannot be read (operation not permitted)",
        errno.ENOTDIR: "has a path component that is not a folder",
        errno.EISDIR: "is a folder",
    }
    return plain.get(exc.errno, exc.strerror or str(exc))


def read_user_bytes(path: str | os.PathLike, what: str = "", max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file, at most `max_bytes`; any problem is one MemplanError naming the file."""
    name = os.fspath(path)
    if not name:
        raise MemplanError(f"{what + ': ' if what else ''}no file name given (an empty path)")
    where = describe(name, what)
    if "\0" in name:
        raise MemplanError(f"{where} has a NUL character in its name")
    try:
        st = os.stat(name)
    except OSError as exc:
        raise MemplanError(f"{where} {os_error_message(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MemplanError(f"{where} is {file_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise MemplanError(f"{where} {os_error_message(exc)}") from None
    try:
        st = os.fstat(fd)  # the file opened may not be the one stat()ed (replaced in between)
        if not stat.S_ISREG(st.st_mode):
            raise MemplanError(f"{where} is {file_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise MemplanError(f"{where} is {st.st_size:,} bytes; the limit is {_mib(max_bytes)}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise MemplanError(f"{where} is over the limit of {_mib(max_bytes)}")
    except OSError as exc:
        raise MemplanError(f"{where} {os_error_message(exc)}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_user_text(path: str | os.PathLike, what: str = "", max_bytes: int = MAX_JSON_BYTES) -> str:
    """A regular file's text, strict UTF-8 (a leading BOM dropped), at most `max_bytes`."""
    data = read_user_bytes(path, what, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MemplanError(f"{describe(path, what)} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                           f"{exc.start}); save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, counted outside strings, without recursion."""
    return _depth(_STRING.sub("", text))


def _depth(outside_strings: str) -> int:
    brackets = _NOT_BRACKET.sub("", outside_strings)
    if not brackets:
        return 0
    steps = map(operator.sub, brackets.encode("ascii").translate(_DEPTH_STEP), itertools.repeat(1))
    return max(0, max(itertools.accumulate(steps)))


def parse_user_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text -> Python value; `where` names the source in errors (see `describe`)."""
    return _parse(text, where, max_depth)[0]


def _parse(text: str, where: str, max_depth: int) -> tuple[Any, bool]:
    """(value, whether it may hold a NaN or an infinity): the walk that finds one runs only when it may; so does
    the one that refuses a whole number of over MAX_INT_DIGITS digits (naming its field)."""
    outside = _STRING.sub("", text)
    depth = _depth(outside)
    if depth > max_depth:
        raise MemplanError(f"{where} nests JSON {depth} levels deep; the limit is {max_depth}")
    value = loads_json(text, where)
    if _MAYBE_HUGE_INT.search(outside):
        huge = first_huge_int(value)
        if huge is not None:
            field, number = huge
            raise MemplanError(f"{where}: field {field or '(top level)'} is a whole number of {len(str(abs(number)))} "
                               f"digits; no size or count is that large (the limit is {MAX_INT_DIGITS} digits)")
    return value, _MAYBE_NON_FINITE.search(outside) is not None


def first_huge_int(value: Any) -> tuple[str, int] | None:
    """(dotted path, value) of the first whole number of over MAX_INT_DIGITS digits in parsed JSON, iteratively."""
    return _first_leaf(value, lambda v: isinstance(v, int) and not isinstance(v, bool)
                       and abs(v) >= 10 ** MAX_INT_DIGITS)


def loads_json(text: str, where: str, **kwargs: Any) -> Any:
    """json.loads with its failures as one MemplanError naming `where` (check the depth first: `json_depth`)."""
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError as exc:
        raise MemplanError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except ValueError as exc:
        if "digits" in str(exc):  # Python refuses to convert an integer of over sys.get_int_max_str_digits() digits
            raise MemplanError(f"{where} holds a number of over {sys.get_int_max_str_digits():,} digits; no setting "
                               "is that large") from None
        raise MemplanError(f"{where} is not valid JSON ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    except RecursionError:  # belt and braces: the depth check should make this unreachable
        raise MemplanError(f"{where} nests JSON too deeply") from None


def read_user_json(path: str | os.PathLike, what: str = "", max_bytes: int = MAX_JSON_BYTES,
                   max_depth: int = MAX_JSON_DEPTH, expect: type | None = dict, allow_non_finite: bool = False,
                   expected: str | None = None) -> Any:
    """A user's JSON file, parsed; `expect` (dict by default, None for any) is the top-level type required,
    `expected` its name in the error ('a config object'; default: JSON's name of the type).

    NaN and Infinity (which Python's json accepts, RFC 8259 does not) are refused with the field that holds one,
    unless `allow_non_finite` (the caller validates every number itself, with the field's own expectation).
    """
    where = describe(path, what)
    value, maybe_non_finite = _parse(read_user_text(path, what, max_bytes), where, max_depth)
    if expect is not None and not isinstance(value, expect):
        raise MemplanError(f"{where} holds {json_kind(value)}, not {expected or _json_type_name(expect)}")
    bad = None if allow_non_finite or not maybe_non_finite else first_non_finite(value)
    if bad is not None:
        field, number = bad
        raise MemplanError(f"{where}: field {field or '(top level)'} is {format_json_value(number)}; "
                           "give a finite number")
    return value


def first_non_finite(value: Any) -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN or infinity in parsed JSON, iteratively (depth is bounded anyway)."""
    return _first_leaf(value, lambda v: isinstance(v, float) and not math.isfinite(v))


def _first_leaf(value: Any, wanted) -> tuple[str, Any] | None:
    """(dotted path, value) of the first value in parsed JSON, in document order, for which `wanted` holds;
    iterative (depth is bounded anyway)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, v = stack.pop()
        if wanted(v):
            return where, v
        if isinstance(v, dict):
            stack.extend((f"{where}.{k}" if where else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def json_kind(value: Any) -> str:
    """'an object', 'a list', 'null', 'a number', ... -- JSON's words, not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def format_json_value(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it in JSON, shortened: 'NaN', "'abc'", 'a list', 'null', '-5'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return json_kind(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_type_name(t: type) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(t, t.__name__)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def is_regular_file(path: str | os.PathLike) -> bool:
    """True when `path` names a regular file (following links); False for anything else or an error."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


__all__ = ["MAX_INT_DIGITS", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "describe", "first_huge_int", "file_kind", "first_non_finite", "format_json_value",
           "is_regular_file", "json_depth", "json_kind", "os_error_message", "parse_user_json", "read_user_bytes",
           "read_user_json", "read_user_text"]
