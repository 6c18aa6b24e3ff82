"""A pydantic ValidationError as one plain line: which field, what it must be, what it was.

pydantic's own text ("3 validation errors for MeasuredStep", "Input should be greater than 0 [type=greater_than,
input_value=...]", a URL) is written for the programmer of the model; a user who gave a bad file or flag needs
the field as they wrote it, the expectation in words, and the value they gave.  Only the first error is shown,
with a count of the others.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from memplan.userfiles import format_json_value

if TYPE_CHECKING:  # pydantic is not imported at run time for this: the error object is used as it comes
    from pydantic import ValidationError

# pydantic adds the member of a union (or the validator kind) to `loc`: not a field the user wrote
_UNION_TAG = re.compile(r"^(?:function-\w+|constrained-\w+|lax-\w+|strict-\w+|json-or-python|tagged-union)\[.*\]$"
                        r"|^(?:int|float|str|bool|none|list|dict|tuple|set|bytes|decimal|is-instance\[.*\])$")


def _expected(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    words = {
        "int_type": "must be a whole number", "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number", "float_type": "must be a number",
        "float_parsing": "must be a number", "finite_number": "must be a finite number",
        "bool_type": "must be true or false", "bool_parsing": "must be true or false",
        "string_type": "must be a string", "dict_type": "must be an object", "model_type": "must be an object",
        "model_attributes_type": "must be an object", "list_type": "must be a list", "tuple_type": "must be a list",
        "none_required": "must be null", "extra_forbidden": "is not a known field (a typo?)",
        "is_instance_of": "has the wrong type",
    }
    if kind in words:
        return words[kind]
    if kind == "greater_than":
        return "must be a positive number" if ctx.get("gt") == 0 else f"must be greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return "must be zero or more" if ctx.get("ge") == 0 else f"must be at least {ctx.get('ge')}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '?')}"
    if kind in ("too_short", "string_too_short"):
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} items"
    if kind in ("too_long", "string_too_long"):
        return f"must have at most {ctx.get('max_length')} items"
    msg = str(err.get("msg", "is invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    # a custom error (memplan.results.numbers) already reads "must be ..."; anything else is quoted as is
    return msg if msg.startswith(("must ", "is ", "should ")) else f"is invalid: {msg}"


def field_path(loc: tuple) -> str:
    """('cuda', 'achieved_tflops') -> 'cuda.achieved_tflops'; ('phases', 0, 'bytes') -> 'phases[0].bytes'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(str(part)):
            out += f".{part}" if out else str(part)
    return out


def field_error_line(exc: "ValidationError", where: str = "", prefix: str = "") -> str:
    """'FILE: field cuda.achieved_tflops must be a positive finite number, got NaN' (+ how many more).

    `where` names the source ('--measured file run.json'); `prefix` is prepended to the field path (e.g. 'measured'
    when a sub-object was validated alone).
    """
    errors = exc.errors()
    if not errors:
        return f"{where + ': ' if where else ''}invalid input"
    err = errors[0]
    path = field_path(tuple(err.get("loc", ())))
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    head = f"{where}: " if where else ""
    if err["type"] == "missing":
        line = f"{head}field {path} is missing"
    else:
        subject = f"field {path}" if path else "the value"
        line = f"{head}{subject} {_expected(err)}"
        if err["type"] != "extra_forbidden" and "input" in err:
            line += f", got {format_json_value(err['input'])}"
    more = len(errors) - 1
    if more:
        line += f" ({more} more field{'s' if more > 1 else ''} also invalid)"
    return line


def expected_words(err: dict[str, Any]) -> str:
    """What one pydantic error dict says the value must be, in words ('must be at most 3')."""
    return _expected(err)


def input_error(exc: "ValidationError"):
    """A ValidationError of one option model (Layout, Workload, ...) as the typed error naming the field: an
    InputError whose text is the flag's ('--zero must be at most 3, got 5', as memplan.setups.one_line words it)
    and whose keyword_message() is the API's ('zero must be at most 3, got 5').  A nested or unnamed field is a
    plain MemplanError with the one line."""
    from memplan.errors import InputError, MemplanError

    errors = exc.errors()
    loc = tuple(p for p in (errors[0].get("loc", ()) if errors else ()) if not _UNION_TAG.match(str(p)))
    line = field_error_line(exc)
    if len(loc) != 1 or not isinstance(loc[0], str) or not line.startswith(f"field {loc[0]} "):
        return MemplanError(line)
    return InputError(loc[0], line[len(f"field {loc[0]} "):])
