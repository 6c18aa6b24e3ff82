"""Ctrl-C: `memplan: aborted` on stderr and exit status 130, wherever it lands -- never a traceback.

Python's default SIGINT handler raises KeyboardInterrupt at whatever bytecode runs next: inside `import torch`,
inside a `__del__` or a weakref callback (printed as "Exception ignored in ..." with a traceback), inside an
`except` clause that is printing another error.  No try/except placed in our code covers all of those, so the
program (memplan.cli.run, and nothing imported as a library) replaces the handler with one that never raises:
it runs the registered clean-ups (temporary files of a write in progress), writes one line, and leaves with
os._exit(130) -- 128 + SIGINT, the shell's convention.  This module imports only `os` and the C signal module, so
the handler is in place before click, pydantic or torch start importing.  (Python's own start-up -- site and
.pth files -- runs before any memplan code; an interrupt there is Python's to report.)
"""
from __future__ import annotations

import os

try:  # the C module: `signal` itself imports enum, which is not loaded yet this early in a start-up
    import _signal as _sig
except ImportError:  # pragma: no cover - other Python implementations
    import signal as _sig

SIGINT = 2
EXIT_ABORTED = 128 + SIGINT  # 130
MESSAGE = b"memplan: aborted\n"

_cleanups: dict = {}
_next_key = [0]


def _abort(signum, frame) -> None:  # noqa: ARG001 - the signal-handler signature
    for fn in list(_cleanups.values()):
        try:
            fn()
        except BaseException:  # a clean-up that fails must not turn the abort into a traceback
            pass
    try:
        os.write(2, MESSAGE)
    finally:
        os._exit(EXIT_ABORTED)


def install() -> None:
    """Make SIGINT abort quietly (from the main thread; elsewhere Python refuses, and nothing changes)."""
    try:
        _sig.signal(SIGINT, _abort)
    except ValueError:
        pass


def installed() -> bool:
    return _sig.getsignal(SIGINT) is _abort


class on_abort:  # noqa: N801 - used as a context manager, like contextlib's
    """`with on_abort(cleanup): ...` runs `cleanup` if the program is aborted inside the block (the block's own
    `finally` covers every other exit)."""

    def __init__(self, cleanup) -> None:
        self.cleanup = cleanup
        _next_key[0] += 1
        self.key = _next_key[0]

    def __enter__(self) -> None:
        _cleanups[self.key] = self.cleanup

    def __exit__(self, *exc) -> None:
        _cleanups.pop(self.key, None)
