"""The items of every traced variant -> the rows of one implementation profile (memory/implementations.py).

A row's element count is one expression; its `bytes` hold, per precision mode, the bytes per element of that
expression summed over the tensors of the row (a rational factor of the expression, a rotary half's 1/2 or a
fused gate_up's 2, goes there too); `cpu_bytes` where the CPU kernels keep other bytes; `when` the variants the
row exists in: the attention implementation, full recompute or not, a window mask or not, dropout or not, and the
layer kind's distinguishing features.  Rows that differ only in name are added up, so one row is one expression
of one region, kind, moment and condition; in the regions the estimate shows row by row (SHOWN), of one name too:
`name` is what the tensors are (names.py), `detail` the aten ops that made and saved them (for --json/--verbose).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

from memplan.measure.trace.analyze import Item
from memplan.measure.trace.shapes import split_coefficient
from memplan.measure.trace.step import Variant

SPLIT_NAMES = {"q", "kv", "vw", "a", "g", "f", "fk", "fs", "V"}
# condition dimensions -> (feature, value per variant value)
ATTENTION = {"eager": "eager", "sdpa": ["sdpa", "flash"]}
RECOMPUTE = {"none": ["none", "selective"], "full": "full"}
PER_LAYER = ("layer", "checkpoint", "layer_forward", "layer_backward")
SHOWN = ("layer", "checkpoint", "embedding", "head", "forward_only")  # regions whose rows the estimate lists
NAMES = ("attention", "recompute", "window", "dropout", "frozen")  # a condition tuple's fields, in order


@dataclass(frozen=True)
class Key:
    region: str
    kind: int | None
    moment: str
    elems: str
    tp: str
    core: bool
    label: str = ""  # the row's name, in the SHOWN regions (rows of one name add up; others are kept apart)


def _terms(it: Item) -> list[tuple[str, Fraction]]:
    """(expression, factor) pairs of an item: one for an all-positive polynomial, one per monomial otherwise."""
    if all(c > 0 for c in it.poly.values()):
        text, coef = split_coefficient(it.poly)
        return [(text, coef)]
    return [split_coefficient({m: c}) if c > 0 else (split_coefficient({m: -c})[0], -split_coefficient({m: -c})[1])
            for m, c in it.poly.items()]


def _tp(it: Item, elems: str) -> str:
    if it.integer:
        return "none"
    names = {n for part in elems.split(" + ") for n in part.split("*")}
    return "split" if names & SPLIT_NAMES else "sp"


def _dropout_feature(it: Item) -> str:
    if it.region in ("embedding",):
        return "embedding_dropout"
    return "attention_dropout" if it.attention or "sdpa" in " ".join(it.tags) else "hidden_dropout"


def merge(variants: dict[Variant, list[Item]], kind_when: list[dict], dims: dict[str, list]) -> dict[str, list[dict]]:
    """Rows per region.  `kind_when[k]`: features of layer kind k that tell it from the other kinds; `dims`: the
    condition dimensions traced (name -> values), among attention, recompute, window, dropout."""
    table: dict[Key, dict[tuple, dict[tuple[str, str], float]]] = defaultdict(lambda: defaultdict(dict))
    names: dict[Key, list[str]] = defaultdict(list)
    details: dict[Key, list[str]] = defaultdict(list)
    dropout_feature: dict[Key, str] = {}
    for v, items in variants.items():
        cond = (v.attention, v.recompute, v.long_windows, v.dropout, v.frozen)
        for it in items:
            for elems, coef in _terms(it):
                key = Key(it.region, it.kind, it.moment, elems, _tp(it, elems), it.core,
                          it.name if it.region in SHOWN else "")
                cell = table[key][cond]
                slot = (v.kernels, v.mode)
                cell[slot] = cell.get(slot, 0.0) + float(coef) * it.itemsize * it.sign
                if it.name not in names[key]:
                    names[key].append(it.name)
                if it.detail and it.detail not in details[key]:
                    details[key].append(it.detail)
                dropout_feature.setdefault(key, _dropout_feature(it))
    out: dict[str, list[dict]] = defaultdict(list)
    all_conds = sorted({(v.attention, v.recompute, v.long_windows, v.dropout, v.frozen) for v in variants}, key=str)
    for key, by_cond in table.items():
        by_cond = {c: {s: round(b, 6) for s, b in cell.items() if abs(b) > 1e-9} for c, cell in by_cond.items()}
        by_cond = {c: cell for c, cell in by_cond.items() if cell}
        if not by_cond:
            continue
        grid = [c for c in all_conds if _region_traced(key.region, c)]
        groups: dict[tuple, list[tuple]] = defaultdict(list)
        for c, cell in by_cond.items():
            groups[tuple(sorted(cell.items()))].append(c)
        for cell, conds in groups.items():
            for when in _conditions(set(conds), grid, dims, dropout_feature[key], key.region):
                row = _row(key, dict(cell), when, names[key], kind_when, details[key])
                if row is not None:
                    out[key.region].append(row)
    return {r: _compact(rows, by_name=r in SHOWN) for r, rows in out.items()}


def _region_traced(region: str, cond: tuple) -> bool:
    """`layer` rows come from the steps without recompute, `checkpoint` rows from those with it."""
    recompute = cond[1]
    if region == "layer":
        return recompute == "none"
    if region == "checkpoint":
        return recompute == "full"
    return True


def _conditions(conds: set, grid: list, dims: dict[str, list], dropout_feature: str, region: str) -> list[dict]:
    """`when` clauses (a disjunction) whose union over the traced grid is exactly `conds`."""
    if conds >= set(grid):
        return [{}]
    for i, name in enumerate(NAMES):
        values = sorted({c[i] for c in grid}, key=str)
        if len(values) < 2:
            continue
        have = sorted({c[i] for c in conds}, key=str)
        if region in ("layer", "checkpoint") and name == "recompute":
            continue
        # does `conds` depend only on this dimension?  then one clause
        rest = [c for c in grid if c[i] in have]
        if set(rest) == conds:
            return [_clause(name, have, dropout_feature)]
    # split on the first dimension that varies inside conds
    for i, name in enumerate(NAMES):
        values = sorted({c[i] for c in conds}, key=str)
        allv = sorted({c[i] for c in grid}, key=str)
        if len(allv) > 1:
            out = []
            for val in values:
                sub = {c for c in conds if c[i] == val}
                subgrid = [c for c in grid if c[i] == val]
                for w in _conditions(sub, subgrid, dims, dropout_feature, region):
                    out.append({**_clause(name, [val], dropout_feature), **w})
            return out
    return [{}]


def _clause(name: str, values: list, dropout_feature: str) -> dict:
    if name == "attention":
        vals: list = []
        for v in values:
            x = ATTENTION[v]
            vals += x if isinstance(x, list) else [x]
        return {"attention": vals[0] if len(vals) == 1 else vals}
    if name == "recompute":
        vals = []
        for v in values:
            x = RECOMPUTE[v]
            vals += x if isinstance(x, list) else [x]
        return {"recompute": vals[0] if len(vals) == 1 else vals}
    if name == "window":
        return {"window_mask": not values[0]} if len(values) == 1 else {}
    if name == "frozen":
        return {"frozen": bool(values[0])} if len(values) == 1 else {}
    return {dropout_feature: bool(values[0])} if len(values) == 1 else {}


def _row(key: Key, cell: dict[tuple[str, str], float], when: dict, names: list[str], kind_when: list[dict],
         details: list[str] = ()) -> dict | None:
    cuda = {mode: b for (k, mode), b in cell.items() if k == "cuda"}
    cpu = {mode: b for (k, mode), b in cell.items() if k == "cpu"}
    if key.kind is not None and len(kind_when) > 1:
        when = {**kind_when[key.kind], **when}
    row = {"name": _short("; ".join(names[:4]) + ("; ..." if len(names) > 4 else "")), "elems": key.elems,
           "bytes": cuda}
    if details:
        row["detail"] = _short("; ".join(details[:4]) + ("; ..." if len(details) > 4 else ""), 200)
    if cpu != cuda:
        row["cpu_bytes"] = cpu
    if when:
        row["when"] = when
    row["tp"] = key.tp
    if key.core:
        row["core"] = True
    if key.moment:
        row["moment"] = key.moment
    if not cuda and not cpu:
        return None
    return row


def _compact(rows: list[dict], by_name: bool = False) -> list[dict]:
    """Rows equal in all but name and bytes add up (their bytes tables summed); `by_name`: in all but bytes."""
    merged: dict[tuple, dict] = {}
    for r in rows:
        key = (r["elems"], repr(r.get("when")), r["tp"], r.get("core", False), r.get("moment", ""),
               "cpu_bytes" in r, r["name"] if by_name else "")
        if key not in merged:
            merged[key] = {**r, "bytes": dict(r["bytes"]), **({"cpu_bytes": dict(r["cpu_bytes"])}
                                                               if "cpu_bytes" in r else {})}
            continue
        m = merged[key]
        for field in ("bytes", "cpu_bytes"):
            if field in r:
                for mode, b in r[field].items():
                    m[field][mode] = round(m[field].get(mode, 0.0) + b, 6)
        if r["name"] not in m["name"]:
            m["name"] = _short(m["name"] + "; " + r["name"])
        if r.get("detail") and r["detail"] not in m.get("detail", ""):
            m["detail"] = _short(m["detail"] + "; " + r["detail"], 200) if m.get("detail") else r["detail"]
    out = []
    for m in merged.values():
        for field in ("bytes", "cpu_bytes"):
            if field in m:
                m[field] = {k: (int(v) if float(v).is_integer() else v) for k, v in m[field].items() if v}
        if "cpu_bytes" in m and m["cpu_bytes"] == m["bytes"]:
            del m["cpu_bytes"]
        if m["bytes"] or m.get("cpu_bytes"):
            out.append(m)
    return out


def _short(name: str, limit: int = 110) -> str:
    return name if len(name) <= limit else name[:limit - 4].rsplit(";", 1)[0] + "; ..."
