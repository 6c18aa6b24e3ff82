"""memplan: memory and throughput planning for training and serving transformer models.

The Python API (`memplan.estimate`, `memplan.build_setup`, ...) lives in memplan.api and is loaded lazily, so
`import memplan` stays cheap and never imports torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = ("estimate", "build_setup", "estimate_inference", "compare", "time", "plan", "profile")


def __getattr__(name: str):
    if name in _API:
        api = importlib.import_module("memplan.api")
        if hasattr(api, name):
            return getattr(api, name)
    raise AttributeError(f"module 'memplan' has no attribute {name!r}")
