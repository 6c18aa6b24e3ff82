"""Mixed precision written out, so its memory behaviour is explicit: fp32 master weights over a half-precision
model (with or without Megatron's persistent fp32 main_grad) and static loss scaling for fp16."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

# ---------------------------------------------------------------------------------------------------------
class MasterWeightsOptimizer:
    """Half-precision model, fp32 master weights, an inner optimizer that updates the master copy.

    Exact memory behaviour (what the analytic model must reproduce), default (`fp32_grads=False`):
    - persistent: the model's half weights (2 B/param), the fp32 master copy (4 B/param, allocated once at
      construction), the inner optimizer's fp32 states (Adam: 8 B/param, created on the first step);
    - backward: autograd accumulates half-precision grads into the model's parameters' .grad (2 B/param);
    - step(): the fp32 grads of *all* master parameters are materialized at once, before the inner step
      (`m.grad = p.grad.float()` for every parameter: 4 B/param transient, created in the optimizer_step phase
      and counted as temporaries), then the inner optimizer runs (its own foreach/for-loop temporaries on top),
      then the master values are copied back into the half weights in place (copy_ casts in-kernel: no
      temporary), then the fp32 grads are dropped (m.grad = None) -- one param at a time, after all updates.
      So the optimizer_step peak is: half weights + half grads + master + states + 4 B/param fp32 grads +
      the inner optimizer's temporaries.
    - zero_grad(set_to_none=True) drops the half grads.
    This is the plain scheme of the ZeRO paper's "2+2+12 bytes per parameter" (Rajbhandari et al. 2020, sec. 3.1)
    as written without fused kernels.

    `fp32_grads=True` (recipe gradients=fp32, Megatron-LM's accumulate_allreduce_grads_in_fp32, "18 B/param"):
    a persistent fp32 `main_grad` per parameter (4 B/param, allocated at construction, counted as gradients);
    a post-accumulate-grad hook adds each half grad into it and frees the half grad at once, so half grads
    exist only transiently during backward; step() hands main_grad to the inner optimizer without a copy;
    zero_grad zeroes main_grad in place (it is never freed).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], make_inner: Callable[[list], torch.optim.Optimizer],
                 scaler: "LossScaler | None" = None, fp32_grads: bool = False) -> None:
        self.params = [p for p in params if p.requires_grad]
        # detach().float() allocates the fp32 copy; clone() is redundant for half inputs and would double it
        self.master = [p.detach().float().requires_grad_(True) for p in self.params]
        self.inner = make_inner(self.master)
        self.scaler = scaler
        self.state = self.inner.state
        self.main_grads: list[torch.Tensor] = []
        if fp32_grads:
            self.main_grads = [torch.zeros_like(m) for m in self.master]
            for p, g in zip(self.params, self.main_grads):
                p.register_post_accumulate_grad_hook(self._accumulate_into(g))

    @staticmethod
    def _accumulate_into(main_grad: torch.Tensor):
        def hook(p: torch.Tensor) -> None:
            main_grad.add_(p.grad)  # add_ casts bf16 -> fp32 in-kernel: no temporary
            p.grad = None
        return hook

    def step(self) -> None:
        if self.main_grads:
            if self.scaler is not None:
                self.scaler.unscale_(self.main_grads)
            for m, g in zip(self.master, self.main_grads):
                m.grad = g
        else:
            if self.scaler is not None:
                self.scaler.unscale_([p.grad for p in self.params if p.grad is not None])
            for p, m in zip(self.params, self.master):
                m.grad = None if p.grad is None else p.grad.float()
        self.inner.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)
        for m in self.master:
            m.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.main_grads:
            g.zero_()
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


class LossScaler:
    """Static loss scaling for fp16 (Micikevicius et al. 2018, sec. 3.2): loss * S before backward, grads / S
    before the update, with torch's fused non-finite check (torch._amp_foreach_non_finite_check_and_unscale_,
    what torch.amp.GradScaler calls).  A step is never skipped here: this measures memory, and skipping would
    drop the optimizer step from the measurement; an overflow is recorded in `found_inf` instead.
    """

    def __init__(self, scale: float = 2.0 ** 16) -> None:
        self.scale = scale
        self.found_inf = False

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    def unscale_(self, grads: list[torch.Tensor]) -> None:
        if not grads:
            return
        found = torch.zeros(1, device=grads[0].device)
        inv = torch.full((1,), 1.0 / self.scale, device=grads[0].device)
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for group in by_dtype.values():
            torch._amp_foreach_non_finite_check_and_unscale_(group, found, inv)
        if not _is_fake(found):  # a fake tensor has no value to read
            self.found_inf = self.found_inf or bool(found.item())


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


class ScaledOptimizer:
    """An optimizer over fp32 weights whose grads are loss-scaled (amp-fp16): unscale, then step."""

    def __init__(self, inner: torch.optim.Optimizer, scaler: LossScaler) -> None:
        self.inner, self.scaler, self.state = inner, scaler, inner.state

    def step(self) -> None:
        self.scaler.unscale_([p.grad for g in self.inner.param_groups for p in g["params"] if p.grad is not None])
        self.inner.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)
