"""Where a measured step is (forward, backward, optimizer, ...), told to every observer: the tracker, the CUDA
session.  Its own module, so the CUDA session (cuda.py) and the runner (runner.py) both use it without importing
each other."""
from __future__ import annotations


class _Phases:
    """Tells every observer (tracker, cuda stats) where the step is; remembers the phase for OOM reports."""

    def __init__(self, observers: list) -> None:
        self.observers = observers
        self.current: str | None = None

    def __call__(self, name: str) -> None:
        self.current = name
        for obs in self.observers:
            obs.set_phase(name)
