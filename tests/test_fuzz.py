"""The fuzz suite (issue 13, item 7): seeded bad and odd invocations of every command, in-process, each with a time
limit; every one must end in exit 2 with one `memplan: error:` line, or exit 0 with output whose invariants hold
(tests/fuzz/invariants.py).

Default: 300 cases of seed 13 (30-60 s on 2 cores).  A longer run (issue 18: 3,500 cases, 0 failures):

    MEMPLAN_FUZZ_CASES=5000 MEMPLAN_FUZZ_SEED=random pytest tests/test_fuzz.py -q
    python -m tests.fuzz --cases 5000 --seed 7        # the same cases, failures grouped by kind

A failure prints the case (arguments and the files it made) and the line that reproduces it alone.
"""
from __future__ import annotations

import collections
import os
import random

import pytest

from tests.fuzz.cases import GENERATORS, make_case
from tests.fuzz.invariants import problems
from tests.fuzz.runner import CaseRun, run_case

_seed = os.environ.get("MEMPLAN_FUZZ_SEED", "13")
SEED = random.SystemRandom().randrange(10**6) if _seed == "random" else int(_seed)
CASES = int(os.environ.get("MEMPLAN_FUZZ_CASES", "300"))

# Code being rewritten by other sessions: a finding whose traceback (or hang) ends there is reported as an expected
# failure with its place, so that it is seen but does not block; remove an entry when its rewrite lands.  (The
# time model and the planner, memplan/perf, are guarded here since issue 18: their crashes were fixed.)
OWNED_ELSEWHERE = ("memplan/measure/",)
# findings without a traceback that belong to that code: (command, a piece of the finding, why)
KNOWN_ELSEWHERE: list[tuple[str, str, str]] = []  # none left: profile's three findings were fixed


def _elsewhere(run: CaseRun, found: list[str]) -> str | None:
    where = run.outcome.where() if (run.outcome.escaped is not None or run.outcome.timed_out) else ""
    if where and where.startswith(OWNED_ELSEWHERE):
        return f"in {where}, code being rewritten elsewhere"
    if where and where != "?":
        return None  # a traceback or a hang in code this suite guards
    for command, piece, why in KNOWN_ELSEWHERE:
        if run.case.command == command and all(piece in p for p in found):
            return why
    return None


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("index", range(CASES), ids=lambda i: f"case{i:05d}")
def test_fuzz_case(index, fuzz_root):
    case = make_case(SEED, index)
    run = run_case(case, fuzz_root)
    found = problems(run)
    if not found:
        return
    report = "\n".join([case.describe(), *(f"  -> {p}" for p in found),
                        f"seed {SEED}, case {index}; alone: MEMPLAN_FUZZ_SEED={SEED} MEMPLAN_FUZZ_CASES={index + 1} "
                        f"pytest tests/test_fuzz.py -k {case.id}  (or python -m tests.fuzz --seed {SEED} --start "
                        f"{index} --cases 1 -v)"])
    owner = _elsewhere(run, found)
    if owner:
        pytest.xfail(f"{owner}\n{report}")
    pytest.fail(report, pytrace=False)


def test_a_seed_makes_the_same_cases():
    assert [make_case(5, i).args for i in range(50)] == [make_case(5, i).args for i in range(50)]
    assert [make_case(5, i).args for i in range(50)] != [make_case(6, i).args for i in range(50)]


def test_the_default_run_covers_every_command():
    counts = collections.Counter(make_case(13, i).command for i in range(300))
    assert set(counts) == {command for command, *_ in GENERATORS}
    assert min(counts.values()) >= 2
