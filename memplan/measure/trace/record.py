"""One traced training step (forward, loss, backward; no optimizer), storage by storage, with where each storage
was made, who saved it for backward, and when it died.

What is recorded, and how:
- every storage an op returns (a TorchDispatchMode, as memplan/measure/tracker.py: one storage counted once, views
  and in-place results add nothing; freed when its storage object dies, a weakref callback);
- where it was made: the region (embedding, layer i, head; from module forward hooks), the module path inside it
  and the aten op;
- who saved it: torch.autograd.graph.saved_tensors_hooks sees every tensor an autograd node saves (the saving op
  is the last op dispatched, the region the one running); a storage saved by two layers (rotary cos/sin) or by
  the embeddings is model-level;
- the windows the estimate's timeline looks at: forward until the LM head's output, the loss, the head's backward,
  each layer's backward (from the gradient of its output to the gradient of its input: tensor hooks), and the
  parameter gradients as autograd accumulates them.
Tensors alive before the step (weights, buffers, the batch) are registered and never counted as activations.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only


@dataclass(eq=False)
class Storage:
    """One storage made during the step."""

    index: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]  # of the tensor whose op made it
    op: str
    region: str  # "embedding", "layer <i>", "head"
    module: str  # module path inside the region ("self_attn.q_proj"), "" at the region's top
    phase: str  # forward | loss | backward
    born: int
    died: int | None = None
    saved_by: set[str] = field(default_factory=set)  # regions whose autograd nodes saved it
    saver: str = ""  # "op @ module" of the first node that saved it
    grad_of: str = ""  # parameter name, when it became a .grad
    layer_inputs: set[int] = field(default_factory=set)  # layers it was passed to as hidden states
    tags: set[str] = field(default_factory=set)  # from the kernel emulation (dropout, sdpa, ...)
    window: str = ""  # backward: the innermost module whose backward ran when it was made
    numel: int = 0

    def alive_at(self, t: int) -> bool:
        return self.born <= t and (self.died is None or self.died > t)


@dataclass
class Recording:
    """A traced step: its storages and the moments that bound its windows (indices into the event clock)."""

    storages: list[Storage]
    n_layers: int
    marks: dict[str, int]  # forward_end, loss_end (= backward start), backward_end
    layer_backward: dict[int, tuple[int, int]]  # layer -> (start, end) of its backward
    layer_forward: dict[int, tuple[int, int]]
    head_forward_start: int
    clock: int
    events: list[tuple[int, int, int]]  # (time, storage index, +1 born / -1 died)
    grads: dict[str, int] = field(default_factory=dict)  # parameter name -> storage index of its .grad
    param_region: dict[str, str] = field(default_factory=dict)  # parameter name -> region
    labels: dict[int, str] = field(default_factory=dict)  # time -> label of the op at that time
    buffers: list[tuple[str, tuple[int, ...], torch.dtype]] = field(default_factory=list)  # module buffers
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def alive(self, t: int) -> list[Storage]:
        return [s for s in self.storages if s.alive_at(t)]


def layers_of(module: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the transformer layers (model.layers, transformer.h, encoder.layer, ...)."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, mod in module.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and n_layers:
            size = sum(p.numel() for p in mod.parameters())
            if best is None or size > best[0]:
                best = (size, name, mod)
    if best is None:
        raise RuntimeError(f"no ModuleList of {n_layers} layers in {type(module).__name__}")
    return best[1], best[2]


def _first_tensor(obj) -> torch.Tensor | None:
    leaves, _ = tree_flatten(obj)
    for x in leaves:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            return x
    return None


class Recorder(TorchDispatchMode):
    """Records storages and windows of one step; `with recorder:` around the step, hooks installed by `attach`."""

    def __init__(self, module: nn.Module, n_layers: int, head: nn.Module | None) -> None:
        super().__init__()
        self.module = module
        self.n_layers = n_layers
        self.head = head
        self.entries: dict = {}  # weak storage -> Storage (WeakIdKeyDictionary)
        from torch.utils.weak import WeakIdKeyDictionary

        self.entries = WeakIdKeyDictionary()
        self.persistent = WeakIdKeyDictionary()
        self.storages: list[Storage] = []
        self.events: list[tuple[int, int, int]] = []
        self.clock = 0
        self.phase = "forward"
        self.region = "embedding"
        self.module_stack: list[str] = []
        self.last_op = ""
        self.marks: dict[str, int] = {}
        self.layer_bwd: dict[int, list[int]] = {}
        self.layer_fwd: dict[int, list[int]] = {}
        self.head_forward_start = -1
        self.bwd_stack: list[str] = []  # modules whose backward is running (innermost last)
        self.grads: dict[str, int] = {}
        self.param_region: dict[str, str] = {}
        self.labels: dict[int, str] = {}
        self.tags: list[str] = []  # set by the kernel emulation while one of its ops runs
        self._handles: list = []
        self.prefix, self.layers = layers_of(module, n_layers)
        self._layer_of = {id(m): i for i, m in enumerate(self.layers)}

    # ---- registration of what exists before the step ------------------------------------------------------
    def register_persistent(self, tensors) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                try:
                    self.persistent[t.untyped_storage()] = True
                except (RuntimeError, NotImplementedError):
                    pass

    def attach(self) -> None:
        names = {id(m): n for n, m in self.module.named_modules()}
        for name, mod in self.module.named_modules():
            self._handles.append(mod.register_forward_pre_hook(self._pre(name, mod), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post(name, mod), with_kwargs=True))
        for pname, p in self.module.named_parameters():
            self.param_region[pname] = self._region_of_path(pname)
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_hook(pname)))
        del names

    def detach_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _region_of_path(self, path: str) -> str:
        pre = self.prefix + "."
        if path.startswith(pre):
            idx = path[len(pre):].split(".", 1)[0]
            if idx.isdigit():
                return f"layer {idx}"
        return "head" if self._after_layers(path) else "embedding"

    def _after_layers(self, path: str) -> bool:
        """Modules registered after the layers (final norm, LM head, MLM head) belong to the head."""
        if not hasattr(self, "_order"):
            self._order = [n for n, _ in self.module.named_modules()]
        order = self._order
        path = path.rsplit(".", 1)[0] if path not in order else path
        try:
            return order.index(path) > order.index(f"{self.prefix}.{self.n_layers - 1}")
        except ValueError:
            return False

    # ---- hooks ----------------------------------------------------------------------------------------------
    def _pre(self, name: str, mod: nn.Module):
        layer = self._layer_of.get(id(mod))

        def hook(m, args, kwargs):
            if not torch.is_grad_enabled():
                return None
            self.module_stack.append(name)
            if layer is not None and self.phase != "backward":
                self.region = f"layer {layer}"
                self.layer_fwd.setdefault(layer, [self.clock, self.clock])[0] = self.clock
                x = args[0] if args else kwargs.get("hidden_states")
                if isinstance(x, torch.Tensor):
                    st = self._storage(x)
                    if st is not None and st in self.entries:
                        self.entries[st].layer_inputs.add(layer)
                    if x.requires_grad and self.phase in ("forward", "loss"):
                        x.register_hook(self._mark_layer_bwd(layer, 1))
            if mod is self.head and self.head_forward_start < 0:
                self.head_forward_start = self.clock
            return None
        return hook

    def _post(self, name: str, mod: nn.Module):
        layer = self._layer_of.get(id(mod))
        inside = name.startswith(self.prefix + ".") or name == ""

        def hook(m, args, kwargs, output):
            if not torch.is_grad_enabled():
                return None
            if self.module_stack and self.module_stack[-1] == name:
                self.module_stack.pop()
            if layer is not None and self.phase != "backward":
                self.layer_fwd[layer][1] = self.clock
                self.region = "head" if layer == self.n_layers - 1 else self.region
                out = _first_tensor(output)
                if out is not None and self.phase in ("forward", "loss"):
                    out.register_hook(self._mark_layer_bwd(layer, 0))
            elif inside and name and self.phase in ("forward", "loss"):
                out = _first_tensor(output)
                if out is not None and out.grad_fn is not None:
                    out.register_hook(self._enter_bwd(name))
            if mod is self.head and self.phase == "forward":
                self.marks["forward_end"] = self.clock
                self.phase = "loss"
            return None
        return hook

    def _mark_layer_bwd(self, layer: int, which: int):
        def hook(grad):
            span = self.layer_bwd.setdefault(layer, [-1, -1])
            if which == 0 and span[0] < 0:
                span[0] = self.clock
            elif which == 1:
                span[1] = self.clock
            return None
        return hook

    def _enter_bwd(self, name: str):
        def hook(grad):
            self.bwd_stack.append(name)
            return None
        return hook

    def _grad_hook(self, pname: str):
        def hook(p):
            if p.grad is None:
                return
            st = self._storage(p.grad)
            e = self.entries.get(st) if st is not None else None
            if e is not None:
                e.grad_of = pname
                self.grads[pname] = e.index
        return hook

    # ---- saved tensors ------------------------------------------------------------------------------------
    def pack(self, t: torch.Tensor):
        st = self._storage(t)
        if st is not None:
            e = self.entries.get(st)
            if e is not None:
                e.saved_by.add(self.region if self.phase != "backward" else "backward")
                if not e.saver:
                    where = self.module_stack[-1] if self.module_stack else ""
                    e.saver = f"{self.last_op} @ {where}"
        return t.detach() if t.grad_fn is not None or t.requires_grad else t

    @staticmethod
    def unpack(t):
        return t

    # ---- storages -----------------------------------------------------------------------------------------
    @staticmethod
    def _storage(t: torch.Tensor):
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            return None
        try:
            return t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None

    def _module_path(self) -> str:
        if not self.module_stack:
            return ""
        path = self.module_stack[-1]
        pre = f"{self.prefix}."
        if path.startswith(pre):
            rest = path[len(pre):].split(".", 1)
            return rest[1] if len(rest) > 1 else ""
        return path

    def _add(self, t: torch.Tensor, op: str) -> None:
        st = self._storage(t)
        if st is None or st in self.entries or st in self.persistent:
            return
        self.clock += 1
        window = self.bwd_stack[-1] if self.phase == "backward" and self.bwd_stack else ""
        e = Storage(index=len(self.storages), nbytes=int(st.nbytes()), dtype=t.dtype, shape=tuple(t.shape), op=op,
                    region=self.region, module=self._module_path() if self.phase != "backward" else window,
                    phase=self.phase, born=self.clock, tags=set(self.tags), window=window, numel=t.numel())
        self.storages.append(e)
        self.entries[st] = e
        self.labels[self.clock] = f"{op} @ {e.module}"
        self.events.append((self.clock, e.index, 1))
        weakref.finalize(st, self._free, e)

    def _free(self, e: Storage) -> None:
        self.clock += 1
        e.died = self.clock
        self.events.append((self.clock, e.index, -1))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__
        if not (getattr(func, "is_view", False) or name.split(".")[0] in ("detach", "alias", "device", "lift_fresh")):
            self.last_op = name
        tree_map_only(torch.Tensor, lambda t: self._add(t, name), out)
        return out

    # ---- the step -----------------------------------------------------------------------------------------
    def start_backward(self) -> None:
        self.marks["loss_end"] = self.clock
        self.phase = "backward"
        self.region = "backward"
        self.module_stack.clear()

    def finish(self) -> Recording:
        self.marks["backward_end"] = self.clock
        self.detach_hooks()
        spans = {i: (s[0], s[1] if s[1] >= 0 else self.clock) for i, s in self.layer_bwd.items()}
        return Recording(storages=self.storages, n_layers=self.n_layers, marks=dict(self.marks),
                         layer_backward=spans, layer_forward={i: tuple(v) for i, v in self.layer_fwd.items()},
                         head_forward_start=self.head_forward_start, clock=self.clock, events=self.events,
                         grads=dict(self.grads), param_region=dict(self.param_region), labels=dict(self.labels),
                         buffers=[(n, tuple(b.shape), b.dtype) for n, b in self.module.named_buffers()],
                         param_shapes={n: tuple(p.shape) for n, p in self.module.named_parameters()})
