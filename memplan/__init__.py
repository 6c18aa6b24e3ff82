"""memplan: memory and throughput planning for training and serving transformer models.

    >>> import memplan
    >>> est = memplan.estimate("llama-2-7b", gpu="a100-80gb", gpus=8, zero=3, seq=4096)   # doctest: +SKIP
    >>> help(memplan.estimate)                                                             # doctest: +SKIP

The Python API (`memplan.estimate`, `memplan.time`, `memplan.plan`, ...) lives in memplan.api and is loaded on
first use, so `import memplan` stays cheap and never imports torch.  docs/python-api.md has the tour.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["estimate", "estimate_inference", "compare", "time", "plan", "serve", "profile", "rl", "build_setup",
           "load_setup", "save_setup", "models", "gpus", "InputError", "MemplanError"]
_ERRORS = ("InputError", "MemplanError")


def __getattr__(name: str):
    if name in _ERRORS:
        return getattr(importlib.import_module("memplan.errors"), name)
    if name in __all__:
        return getattr(importlib.import_module("memplan.api"), name)
    raise AttributeError(f"module 'memplan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})
