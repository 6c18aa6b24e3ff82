"""User-facing errors: one clear line, exit code 2, never a traceback.

Every layer raises `MemplanError` (or a subclass) for bad input; the CLI catches it at the top and prints
`memplan: error: <message>`.  `did_you_mean` is the one helper for name suggestions so all commands phrase it alike.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class MemplanError(Exception):
    """Bad input or an impossible request. The message is one line that says what is wrong and how to fix it."""


class InputError(MemplanError, ValueError):
    """Bad input for one named option: `.field` is its name as a Python keyword (`micro_batch`), `.problem` what it
    must be ('must be at least 1, got 0').  The CLI words it as the flag (`--micro-batch must be ...`, the
    default text), the Python API as the keyword (`micro_batch must be ...`, see `keyword_message`)."""

    def __init__(self, field: str, problem: str, *, keyword_text: str | None = None,
                 flag_text: str | None = None) -> None:
        self.field, self.problem = field, problem
        self._keyword_text, self._flag_text = keyword_text, flag_text
        super().__init__(self.flag_message())

    def flag_message(self) -> str:
        return self._flag_text or f"{flag_name(self.field)} {self.problem}"

    def keyword_message(self) -> str:
        return self._keyword_text or f"{self.field} {self.problem}"


def flag_name(field: str) -> str:
    """'micro_batch' -> '--micro-batch'."""
    return "--" + field.replace("_", "-")


_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9*]+)*)(?: (-?[0-9][0-9.,]*(?![\w.])|[a-z][\w.-]*))?")


def keyword_wording(message: str, keywords: Iterable[str], choices: dict[str, tuple] | None = None) -> str:
    """A message written for the CLI, with each `--flag` that is one of `keywords` as the keyword instead:
    '--offload-params needs --zero 3' -> 'offload_params needs zero=3'; '--engine megatron supports ...' ->
    "engine='megatron' supports ..." (a value is joined only when it is a number or one of the keyword's
    `choices`).  Flags that are not keywords stay as they are."""
    known, choices = set(keywords), choices or {}

    def sub(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        if name not in known:
            return m.group(0)
        value = m.group(2)
        if value is None:
            return name
        if value[0].isdigit() or value[0] == "-":
            return f"{name}={value}"
        if value in tuple(str(c) for c in choices.get(name, ())):
            return f"{name}={value!r}"
        return f"{name} {value}"

    return _FLAG.sub(sub, message)


def did_you_mean(name: str, choices: Iterable[str], what: str = "name") -> str:
    """'unknown gpu 'a10o-80gb'; did you mean 'a100-80gb'? (see `memplan gpus`)' style message body."""
    choices = sorted(set(choices))
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    msg = f"unknown {what} {name!r}"
    if close:
        msg += "; did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?"
    else:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        msg += f"; known: {shown}"
    return msg
