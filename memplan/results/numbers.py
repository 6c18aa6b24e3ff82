"""Number fields of result records that are read back from users' files (`--calibration`, `--measured`).

A record is data a user can edit, truncate or hand-write; a NaN step time or a negative TFLOP/s would otherwise
flow into a "time: nan days" or "cost: $-103" answer.  Each type says in its error what it must be, so
memplan.field_errors prints "field cuda.achieved_tflops must be a positive finite number, got NaN".
"""
from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError


def _no_bool(v):
    # JSON true/false is not a number, although Python's bool is an int
    if isinstance(v, bool):
        raise PydanticCustomError("number_type", "must be a number, not true/false")
    return v


def _check(test, message: str):
    def check(v):
        if not test(v):
            raise PydanticCustomError("number_range", message)
        return v
    return check


PositiveFinite = Annotated[float, BeforeValidator(_no_bool),
                           AfterValidator(_check(lambda v: math.isfinite(v) and v > 0,
                                                 "must be a positive finite number"))]
NonNegativeFinite = Annotated[float, BeforeValidator(_no_bool),
                              AfterValidator(_check(lambda v: math.isfinite(v) and v >= 0,
                                                    "must be a finite number, zero or more"))]
Finite = Annotated[float, BeforeValidator(_no_bool),
                   AfterValidator(_check(math.isfinite, "must be a finite number"))]
ByteCount = Annotated[int, BeforeValidator(_no_bool),
                      AfterValidator(_check(lambda v: v >= 0, "must be a whole number of bytes, zero or more"))]
Count = Annotated[int, BeforeValidator(_no_bool),
                  AfterValidator(_check(lambda v: v >= 0, "must be a whole number, zero or more"))]
PositiveCount = Annotated[int, BeforeValidator(_no_bool),
                          AfterValidator(_check(lambda v: v >= 1, "must be a whole number, 1 or more"))]
