"""The optimizers a measured step can use, with the torch.optim implementation (for-loop, foreach, fused) forced
and recorded: foreach/fused keep per-step temporaries that the for-loop does not, so the analytic model needs it."""
from __future__ import annotations

import importlib.util

import torch

from memplan.errors import MemplanError

OPTIMIZER_IMPLS = ("for-loop", "foreach", "fused")


# ---------------------------------------------------------------------------------------------------------
def default_optimizer_impl(params: list[torch.Tensor]) -> str:
    """What torch.optim picks when neither foreach nor fused is given (torch/optim/optimizer.py
    _default_to_fused_or_foreach): foreach on cuda, the for-loop on cpu (and for fake tensors)."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    _, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    return "foreach" if foreach else "for-loop"


def make_optimizer(name: str, params: list[torch.Tensor], impl: str) -> torch.optim.Optimizer:
    """torch.optim (or the package that provides it) with the implementation `impl` forced."""
    if impl not in OPTIMIZER_IMPLS:
        raise MemplanError(f"optimizer implementation {impl!r}: use one of {', '.join(OPTIMIZER_IMPLS)}")
    flags = {"foreach": impl == "foreach", "fused": impl == "fused"}
    if name in ("adamw", "adam"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(params, lr=1e-4, **flags)
    if name in ("sgd", "sgd-momentum"):
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9 if name == "sgd-momentum" else 0.0, **flags)
    if impl != "for-loop":
        raise MemplanError(f"optimizer {name} has only a for-loop implementation; drop --optimizer-impl {impl}")
    if name == "adafactor":
        try:
            from transformers.optimization import Adafactor
        except ImportError:
            raise MemplanError("--optimizer adafactor needs transformers (transformers.Adafactor)") from None
        # beta1=None: no first moment (Shazeer & Stern 2018 sec. 6); fixed lr, no parameter scaling
        return Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False, beta1=None)
    if name == "lion":
        if importlib.util.find_spec("lion_pytorch") is None:
            raise MemplanError("--optimizer lion needs the lion-pytorch package (`pip install lion-pytorch`)")
        from lion_pytorch import Lion

        return Lion(params, lr=1e-4)
    if name == "adamw-8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MemplanError("--optimizer adamw-8bit needs bitsandbytes (`pip install bitsandbytes`, cuda only)")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-4)
    raise MemplanError(f"no measured implementation of optimizer {name!r}")
