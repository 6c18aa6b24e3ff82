"""Flag types: every number finite and in range (upper bounds stated), every name and path non-empty.

click's `float` takes 'nan', 'inf' and '-5' without complaint and its IntRange has no upper bound by default, so
`--price nan` printed "cost: $nan", `--cpu-memory 1e400GB` raised OverflowError and `-B 1000000000000000000000000`
searched for ever.  Each type here fails with one line that says what the flag must be and what it got; the
CLI's top level prints it as `memplan: error: Invalid value for '--price': ...`.

The upper bounds are far above anything that exists (they are not tuning knobs, only refusals of the
impossible): see BOUNDS for the figure each one is measured against.
"""
from __future__ import annotations

import math
import re

import click

# name -> (bound, what it is measured against).  A bound is "no machine could hold it", not a recommendation.
BOUNDS = {
    "layers": (100_000, "10^5; the deepest published transformers have ~10^2 layers"),
    "hidden": (2**20, "2^20; one such layer alone would hold ~10^13 parameters"),
    "heads": (2**16, "2^16"),
    "head_dim": (2**16, "2^16"),
    "ffn": (2**24, "2^24"),
    "vocab": (2**24, "2^24; the largest vocabularies are ~2.6 x 10^5"),
    "positions": (2**27, "2^27 tokens; the longest contexts are ~10^7"),
    "experts": (2**16, "2^16"),
    "gpus": (2**20, "2^20; the largest clusters hold ~10^5 GPUs"),
    "gpus_per_node": (4096, "the largest NVLink domains hold 576 GPUs"),
    "batch": (2**24, "2^24 sequences"),
    "steps": (2**40, "2^40"),
    "repeat": (10_000, "10^4"),
    "rank": (2**20, "2^20, the hidden-size bound"),
    "matrix": (2**24, "2^24"),
}


def bound(name: str) -> int:
    return BOUNDS[name][0]


class BoundedInt(click.ParamType):
    """A whole number in [minimum, maximum]; '1e3' is accepted when it is a whole number, 'abc' and '1.5' are not."""

    name = "integer"

    def __init__(self, minimum: int = 1, maximum: str | int | None = None) -> None:
        self.minimum = minimum
        if isinstance(maximum, str):
            self.maximum, note = BOUNDS[maximum]
        else:
            self.maximum, note = maximum, ""
        self.why = "" if self.maximum is None else f"{self.maximum:,}" + (f" ({note})" if note else "")

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            text = str(value).strip()
            try:
                n = int(text)
            except ValueError:
                try:
                    f = float(text)
                except ValueError:
                    self.fail(f"must be a whole number, got {value!r}", param, ctx)
                if not math.isfinite(f) or f != int(f):
                    self.fail(f"must be a whole number, got {value!r}", param, ctx)
                n = int(f)
        if n < self.minimum:
            self.fail(f"must be at least {self.minimum}, got {value!r}", param, ctx)
        if self.maximum is not None and n > self.maximum:
            self.fail(f"{value} is above the bound {self.why}: no machine could hold it", param, ctx)
        return n

    def __repr__(self) -> str:
        return f"BoundedInt({self.minimum}, {self.maximum})"


class FiniteFloat(click.ParamType):
    """A finite number with a lower (and optional upper) bound: nan, inf and out-of-range values are errors."""

    name = "number"

    def __init__(self, minimum: float | None = None, minimum_open: bool = False, maximum: float | None = None,
                 expect: str = "a finite number") -> None:
        self.minimum, self.minimum_open, self.maximum, self.expect = minimum, minimum_open, maximum, expect

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"must be {self.expect}, got {value!r}", param, ctx)
        ok = math.isfinite(x)
        if ok and self.minimum is not None:
            ok = x > self.minimum if self.minimum_open else x >= self.minimum
        if ok and self.maximum is not None:
            ok = x <= self.maximum
        if not ok:
            self.fail(f"must be {self.expect}, got {value!r}", param, ctx)
        return x


POSITIVE_FLOAT = FiniteFloat(0.0, minimum_open=True, expect="a positive finite number")
NON_NEGATIVE_FLOAT = FiniteFloat(0.0, expect="a finite number, zero or more")
FRACTION = FiniteFloat(0.0, minimum_open=True, maximum=1.0, expect="a fraction in (0, 1], e.g. 0.4")


class NonEmptyText(click.ParamType):
    """A name or a list: not empty, not only spaces (an empty `--gpu ''` is a mistake, never 'unset')."""

    name = "text"

    def __init__(self, what: str = "a name") -> None:
        self.what = what

    def convert(self, value, param, ctx):
        text = str(value)
        if not text.strip():
            self.fail(f"must be {self.what}, got an empty string", param, ctx)
        if "\0" in text:
            self.fail("must not contain a NUL character", param, ctx)
        return text.strip()


class FilePath(click.ParamType):
    """A path to read or to write: non-empty, no NUL.  Reading and writing check the rest (memplan.userfiles,
    memplan.report.files), where the file system can be asked."""

    name = "path"

    def convert(self, value, param, ctx):
        text = str(value)
        if not text.strip():
            self.fail("must be a file path, got an empty string", param, ctx)
        if "\0" in text:
            self.fail("must not contain a NUL character", param, ctx)
        return text


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
MAX_SIZE_BYTES = 2**60  # 1 EiB: above any single machine's memory or disk


class ByteSize(click.ParamType):
    """'80GB' (10^9), '80GiB' (2^30), '512MiB', '1024' -> bytes (int); positive and at most 1 EiB."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            m = _SIZE.match(str(value))
            if not m or m.group(2).lower() not in _SIZE_UNITS:
                self.fail(f"must be a size such as 80GB, 80GiB or 512MiB, got {value!r}", param, ctx)
            x = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
            if not math.isfinite(x) or x > MAX_SIZE_BYTES:
                self.fail(f"{value!r} is above the bound 1 EiB (2^60 bytes)", param, ctx)
            n = int(round(x))
        if n <= 0:
            self.fail(f"must be a positive size, got {value!r}", param, ctx)
        if n > MAX_SIZE_BYTES:
            self.fail(f"{value!r} is above the bound 1 EiB (2^60 bytes)", param, ctx)
        return n


NAME = NonEmptyText()
PATH = FilePath()
SIZE = ByteSize()
