"""User-facing errors: one clear line, exit code 2, never a traceback.

Every layer raises `MemplanError` (or a subclass) for bad input; the CLI catches it at the top and prints
`memplan: error: <message>`.  `did_you_mean` is the one helper for name suggestions so all commands phrase it alike.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class MemplanError(Exception):
    """Bad input or an impossible request. The message is one line that says what is wrong and how to fix it."""


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
