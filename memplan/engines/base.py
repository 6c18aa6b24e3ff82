"""What every training engine module says about itself: a name, the one-line convention shown with an estimate,
and the sources (file and version) its numbers come from."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConventions:
    name: str
    convention: str  # one line, shown with every estimate that uses this engine
    sources: tuple[str, ...] = ()
