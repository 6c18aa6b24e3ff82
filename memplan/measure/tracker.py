"""Tensor-level memory tracking by category: a TorchDispatchMode that sees every tensor an op returns.

Accounting rules (the same on cpu, cuda and under FakeTensorMode):
- the unit is the *storage*: each live storage is counted once, with `storage.nbytes()` bytes; a view, an
  in-place result or an alias of a tracked storage adds nothing;
- a storage is freed when its Python storage object dies (a weakref callback; torch keeps one Python object per
  live storage once it has been seen, so the callback fires exactly when the storage is released);
- category of a new storage: `optimizer_step`/`zero_grad` phases and backward -> temporaries; forward and loss
  -> "forward", which at the start of backward is split: still alive -> activations (what autograd saved),
  the rest were forward temporaries and are already gone; a storage that becomes a parameter's .grad is moved
  to gradients by a post-accumulate-grad hook;
- tensors alive before tracking starts (weights, optimizer state, buffers, the batch) are registered with
  `track(tensor, category)`.
What it cannot see: allocations that bypass the dispatcher (cuDNN/cuBLAS workspaces, the allocator's rounding
and fragmentation) -- on cuda those are what torch.cuda.memory_stats() adds on top (measure/cuda.py).
Storage resizes (`resize_`) are not followed; no training step here resizes storages.
This mirrors torch.distributed._tools.mem_tracker.MemTracker (same storage/weakref scheme), which
tests/test_measure_tracker.py uses as the cross-check, but keys categories to training phases rather than modules.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

from memplan.results.profile import CATEGORIES, PhasePeak

FORWARD = "forward"  # provisional category of storages created in forward/loss, resolved at backward start
_ALL = CATEGORIES + (FORWARD,)


class _Entry:
    __slots__ = ("nbytes", "category", "__weakref__")

    def __init__(self, nbytes: int, category: str) -> None:
        self.nbytes = nbytes
        self.category = category


class StorageTracker(TorchDispatchMode):
    """Counts live tensor storages by category and records each phase's peak.

    Use: register pre-existing tensors with `track`, then `with tracker:` run the step, calling
    `set_phase(name)` at each phase boundary (`set_phase("backward")` resolves activations).
    `device_type` restricts counting to one device type ("cpu" for cpu and fake runs, "cuda" for cuda).
    """

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__()
        self.device_type = device_type
        self._entries: WeakIdKeyDictionary = WeakIdKeyDictionary()  # UntypedStorage -> _Entry
        self.current: dict[str, int] = dict.fromkeys(_ALL, 0)
        self.total = 0
        self.phase: str | None = None
        self.peak = 0
        self.peak_phase: str | None = None
        self.peak_bytes: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.phase_peaks: dict[str, tuple[int, dict[str, int]]] = {}
        self.activations_at_backward_start = 0
        self._grad_hooks: list = []
        self.timeline: list[int] = []  # total bytes after every allocation/free during the phases
        self.phase_starts: dict[str, int] = {}  # phase -> index into timeline where it starts

    # ---- registration --------------------------------------------------------------------------------
    def _storage(self, t: torch.Tensor) -> torch.UntypedStorage | None:
        if not isinstance(t, torch.Tensor) or t.device.type != self.device_type:
            return None
        if t.layout != torch.strided:  # sparse/nested tensors have no single storage; none occur in training
            return None
        try:
            return t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None

    def track(self, tensors: torch.Tensor | Iterable[torch.Tensor] | None, category: str) -> None:
        """Count `tensors` (already alive) under `category`; a storage already counted is re-categorised."""
        if tensors is None:
            return
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        for t in tensors:
            self._add(t, category, retag=True)

    def track_optimizer(self, optimizer: torch.optim.Optimizer, category: str = "optimizer_states") -> None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    self._add(value, category, retag=True)

    def watch_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Move a parameter's .grad storage to `gradients` when autograd accumulates it."""
        for p in params:
            if p.requires_grad:
                self._grad_hooks.append(p.register_post_accumulate_grad_hook(self._on_grad))

    def _on_grad(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            self._add(p.grad, "gradients", retag=True)

    def remove_hooks(self) -> None:
        for h in self._grad_hooks:
            h.remove()
        self._grad_hooks.clear()

    def _add(self, t: torch.Tensor, category: str, retag: bool = False) -> None:
        st = self._storage(t)
        if st is None:
            return
        entry = self._entries.get(st)
        if entry is not None:
            if retag and entry.category != category:
                self.current[entry.category] -= entry.nbytes
                entry.category = category
                self.current[category] += entry.nbytes
            return
        entry = _Entry(int(st.nbytes()), category)
        self._entries[st] = entry
        self.current[category] += entry.nbytes
        self.total += entry.nbytes
        # finalize holds the entry itself: the dict's own weakref may drop it first
        weakref.finalize(st, self._free, entry)
        self._update_peak()

    def _free(self, entry: _Entry) -> None:
        self.current[entry.category] -= entry.nbytes
        self.total -= entry.nbytes
        if self.phase is not None:
            self.timeline.append(self.total)

    # ---- phases ---------------------------------------------------------------------------------------
    def set_phase(self, name: str) -> None:
        if name == "backward" and self.phase in ("forward", "loss", None):
            # everything forward/loss made that is still alive is what autograd saved for backward
            self.activations_at_backward_start = self.current[FORWARD]
            self.current["activations"] += self.current[FORWARD]
            self.current[FORWARD] = 0
            for entry in list(self._entries.values()):
                if entry.category == FORWARD:
                    entry.category = "activations"
        self.phase = name
        self.phase_starts.setdefault(name, len(self.timeline))
        self.timeline.append(self.total)
        self.phase_peaks.setdefault(name, (self.total, self._snapshot()))

    def _category_for_new(self) -> str:
        return FORWARD if self.phase in ("forward", "loss") else "temporaries"

    def _snapshot(self) -> dict[str, int]:
        snap = {c: self.current[c] for c in CATEGORIES}
        # forward-phase storages not yet resolved: at a forward peak they are activations-to-be or temporaries;
        # report them as activations (saved) -- they are resolved exactly at backward start.
        snap["activations"] += self.current[FORWARD]
        return snap

    def _update_peak(self) -> None:
        if self.phase is None:
            return
        self.timeline.append(self.total)
        best = self.phase_peaks.get(self.phase)
        if best is None or self.total > best[0]:
            self.phase_peaks[self.phase] = (self.total, self._snapshot())
        if self.total > self.peak:
            self.peak = self.total
            self.peak_phase = self.phase
            self.peak_bytes = self._snapshot()

    def alive_as_peak(self, phase: str) -> None:
        """After an out-of-memory outside the measured step: report what is alive as the peak (a lower bound)."""
        self.set_phase(phase)
        self.peak, self.peak_phase, self.peak_bytes = self.total, phase, self._snapshot()

    def phase_results(self) -> list[PhasePeak]:
        return [PhasePeak(name=name, peak_bytes=peak, bytes=snap) for name, (peak, snap) in self.phase_peaks.items()]

    # ---- the dispatch hook ----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.phase is not None:
            category = self._category_for_new()
            tree_map_only(torch.Tensor, lambda t: self._add(t, category), out)
        return out


def downsample_max(values: list[int], points: int = 2000) -> tuple[list[int], float]:
    """At most `points` values, each the max of its bucket (so the peak survives); returns (values, stride)."""
    if len(values) <= points:
        return list(values), 1.0
    stride = len(values) / points
    out = [max(values[int(i * stride):max(int((i + 1) * stride), int(i * stride) + 1)]) for i in range(points)]
    return out, stride
