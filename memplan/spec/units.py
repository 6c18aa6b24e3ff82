"""Units: parsing parameter counts and sizes, formatting bytes.

Bytes are integers everywhere inside memplan.  Tables show GiB (2**30) by default and GB (10**9) with
`--units GB`; the unit is always printed next to the number.
"""
from __future__ import annotations

import math
import re
from enum import Enum

from memplan.errors import MemplanError


class Units(str, Enum):
    GiB = "GiB"
    GB = "GB"

    @property
    def bytes(self) -> int:
        return 2**30 if self is Units.GiB else 10**9


MAX_PARAMETERS = 1e15  # 1000T: beyond any model trained or planned; larger input is a typo
_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str | int | float) -> int:
    """'7B' -> 7_000_000_000, '124M', '350m', '1.3e9', '70000000000'. Decimal suffixes (k=1e3, M=1e6, B=1e9, T=1e12)."""
    if isinstance(text, bool):
        raise MemplanError(f"not a parameter count: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _COUNT_RE.match(str(text))
        if not m:
            raise MemplanError(
                f"cannot parse {text!r} as a parameter count; use e.g. 7B, 7.5B, 124M, 1.3e9 or 70000000000"
            )
        value = float(m.group(1)) * _COUNT_SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise MemplanError(f"parameter count must be a positive number, got {text!r}")
    if value > MAX_PARAMETERS:
        raise MemplanError(f"parameter count {text!r} is above {MAX_PARAMETERS:.0e} (1000T); check the suffix")
    return int(round(value))


_SIZE_UNITS = {
    "b": 1, "": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int) -> int:
    """'80GB' -> 80e9, '80GiB' -> 80*2**30, '1024' -> 1024 bytes."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        m = _SIZE_RE.match(str(text))
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise MemplanError(f"cannot parse {text!r} as a size; use e.g. 80GB, 80GiB or 512MiB")
        value, unit = float(m.group(1)), m.group(2).lower()
    if value <= 0:
        raise MemplanError(f"size must be positive, got {text!r}")
    return int(round(value * _SIZE_UNITS[unit]))


def to_units(nbytes: float, units: Units = Units.GiB) -> float:
    return nbytes / units.bytes


SMALLER = {Units.GiB: ((2**20, "MiB"), (2**10, "KiB")), Units.GB: ((10**6, "MB"), (10**3, "KB"))}


def format_bytes(nbytes: float | None, units: Units = Units.GiB, digits: int = 2) -> str:
    """Number in the chosen unit, unit named: '12.55 GiB'.  Below 0.1 of the unit, the next smaller unit of the
    same kind ('12.2 MiB', '4 KiB'; '1.0 MB', '4 KB' with GB), never scientific notation."""
    if nbytes is None:
        return "-"
    v = nbytes / units.bytes
    if v != 0 and abs(v) < 0.1:
        for size, name in SMALLER[units]:
            w = nbytes / size
            if abs(w) >= 1 or name in ("KiB", "KB"):
                if abs(w) < 1:
                    return f"{nbytes:,.0f} B"
                return f"{w:,.0f} {name}" if abs(w) >= 100 or name in ("KiB", "KB") else f"{w:,.1f} {name}"
    return f"{v:,.{digits}f} {units.value}"


def format_number(nbytes: float, units: Units = Units.GiB, digits: int = 2) -> str:
    """The number alone, in the table's unit (a column headed by it): '12.55', '<0.01' for a small non-zero value."""
    v = nbytes / units.bytes
    if v != 0 and abs(v) < 10 ** -digits:
        return f"<{10 ** -digits:.{digits}f}" if v > 0 else f"-<{10 ** -digits:.{digits}f}"
    return f"{v:,.{digits}f}"


def format_count(n: int | float) -> str:
    """6738415616 -> '6.74B'."""
    for div, suf in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suf}" if n / div < 100 else f"{n / div:.0f}{suf}"
    return str(int(n))
