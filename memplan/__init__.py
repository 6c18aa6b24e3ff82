"""memplan: memory and throughput planning for training and serving transformer models.

The Python API (`memplan.estimate`, ...) lives in memplan.api; importing memplan never imports torch.
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import memplan` stays cheap and torch-free.
    from memplan import api

    if hasattr(api, name):
        return getattr(api, name)
    raise AttributeError(f"module 'memplan' has no attribute {name!r}")
