"""Run one case in-process through memplan.cli.main, in its own folder, with a time limit.

In-process is what makes a few hundred cases take seconds (no interpreter start, imports warm).  The time limit
is the process's CPU time (SIGPROF, with a looser wall-clock SIGALRM for a case blocked without running) from the
main thread (the exception it raises carries the traceback of where the command hung); off the main thread a
watchdog thread interrupts it instead, by the wall clock.  An exception that escapes `main` is what a user would
see as a traceback.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.cases import Case
from tests.fuzz.files import materialize

MEMPLAN = Path(__file__).resolve().parents[2] / "memplan"


class CaseTimeout(BaseException):
    """Raised in the command when its time is up (a BaseException: `except Exception` in the code must not
    swallow it)."""


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False
    escaped: BaseException | None = None  # an exception out of main(): a traceback for the user
    trace: str = ""

    def where(self) -> str:
        """The innermost memplan source line of the escaped exception (or of the hang), e.g. perf/step.py:120."""
        return innermost_memplan_frame(self.escaped) or "?"


def innermost_memplan_frame(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            rel = Path(frame.filename).resolve().relative_to(MEMPLAN)
        except ValueError:
            continue
        found = f"memplan/{rel.as_posix()}:{frame.lineno}"
    return found


def run_argv(argv: list[str], timeout: float) -> Outcome:
    from memplan.cli import main

    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code, escaped, timed_out = None, None, False
    with _time_limit(timeout) as expired:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(argv))
        except CaseTimeout as exc:
            escaped, timed_out = exc, True
        except BaseException as exc:  # noqa: BLE001 - anything out of main() is a finding
            escaped = exc
    seconds = time.perf_counter() - start
    if expired() and not timed_out:  # the watchdog's KeyboardInterrupt came back as "aborted" (130)
        timed_out = True
    trace = "".join(traceback.format_exception(escaped)) if escaped is not None else ""
    return Outcome(code=code, out=out.getvalue(), err=err.getvalue(), seconds=seconds, timed_out=timed_out,
                   escaped=None if timed_out and escaped is None else escaped, trace=trace)


WALL_FACTOR = 6  # a case may wait this many times its CPU limit in wall time (a loaded machine) before it hangs


@contextlib.contextmanager
def _time_limit(seconds: float):
    fired = threading.Event()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):  # noqa: ARG001
            fired.set()
            raise CaseTimeout(f"no answer within {seconds:g} s")

        # the limit is this process's CPU time (SIGPROF): a busy loop is caught at `seconds` however loaded the
        # machine is (a test run sharing two cores made a 2.4 s answer take 10 s of wall time); a case blocked
        # without using CPU is caught by the wall clock at WALL_FACTOR x `seconds`
        previous = {sig: signal.signal(sig, on_alarm) for sig in (signal.SIGALRM, signal.SIGPROF)}
        signal.setitimer(signal.ITIMER_PROF, seconds)
        signal.setitimer(signal.ITIMER_REAL, seconds * WALL_FACTOR)
        try:
            yield fired.is_set
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return
    import _thread

    done = threading.Event()

    def watchdog():
        if not done.wait(seconds):
            fired.set()
            _thread.interrupt_main()

    t = threading.Thread(target=watchdog, daemon=True)
    t.start()
    try:
        yield fired.is_set
    finally:
        done.set()


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder` (not following links): regular files -> their first bytes, others -> a kind."""
    found: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                found[rel] = "symlink"
            elif p.is_dir():
                found[rel] = "folder"
            elif p.is_file():
                with open(p, "rb") as fh:
                    found[rel] = fh.read(4096)
            else:
                found[rel] = "special"
    return found


@dataclass
class CaseRun:
    case: Case
    folder: Path
    outcome: Outcome
    before: dict
    after: dict
    rerun: Callable[[list[str]], Outcome]


def run_case(case: Case, root: Path) -> CaseRun:
    folder = root / case.id
    folder.mkdir(parents=True)
    for name, spec in case.files.items():
        materialize(folder, name, spec)
    before = listing(folder)

    def in_folder(argv: list[str]) -> Outcome:
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            return run_argv(argv, case.timeout)
        finally:
            os.chdir(cwd)

    outcome = in_folder(case.args)
    return CaseRun(case=case, folder=folder, outcome=outcome, before=before, after=listing(folder), rerun=in_folder)
