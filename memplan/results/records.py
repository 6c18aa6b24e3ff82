"""Reading a `memplan profile --out` record back from a user's file, validated field by field.

`--calibration` (estimate) and `--measured` (time, plan) take either the whole record (ProfileRecord: the
measurement beside its estimate) or the bare MeasuredStep inside it; only the measurement is read.
`--calibration` needs the whole measurement (its setup is re-estimated); `--measured` uses the step's timing
only, so a hand-written `{"cuda": {"achieved_tflops": 600}}` is enough and only those fields are checked.  The file is read with
memplan.userfiles (bounded, regular files only, UTF-8, depth-limited) and every field is checked by the record
models' own types (memplan.results.numbers): the first bad field is the one-line error.
"""
from __future__ import annotations

import os

from pydantic import BaseModel, ValidationError

from memplan.errors import MemplanError
from memplan.field_errors import field_error_line
from memplan.results.numbers import Count, PositiveFinite
from memplan.results.profile import MeasuredStep
from memplan.userfiles import describe, first_non_finite, format_json_value, read_user_json

RECORD_HINT = "expected a `memplan profile --out` record"
_RECORD_OBJECT = "an object (a `memplan profile --out` record)"


def load_measured_step(path: str | os.PathLike, what: str = "") -> MeasuredStep:
    """The MeasuredStep of a profile record file (or of a bare MeasuredStep file)."""
    where = describe(path, what)
    data = read_user_json(path, what, allow_non_finite=True, expected=_RECORD_OBJECT)  # types check numbers
    # only the measurement is used: the rest of a record (its estimate, host, time) is not checked
    inner, prefix = (data["measured"], "measured") if "measured" in data else (data, "")
    try:
        step = MeasuredStep.model_validate(inner)
    except ValidationError as exc:
        line = field_error_line(exc, where, prefix)
        if _looks_like_something_else(exc):
            line += f" ({RECORD_HINT})"
        raise MemplanError(line) from None
    _refuse_non_finite(data, where)
    return step


def _refuse_non_finite(data, where: str) -> None:
    # a NaN in a field without a number type of its own (the setup's floats, the estimate beside it)
    bad = first_non_finite(data.get("measured", data))
    if bad is not None:
        raise MemplanError(f"{where}: field {bad[0]} is {format_json_value(bad[1])}; give a finite number")


def _looks_like_something_else(exc: ValidationError) -> bool:
    # most required fields missing: not a damaged record but another kind of file
    return sum(e["type"] == "missing" for e in exc.errors()) >= 5


class CudaTiming(BaseModel):
    """The part of CudaInfo that a time estimate uses (other fields are ignored)."""

    step_seconds: PositiveFinite | None = None
    flops_per_step: Count | None = None
    achieved_tflops: PositiveFinite | None = None


class TimedStep(BaseModel):
    """The part of a MeasuredStep that a time estimate uses."""

    device: str | None = None
    cuda: CudaTiming | None = None
    oom: bool = False


class _TimedRecord(BaseModel):
    measured: TimedStep


def load_timing(path: str | os.PathLike, what: str = "") -> TimedStep:
    """The timing of a profile record file (or of a bare MeasuredStep file), its fields checked."""
    data = read_user_json(path, what, allow_non_finite=True, expected=_RECORD_OBJECT)  # types check numbers
    try:
        step = _TimedRecord.model_validate(data).measured if "measured" in data else TimedStep.model_validate(data)
    except ValidationError as exc:
        raise MemplanError(field_error_line(exc, describe(path, what))) from None
    return step
