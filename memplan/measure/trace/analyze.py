"""From traced steps to the rows of an implementation profile, for one variant (mode, kernels, attention, ...).

The regions are those the estimate's timeline (memory/timeline.py) adds up, and each is measured so that the
timeline's sum reproduces the traced step at the moment it looks at:

- `layer` / `checkpoint`: storages alive when backward starts, attributed to the layer whose autograd nodes saved
  them (a storage saved by several layers, e.g. rotary cos/sin, is model-level: `embedding`); under full
  recompute the same storages are the checkpoint;
- `embedding`, `head`: the model-level ones, and what the final norm, LM head and loss saved;
- `forward_only`: alive at the end of the forward (after the LM head), freed before backward (logits, caches);
- transients, each at the peak moments of its window, as the difference from what the timeline already counts
  there (its reference):
    layer_forward   inside one layer's forward (as if it were the stage's last layer) and the head's forward:
                    reference = saved - head + forward_only (+ the full layer under full recompute);
    loss_forward    the loss: reference = saved + forward_only;
    loss_backward   the head's backward: reference = saved;
    layer_backward  one layer's backward: reference = saved - head, and every gradient but the layer's own
                    (+ what a recomputed layer re-materializes under full recompute);
  a storage of the reference not alive at that moment is a negative row, anything else alive a positive one.
  Candidate moments are every allocation in the window; those that are the largest for some plausible size
  (the traced config's own sizes and the probe's, several batches and sequences) are kept, each a `moment`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import torch

from memplan.measure.trace.names import role, row_name
from memplan.measure.trace.record import Recording, Storage
from memplan.measure.trace.shapes import (PREFER, PREFER_ATTENTION, Poly, ShapeError, Solver, canonical_poly,
                                          elements, evaluate)

REGIONS = ("layer", "checkpoint", "embedding", "head", "forward_only", "loss_forward", "loss_backward",
           "layer_forward", "layer_backward", "inputs")


@dataclass
class Item:
    """One storage (or its absence, sign -1) in a row of a region."""

    region: str
    kind: int | None  # layer kind index (per-layer regions), None for model-level regions
    moment: str
    name: str
    poly: Poly
    itemsize: int
    sign: int = 1
    integer: bool = False  # int64/bool storages: not split by tensor parallelism
    core: bool = False
    tags: frozenset[str] = frozenset()
    attention: bool = False  # made inside an attention block (tensor-parallel split by heads)
    detail: str = ""  # the aten detail (op, module, who saved it): `storage_name`; `name` is names.row_name's


@dataclass
class VariantRows:
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# ---------------------------------------------------------------------------------------------------------
# shapes of every storage, from the aligned probes
# ---------------------------------------------------------------------------------------------------------
def check_aligned(recs: list[Recording]) -> None:
    base = recs[0]
    for r in recs[1:]:
        if len(r.storages) != len(base.storages) or [(s.op, s.region) for s in r.storages] != \
                [(s.op, s.region) for s in base.storages]:
            raise ShapeError("the probes ran different op sequences; the trace cannot align their tensors")


class Shapes:
    """Element-count polynomial of every storage index, from its shape in each probe."""

    def __init__(self, recs: list[Recording], tables: list[list[dict[str, int]]], model_table: list[dict[str, int]],
                 attention_modules: tuple[str, ...], out_projections: tuple[str, ...],
                 learned: dict | None = None) -> None:
        """`tables[k][probe]`: base-name values of layer kind k in each probe; `model_table[probe]` for model-level
        storages (the first layer's sizes, as the estimate evaluates model-level rows).  With one probe, `learned`
        (a variant traced with several: `learned_dims()`) reads a dimension by its value in that probe."""
        self.recs = recs
        self.solvers = [Solver(t) for t in tables]
        self.model_solver = Solver(model_table)
        self.attention_modules = attention_modules
        self.out_projections = out_projections
        self.polys: dict[int, Poly] = {}
        self.learned = learned or {}

    def solver_for(self, kind: int | None) -> Solver:
        return self.model_solver if kind is None else self.solvers[kind]

    def _dim(self, kind: int | None, values: tuple[int, ...], prefer: tuple[str, ...]) -> Poly:
        if len(values) == 1:
            # what the traced variant learned: this kind and preference, else any (the same dimension in another
            # layer kind, or read with the other preference of a tie)
            table = self.solver_for(kind).tables[0]
            for key in ((kind, values[0], prefer), (kind, values[0]), (values[0],)):
                poly = self.learned.get(key)
                if poly is not None and all(n in table for m in poly for n in m) and \
                        evaluate(poly, table) == values[0]:
                    return poly
            if values[0] <= 8:
                return {(): Fraction(values[0])}
        return self.solver_for(kind).dim(values, prefer)

    def learned_dims(self) -> dict:
        """(kind, value in the first probe, preference) -> expression, for every dimension solved here."""
        out = {}
        for kind, solver in [(None, self.model_solver), *enumerate(self.solvers)]:
            for (values, prefer), poly in solver._cache.items():
                if len(values) > 1:
                    out[(kind, values[0], prefer)] = poly
                    out.setdefault((kind, values[0]), poly)
                    out.setdefault((values[0],), poly)
        return out

    def in_attention(self, module: str, op: str = "") -> bool:
        """Made between the attention's input projections and its output (where heads x head_dim is a width of its
        own): the projections' outputs, the attention core, the output projection's input."""
        if not any(module == a or module.startswith(a + ".") for a in self.attention_modules):
            return False
        base = op.split(".")[0]
        if any(module == o or module.startswith(o + ".") for o in self.out_projections):
            return base == "_to_copy"  # the output projection's input cast; its product is hidden-sized
        if module not in self.attention_modules and base == "_to_copy":
            return False  # an input projection's cast of the (hidden-sized) norm output
        return True

    def poly(self, index: int, kind: int | None) -> Poly:
        if index in self.polys:
            return self.polys[index]
        sts = [r.storages[index] for r in self.recs]
        solver = self.solver_for(kind)
        prefer = PREFER_ATTENTION if self.in_attention(sts[0].module, sts[0].op) else PREFER
        ndim = len(sts[0].shape)
        if any(len(s.shape) != ndim for s in sts):
            raise ShapeError(f"storage {index} ({sts[0].op}) changes rank between probes")
        dims = [self._dim(kind, tuple(s.shape[i] for s in sts), prefer) for i in range(ndim)]
        p = elements(dims)
        counts = [s.nbytes // max(itemsize(s.dtype), 1) for s in sts]
        if any(evaluate(p, t) != c for t, c in zip(solver.tables, counts)):
            # the op returned a view of a bigger storage (padding): decompose the storage's own size
            p = self._dim(kind, tuple(counts), prefer) if len(set(counts)) > 1 or len(counts) == 1 \
                else {(): Fraction(counts[0])}
        self.polys[index] = canonical_poly(p)
        return self.polys[index]


# ---------------------------------------------------------------------------------------------------------
# attribution
# ---------------------------------------------------------------------------------------------------------
def layer_index(region: str) -> int | None:
    return int(region.split()[1]) if region.startswith("layer ") else None


def saved_region(s: Storage) -> str:
    """Where a storage alive at backward start belongs: the one region that saved it; model-level when several
    layers (or the embeddings) saved it; the layer it was passed to, else where it was made, when none did."""
    regions = {r for r in s.saved_by if r != "backward"}
    if s.region == "embedding" and not s.layer_inputs and any(r.startswith("layer") for r in regions):
        return "embedding"  # made once for the model (rotary tables, masks): shared by every layer
    if len(regions) == 1:
        return next(iter(regions))
    if len(regions) > 1:
        return "embedding" if any(r.startswith("layer") or r == "embedding" for r in regions) else "head"
    if len(s.layer_inputs) == 1:
        return f"layer {next(iter(s.layer_inputs))}"
    if len(s.layer_inputs) > 1:
        return "embedding"
    return s.region


@dataclass
class Classified:
    saved: dict[int, str]  # storage index -> region ("layer <i>", "embedding", "head")
    forward_only: dict[int, str]  # storage index -> region it was made in
    grads: dict[int, str]  # storage index -> region of the parameter


def classify(rec: Recording) -> Classified:
    """A backward storage shaped like a parameter is (a contribution to) its gradient: a tied weight's LM-head
    gradient waits in autograd's input buffer until the embedding's is added, before it becomes .grad.  A step
    with every parameter frozen (no .grad at all) has none."""
    t_fe, t_bs = rec.marks["forward_end"], rec.marks["loss_end"]
    saved, fonly, grads = {}, {}, {}
    by_shape: dict[tuple, str] = {}
    for name, shape in rec.param_shapes.items():
        by_shape.setdefault(tuple(sorted(shape)), name)
    for s in rec.storages:
        if s.grad_of:
            grads[s.index] = rec.param_region.get(s.grad_of, "embedding")
        elif rec.grads and s.phase == "backward" and tuple(sorted(s.shape)) in by_shape and s.numel == s.nbytes // max(
                itemsize(s.dtype), 1):
            grads[s.index] = rec.param_region.get(by_shape[tuple(sorted(s.shape))], "embedding")
        if s.phase != "backward" and s.alive_at(t_bs):
            saved[s.index] = saved_region(s)
        elif s.born <= t_fe and s.alive_at(t_fe) and s.died is not None and s.died <= t_bs:
            fonly[s.index] = s.region
    return Classified(saved=saved, forward_only=fonly, grads=grads)


# ---------------------------------------------------------------------------------------------------------
# rows of the kept regions
# ---------------------------------------------------------------------------------------------------------
def human_name(s: Storage, region: str, poly: Poly, rope: bool = True) -> str:
    """What the storage is, in words (names.py), from what the trace recorded of it."""
    floating = s.dtype.is_floating_point or s.dtype.is_complex
    elems = " + ".join("*".join(sorted(m)) or "1" for m in poly) if poly else "1"
    return row_name(region, s.module, s.op, s.saver, elems, floating,
                    frozenset(s.tags), s.phase, str(s.dtype).replace("torch.", ""), rope)


def storage_name(s: Storage) -> str:
    made = f"{s.module + ': ' if s.module else ''}{s.op.split('.')[0]}"
    if s.saver:
        op, _, where = s.saver.partition(" @ ")
        where = where.split(".layers.")[-1].split(".", 1)[-1] if ".layers." in where else where
        if where != s.module or op.split(".")[0] != s.op.split(".")[0]:
            made += f", saved by {op.split('.')[0]}" + (f" @ {where}" if where and where != s.module else "")
    return made


class Builder:
    """Items of one variant (one probe set of recordings)."""

    def __init__(self, recs: list[Recording], shapes: Shapes, kind_of_layer: list[int],
                 grid: list[tuple[list[dict[str, int]], dict[str, int]]]) -> None:
        """`kind_of_layer[i]`: kind index of traced layer i; `grid`: plausible sizes, each (per-kind tables, model
        table) with b and s set, on which candidate moments are compared."""
        self.rec = recs[0]
        self.shapes = shapes
        self.kind_of_layer = kind_of_layer
        self.grid = grid
        self.cls = classify(self.rec)
        self.by_index = {s.index: s for s in self.rec.storages}
        self._cache: dict[tuple[int, int | None], list[float]] = {}
        self.unexpressible: set[int] = set()
        self.first_layer_of_kind = {}
        self.rope = any(role(st.module) == "rotary" for st in self.rec.storages)
        for i, k in enumerate(kind_of_layer):
            self.first_layer_of_kind.setdefault(k, i)

    # ---- helpers ----------------------------------------------------------------------------------------
    def kind_of_region(self, region: str) -> int | None:
        i = layer_index(region)
        return None if i is None else self.kind_of_layer[i]

    def _own(self, s: Storage, kind: int | None) -> int | None:
        return self.kind_of_region(s.region) if s.phase != "backward" else kind

    def expressible(self, s: Storage, kind: int | None) -> bool:
        """Sized by the interface's names (a position table's gradient is sized by the max positions: it is a
        gradient, never an activation, and is left out)."""
        try:
            self.shapes.poly(s.index, self._own(s, kind))
            return True
        except ShapeError:
            if s.index not in self.shapes.polys and s.index not in self.unexpressible:
                self.unexpressible.add(s.index)
            return False

    def item(self, region: str, kind: int | None, moment: str, s: Storage, sign: int = 1,
             name: str | None = None) -> Item:
        own = self._own(s, kind)
        poly = self.shapes.poly(s.index, own)
        integer = not (s.dtype.is_floating_point or s.dtype.is_complex)
        # the attention core (Korthikanti et al. 2022 sec. 4.2, what selective recompute drops): scores,
        # probabilities, their dropout, and a fused kernel's log-sum-exp (its outputs other than the output)
        fused_aux = "scaled_dot_product" in s.op and not any("d" in m or "q" in m or "dv" in m for m in poly)
        core = "core" in s.tags or fused_aux or any(m.count("s") + m.count("w") >= 2 and "a" in m for m in poly)
        detail = storage_name(s)
        human = human_name(s, region, poly, self.rope)
        if name is not None:  # a prefixed name ("per layer: ", "freed: "): the same prefix on both
            prefix = name[:-len(detail)] if name.endswith(detail) else ""
            human, detail = prefix + human, name
        return Item(region=region, kind=kind, moment=moment, name=human, poly=poly,
                    itemsize=itemsize(s.dtype), sign=sign, integer=integer, core=core, tags=frozenset(s.tags),
                    attention=self.shapes.in_attention(s.module, s.op), detail=detail)

    # ---- kept regions -----------------------------------------------------------------------------------
    def kept(self, layer_region: str) -> list[Item]:
        """layer/checkpoint rows (first layer of each kind), embedding and head rows, forward-only rows."""
        out = []
        for idx, region in self.cls.saved.items():
            s = self.by_index[idx]
            li = layer_index(region)
            if li is not None:
                k = self.kind_of_layer[li]
                if self.first_layer_of_kind[k] == li:
                    out.append(self.item(layer_region, k, "", s))
            else:
                out.append(self.item(region, None, "", s))
        for idx, region in self.cls.forward_only.items():
            s = self.by_index[idx]
            li = layer_index(region)
            if li is not None:
                if self.first_layer_of_kind[self.kind_of_layer[li]] == li and self.kind_of_layer[li] == 0:
                    it = self.item("forward_only", None, "", s, name=f"per layer: {storage_name(s)}")
                    it.poly = {tuple(sorted(m + ("L",))): c for m, c in it.poly.items()}
                    out.append(it)
            else:
                out.append(self.item("forward_only", None, "", s))
        return out

    # ---- transients -------------------------------------------------------------------------------------
    def _values(self, s: Storage, kind: int | None) -> list[float]:
        """Bytes of `s` on every grid point."""
        own = self._own(s, kind)
        key = (s.index, own)
        if key not in self._cache:
            if not self.expressible(s, kind):
                self._cache[key] = [0.0] * len(self.grid)
                return self._cache[key]
            poly = self.shapes.poly(s.index, own)
            size = itemsize(s.dtype)
            self._cache[key] = [float(evaluate(poly, model if own is None else kinds[own])) * size
                                for kinds, model in self.grid]
        return self._cache[key]

    def sweep(self, start: int, end: int, ref: set[int], relevant: set[int], kind: int | None,
              skip: set[int] = frozenset()) -> list[int]:
        """Candidate moments in (start, end]: the times where the diff from `ref` is largest on some grid point.
        `relevant`: the reference storages whose absence counts; `skip`: storages never counted (other layers'
        gradients, ...)."""
        alive = {s.index for s in self.rec.storages if s.alive_at(start)}
        pos = {i for i in alive if i not in ref and i not in skip}
        neg = {i for i in relevant if i not in alive}
        ng = len(self.grid)
        cur = [0.0] * ng
        for i in pos:
            cur = [c + x for c, x in zip(cur, self._values(self.by_index[i], kind))]
        for i in neg:
            cur = [c - x for c, x in zip(cur, self._values(self.by_index[i], kind))]
        best = list(cur)
        when = [start] * ng
        for t, idx, delta in self.rec.events:
            if t <= start or t > end:
                continue
            if idx in skip:
                continue
            s = self.by_index[idx]
            sign = 0
            if delta > 0:
                if idx in ref:
                    if idx in neg:
                        neg.discard(idx)
                        sign = 1
                else:
                    pos.add(idx)
                    sign = 1
            else:
                if idx in pos:
                    pos.discard(idx)
                    sign = -1
                elif idx in relevant:
                    neg.add(idx)
                    sign = -1
            if sign:
                vals = self._values(s, kind)
                for g in range(ng):
                    cur[g] += sign * vals[g]
                    if sign > 0 and cur[g] > best[g]:
                        best[g], when[g] = cur[g], t
        return sorted(set(when))

    def diff_items(self, t: int, region: str, kind: int | None, moment: str, ref: set[int], relevant: set[int],
                   skip: set[int] = frozenset()) -> list[Item]:
        out = []
        for s in self.rec.storages:
            if s.index in skip or not self.expressible(s, kind):
                continue
            if s.alive_at(t) and s.index not in ref:
                out.append(self.item(region, kind, moment, s))
            elif s.index in relevant and not s.alive_at(t):
                out.append(self.item(region, kind, moment, s, sign=-1,
                                     name=("not yet made: " if s.born > t else "freed: ") + storage_name(s)))
        return out

    def label(self, t: int, base: str) -> str:
        lab = self.rec.labels.get(t, "")
        op, _, where = lab.partition(" @ ")
        if ".layers." in where:
            where = where.split(".layers.", 1)[1].split(".", 1)[-1]
        return f"{base}: {op.split('.')[0]}" + (f" @ {where}" if where else "")

    def moments(self, region: str, kind: int | None, base: str, start: int, end: int, ref: set[int],
                relevant: set[int], skip: set[int] = frozenset()) -> list[Item]:
        out: list[Item] = []
        seen: dict[str, int] = {}
        for t in self.sweep(start, end, ref, relevant, kind, skip):
            lab = self.label(t, base)
            seen[lab] = seen.get(lab, 0) + 1
            if seen[lab] > 1:
                lab = f"{lab} #{seen[lab]}"
            out += self.diff_items(t, region, kind, lab, ref, relevant, skip)
        return out

    def transients(self) -> list[Item]:
        rec, cls = self.rec, self.cls
        saved = set(cls.saved)
        head = {i for i, r in cls.saved.items() if r == "head"}
        fonly = set(cls.forward_only)
        per_layer_saved = {}
        for i, r in cls.saved.items():
            li = layer_index(r)
            if li is not None:
                per_layer_saved.setdefault(li, set()).add(i)
        per_layer_fonly = {}
        for i, r in cls.forward_only.items():
            li = layer_index(r)
            if li is not None:
                per_layer_fonly.setdefault(li, set()).add(i)
        model_fonly = {i for i, r in cls.forward_only.items() if layer_index(r) is None}
        out: list[Item] = []
        t_fe, t_bs = rec.marks["forward_end"], rec.marks["loss_end"]
        n = rec.n_layers
        # layer forward (as if it were the last layer of the stage) and the head's forward
        for k, li in self.first_layer_of_kind.items():
            start, end = rec.layer_forward[li]
            later = set().union(*(per_layer_saved.get(j, set()) | per_layer_fonly.get(j, set())
                                  for j in range(li + 1, n))) if li + 1 < n else set()
            ref = (saved - head | fonly) - later
            relevant = per_layer_saved.get(li, set()) | per_layer_fonly.get(li, set()) | model_fonly
            out += self.moments("layer_forward", k, "forward", start, end, ref, relevant, skip=later)
        ref = saved - head | fonly
        out += self.moments("layer_forward", None, "head forward", rec.layer_forward[n - 1][1], t_fe, ref,
                            model_fonly)
        # the loss
        out += self.moments("loss_forward", None, "loss", t_fe, t_bs, saved | fonly, head | model_fonly)
        # the head's backward
        last_start = rec.layer_backward.get(n - 1, (rec.clock, rec.clock))[0]
        grads = set(cls.grads)
        out += self.moments("loss_backward", None, "head backward", t_bs, last_start, saved, head)
        # each kind's layer backward (as if it were the stage's last layer)
        for k, li in self.first_layer_of_kind.items():
            start, end = rec.layer_backward[li]
            own_grads = {i for i, r in cls.grads.items() if r == f"layer {li}"}
            other_layers = set().union(*(per_layer_saved.get(j, set()) for j in range(n) if j != li))
            skip = (grads - own_grads) | other_layers
            out += self.moments("layer_backward", k, "backward", start, end, saved - head,
                                per_layer_saved.get(li, set()), skip=skip)
        return out
