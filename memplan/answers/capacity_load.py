"""The traffic `memplan serve` plans for: fixed lengths, a mean and a p90, or a trace file of requests.

A trace is CSV (a header naming prompt_tokens, output_tokens and optionally arrival_s) or JSONL (one object per
line with those keys).  From it: the mean and p90 of each length, the longest request, and - when arrival times
are given and no rate is - the request rate (requests - 1) / (last - first arrival).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from memplan.errors import InputError
from memplan.results.capacity import CapacityLoad

KEYS = ("prompt_tokens", "output_tokens")


def _p90(values: list[float]) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)])


def _rows(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise InputError("trace", f"must be a CSV or JSONL file, got {path!r} (no such file)")
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise InputError("trace", f"line {i} of {path} is not JSON") from None
        return rows
    return list(csv.DictReader(text.splitlines()))


def read_trace(path: str) -> tuple[list[int], list[int], list[float] | None]:
    rows = _rows(path)
    if not rows:
        raise InputError("trace", f"{path} holds no requests")
    if not all(isinstance(r, dict) and all(k in r for k in KEYS) for r in rows):
        raise InputError("trace", f"{path}: every request needs prompt_tokens and output_tokens (arrival_s "
                                  "optional)")
    try:
        prompts = [int(float(r["prompt_tokens"])) for r in rows]
        outputs = [int(float(r["output_tokens"])) for r in rows]
        arrivals = [float(r["arrival_s"]) for r in rows] if all(r.get("arrival_s") not in (None, "") for r in rows) \
            else None
    except (TypeError, ValueError):
        raise InputError("trace", f"{path}: prompt_tokens, output_tokens and arrival_s must be numbers") from None
    if min(prompts) < 1 or min(outputs) < 1:
        raise InputError("trace", f"{path}: every request needs at least 1 prompt and 1 output token")
    return prompts, outputs, arrivals


def build_load(prompt: int | None, output: int | None, prompt_p90: int | None, output_p90: int | None,
               trace: str | None, rate: float | None, concurrency: int | None, prefix_hit_rate: float | None
               ) -> CapacityLoad:
    if rate is not None and concurrency is not None:
        raise InputError("concurrency", "cannot be given with a request rate: give one (a rate in requests/s, or a "
                                        "benchmark's fixed concurrency)")
    if trace is not None:
        if prompt is not None or output is not None or prompt_p90 is not None or output_p90 is not None:
            raise InputError("trace", "gives the lengths: drop the prompt and output lengths")
        prompts, outputs, arrivals = read_trace(trace)
        n = len(prompts)
        if rate is None and concurrency is None and arrivals is not None and n > 1:
            span = max(arrivals) - min(arrivals)
            rate = (n - 1) / span if span > 0 else None
        source = f"trace {Path(trace).name}: {n:,} requests" + (", rate from its arrival times" if arrivals and
                                                               rate is not None else "")
        load = dict(prompt_mean=sum(prompts) / n, prompt_p90=_p90(prompts), output_mean=sum(outputs) / n,
                    output_p90=_p90(outputs), longest=max(p + o for p, o in zip(prompts, outputs)), source=source)
    else:
        if prompt is None or output is None:
            raise InputError("prompt" if prompt is None else "output",
                             "is needed (tokens per request), or a trace file of requests")
        pp = prompt_p90 if prompt_p90 is not None else prompt
        op = output_p90 if output_p90 is not None else output
        if pp < prompt:
            raise InputError("prompt_p90", f"must be at least the mean prompt ({prompt}), got {pp}")
        if op < output:
            raise InputError("output_p90", f"must be at least the mean output ({output}), got {op}")
        source = "fixed lengths" if (pp, op) == (prompt, output) else "mean and p90 lengths"
        # the longest request is not known from a mean and a p90: the p90 of each is taken as the long request
        load = dict(prompt_mean=float(prompt), prompt_p90=float(pp), output_mean=float(output), output_p90=float(op),
                    longest=int(pp + op), source=source)
    if rate is None and concurrency is None:
        raise InputError("rate", "is needed: requests per second (or a benchmark's fixed concurrency, or a trace "
                                 "with arrival_s)")
    return CapacityLoad(**load, rate=rate, concurrency=concurrency, prefix_hit_rate=prefix_hit_rate or 0.0)
