"""torch and transformers, imported for the commands that need them: one line saying how to install them when
they are missing (or why the installed one does not import), never a traceback.  memplan/measure/ is the only
place that imports them (tests/test_import_graph.py); the CLI's pre-flight checks come here.
"""
from __future__ import annotations

from memplan.errors import MemplanError

CUDA_BUILD_HINT = ("install a CUDA build of torch, e.g. `pip install torch --index-url "
                   "https://download.pytorch.org/whl/cu128` (pick the CUDA version your driver supports at "
                   "https://pytorch.org/get-started/locally/)")
TORCH_HINT = ("`pip install torch` (a CPU-only build: `pip install torch --index-url "
              "https://download.pytorch.org/whl/cpu`), then `pip install 'memplan[profile]'`")
HF_HINT = "`pip install 'memplan[hf]'` (or use --model-source reference)"


def need_torch(command: str):
    """torch, imported; or one line saying how to install it (or why the installed one does not import)."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise MemplanError(f"{command} needs torch, which is not installed: {TORCH_HINT}") from None
        raise MemplanError(f"{command}: torch is installed but does not import (missing {exc.name!r}); "
                           f"reinstall it: {TORCH_HINT}") from None
    except ImportError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemplanError(f"{command}: torch is installed but does not import ({first}); reinstall it: "
                           f"{TORCH_HINT}") from None
    return torch


def need_transformers(command: str) -> None:
    try:
        import transformers  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "transformers":
            raise MemplanError(f"{command} --model-source hf needs transformers, which is not installed: "
                               f"{HF_HINT}") from None
        raise MemplanError(f"{command}: transformers does not import (missing {exc.name!r}): {HF_HINT}") from None
    except ImportError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemplanError(f"{command}: transformers does not import ({first}): {HF_HINT}") from None


def cuda_device_name() -> str:
    """The name of the visible CUDA device (torch imported here)."""
    import torch

    return torch.cuda.get_device_name()


def __getattr__(name: str):
    """`from memplan.measure.libraries import transformers` (or torch): the module, imported on first use."""
    if name == "torch":
        import torch

        return torch
    if name == "transformers":
        import transformers

        return transformers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
