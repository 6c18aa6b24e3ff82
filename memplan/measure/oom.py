"""Is this exception an out-of-memory?  On every device and at every phase, running out is a result, not a crash.

torch raises torch.OutOfMemoryError (a RuntimeError) for CUDA; the CPU allocator raises a plain RuntimeError
("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes", c10/core/impl/alloc_cpu.cpp);
Python itself raises MemoryError (e.g. under `prlimit --as`).
"""
from __future__ import annotations

_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(m in text for m in _MESSAGES)
    return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
