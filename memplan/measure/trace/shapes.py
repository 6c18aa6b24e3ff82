"""Tensor dimensions back to size names: each dimension, seen in two or three probes with different sizes, is the
one expression of the names (activation-rows.md: b, s, h, q, kv, a, g, d, f, fk, E, K, w, V, ...) that gives its
value in every probe.

An expression is a polynomial with rational coefficients (a rotary half is d/2, a fused QKV is q + 2*kv, MLA's
kv_b output a*(nope + dv) = q - a*dr + a*dv); an element count is the product of its dimensions' expressions,
expanded.  Where the config ties two names together (MHA: kv = q; no head_dim key: h = q; a window no shorter than
the sequence: w = s) both fit; the tensor's module decides (inside attention before its output projection: q and
kv; elsewhere h), else a fixed preference.
"""
from __future__ import annotations

import itertools
from fractions import Fraction
from functools import lru_cache

Monomial = tuple[str, ...]  # sorted base names
Poly = dict[Monomial, Fraction]

# base names a dimension can be made of (composites q, kv, vw, fk are products of these: canonical() forms them)
BASE = ("b", "s", "h", "a", "g", "r", "d", "dv", "f", "fs", "V", "E", "K", "w", "lq", "lkv", "dr", "P")
# r = a / g, the query heads per KV head (repeat_kv's expanded dimension): it only ever appears next to g
COMPOSITES = (("a", ("g", "r")), ("q", ("a", "d")), ("kv", ("d", "g")), ("vw", ("dv", "g")), ("fk", ("K", "f")))
# when two names have the same value in every probe: the first of the list wins
PREFER = ("b", "s", "a", "d", "h", "f", "V", "K", "E", "g", "w", "dv", "fs", "lq", "lkv", "dr", "r", "P")
PREFER_ATTENTION = ("b", "s", "a", "d", "g", "f", "V", "K", "E", "h", "w", "dv", "fs", "lq", "lkv", "dr", "r", "P")
COEFS = tuple(sorted({Fraction(n, den) for n in (1, 2, 3, 4, 5, 6, 8, 12, 16) for den in (1, 2, 4, 8)},
                     key=lambda c: (c.denominator, c)))
SMALL = (1, 2, 3, 4, -1, -2, Fraction(1, 2), Fraction(-1, 2))


class ShapeError(ValueError):
    pass


def base_tables(sizes: list[dict[str, int]]) -> list[dict[str, int]]:
    """Per probe: the base names with a value above 1 (a name of value 0 or 1 cannot be seen in a shape)."""
    out = []
    for s in sizes:
        t = {n: v for n, v in s.items() if n in BASE and isinstance(v, int) and v > 1}
        if s.get("a") and s.get("g") and s["a"] // s["g"] > 1:
            t["r"] = s["a"] // s["g"]
        out.append(t)
    return out


_SOLVED: dict[tuple, Poly | None] = {}  # (tables, values, preference) -> expression, across variants


class Solver:
    """Decomposes dimensions seen in several probes, for one table of name values per probe.

    Monomials are indexed by the ratios of their values across probes, so that c * m matching a dimension is one
    lookup whatever the coefficient c (kept only if it is a small fraction: a half, a quarter, 2, 3, ...)."""

    def __init__(self, tables: list[dict[str, int]]) -> None:
        self.signature = tuple(tuple(sorted(t.items())) for t in tables)
        self.tables = tables
        names = sorted(set.intersection(*(set(t) for t in tables))) if tables else []
        self.names = names
        self.by_ratio: dict[tuple, list[tuple[Monomial, int]]] = {}
        self.by_value: dict[int, list[Monomial]] = {}
        for degree in (1, 2, 3):
            for mono in itertools.combinations_with_replacement(names, degree):
                vals = tuple(_eval_mono(mono, t) for t in tables)
                self.by_ratio.setdefault(_ratios(vals), []).append((mono, vals[0]))
                self.by_value.setdefault(vals[0], []).append(mono)
        self.low = [m for k in (1, 2) for m in itertools.combinations_with_replacement(names, k)]
        self.low_vals = {m: tuple(_eval_mono(m, t) for t in tables) for m in self.low}
        self._cache: dict[tuple[tuple[int, ...], tuple[str, ...]], Poly] = {}

    def dim(self, values: tuple[int, ...], prefer: tuple[str, ...] = PREFER) -> Poly:
        key = (values, prefer)
        if key not in self._cache:
            glob = (self.signature, values, prefer)
            if glob not in _SOLVED:
                try:
                    _SOLVED[glob] = self._solve(values, prefer)
                except ShapeError:
                    _SOLVED[glob] = None
            if _SOLVED[glob] is None:
                raise ShapeError(f"dimension {values} is no expression of the size names {self.names}")
            self._cache[key] = _SOLVED[glob]
        return self._cache[key]

    def _rank(self, terms: list[tuple[Fraction, Monomial]], prefer: tuple[str, ...]) -> tuple:
        order = {n: i for i, n in enumerate(prefer)}
        # fewest terms, then whole coefficients (a rotary half is 1/2 of one name; a sum's parts are whole), then
        # the lowest degree, then the preferred names
        return (len(terms), sum(c.denominator != 1 for c, _ in terms) if len(terms) > 1 else 0,
                sum(len(m) for _, m in terms), sorted(order.get(n, 99) for _, m in terms for n in m),
                [abs(c.denominator) for c, _ in terms])

    def _monomials(self, r: tuple, max_degree: int = 3) -> list[tuple[Fraction, Monomial]]:
        """c * m == r for a small fraction c."""
        if any(x == 0 for x in r):
            return []
        out = []
        if len(r) == 1:
            for c in COEFS:
                q = Fraction(r[0]) / c
                if q.denominator == 1:
                    out += [(c, m) for m in self.by_value.get(int(q), []) if len(m) <= max_degree]
            return out
        for m, v0 in self.by_ratio.get(_ratios(r), []):
            c = Fraction(r[0]) / v0
            if len(m) <= max_degree and _nice(c):
                out.append((c, m))
        return out

    def _solve(self, v: tuple[int, ...], prefer: tuple[str, ...]) -> Poly:
        if len(v) > 1 and len(set(v)) == 1:
            return {(): Fraction(v[0])}
        if len(v) == 1 and v[0] <= 2:
            return {(): Fraction(v[0])}
        found: list[list[tuple[Fraction, Monomial]]] = [[t] for t in self._monomials(v) if t[0] > 0]
        if not found:
            for k in (-2, -1, 1, 2):  # a monomial plus a constant (sequence - 1, experts + 1)
                found += [[t, (Fraction(k), ())] for t in self._monomials(tuple(x - k for x in v))]
        if not found:  # a depthwise causal conv of kernel 4 pads the sequence by 3 (Qwen3NextGatedDeltaNet.conv1d):
            # the sequence itself plus 3, nothing else (a wider offset would explain data-dependent MoE sizes)
            for k in (3, -3):
                found += [[t, (Fraction(k), ())] for t in self._monomials(tuple(x - k for x in v))
                          if t == (Fraction(1), ("s",))]
        if not found and len(v) > 1:
            found = self._sums(v, 2)
        if not found and len(v) > 1:
            found = self._factored(v)
        if not found and len(v) > 1:
            found = self._sums(v, 3, single=True)
        if not found:
            raise ShapeError(f"dimension {v} is no expression of the size names {self.names}")
        return _poly(min(found, key=lambda f: self._rank(f, prefer)))

    def _factored(self, v: tuple[int, ...]) -> list[list[tuple[Fraction, Monomial]]]:
        """A name times a sum of names (MLA's kv_b output: heads x (nope + v_head_dim) = a*(d - dr + dv))."""
        out = []
        for n in self.names:
            if all(x % t[n] == 0 and x // t[n] > 1 for x, t in zip(v, self.tables)):
                rest = tuple(x // t[n] for x, t in zip(v, self.tables))
                for terms in (2, 3):
                    found = self._sums(rest, terms, single=True)
                    out += [[(c, tuple(sorted(m + (n,)))) for c, m in f] for f in found]
                    if found:
                        break
        return out

    def _sums(self, v: tuple[int, ...], terms: int, single: bool = False) -> list[list[tuple[Fraction, Monomial]]]:
        """terms - 1 small-coefficient monomials (single names if `single`), the last one any coefficient."""
        pool = [(m,) for m in self.names] if single else [(m,) for m in []] or None
        monos = [(n,) for n in self.names] if single else self.low
        out = []
        for combo in itertools.combinations(monos, terms - 1):
            vals = [self.low_vals.get(m) or tuple(_eval_mono(m, t) for t in self.tables) for m in combo]
            for coefs in itertools.product(SMALL, repeat=terms - 1):
                rest = tuple(x - sum(Fraction(c) * val[i] for c, val in zip(coefs, vals))
                             for i, x in enumerate(v))
                for c, m in self._monomials(rest, 1 if single else 2):
                    if m not in combo:
                        out.append([(Fraction(cc), mm) for cc, mm in zip(coefs, combo)] + [(c, m)])
                if len(out) > 50:
                    return out
        del pool
        return out


def _ratios(vals: tuple) -> tuple:
    return tuple(Fraction(x) / vals[0] for x in vals[1:]) if vals[0] else ()


def _nice(c: Fraction) -> bool:
    return c != 0 and c.denominator in (1, 2, 4, 8) and abs(c.numerator) <= 16


def _eval_mono(m: Monomial, table: dict[str, int]) -> int:
    v = 1
    for n in m:
        v *= table[n]
    return v


def _div(v: tuple, c: Fraction) -> tuple[int, ...] | None:
    out = []
    for x in v:
        q = Fraction(x) / c
        if q.denominator != 1 or q <= 1:
            return None
        out.append(int(q))
    return tuple(out)


def _poly(terms: list[tuple[Fraction, Monomial]]) -> Poly:
    out: Poly = {}
    for c, m in terms:
        key = tuple(sorted(m))
        out[key] = out.get(key, Fraction(0)) + c
    return {m: c for m, c in out.items() if c}


def multiply(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, Fraction(0)) + ca * cb
    return {m: c for m, c in out.items() if c}


def elements(dims: list[Poly]) -> Poly:
    out: Poly = {(): Fraction(1)}
    for d in dims:
        out = multiply(out, d)
    return out


@lru_cache(maxsize=None)
def canonical(mono: Monomial) -> Monomial:
    """Products of base names as the interface names them: a*d -> q, g*d -> kv, g*dv -> vw, f*K -> fk."""
    left = list(mono)
    for name, parts in COMPOSITES:
        while all(left.count(p) >= parts.count(p) for p in parts):
            for p in parts:
                left.remove(p)
            left.append(name)
    return tuple(sorted(left, key=_order))


_ORDER = ("b", "a", "g", "s", "w", "h", "q", "kv", "vw", "d", "dv", "dr", "lq", "lkv", "f", "fk", "fs", "E", "K",
          "V")


def _order(n: str) -> int:
    return _ORDER.index(n) if n in _ORDER else 99


def split_coefficient(p: Poly) -> tuple[str, Fraction]:
    """A polynomial as (expression text, coefficient pulled out of it): '2*b*s*h + b*s' style, with the largest
    common rational factor returned separately (it goes into bytes per element)."""
    terms = dict(p)
    if not terms:
        return "0", Fraction(0)
    first = min(terms.items(), key=lambda kv: (-len(kv[0]), [_order(n) for n in kv[0]]))[1]
    common = first
    parts = []
    for mono, c in sorted(terms.items(), key=lambda kv: (-len(kv[0]), [_order(n) for n in kv[0]])):
        rel = c / common
        parts.append((rel, mono))
    # integer relative coefficients wherever possible
    den = 1
    for rel, _ in parts:
        den = den * rel.denominator // _gcd(den, rel.denominator)
    common = common / den
    text = []
    for rel, mono in parts:
        k = rel * den
        body = "*".join(mono) if mono else ""
        if k.denominator != 1:
            raise ShapeError(f"non-integer relative coefficient in {p}")
        k = int(k)
        if k < 0:
            raise ShapeError("negative term")
        item = body if k == 1 and body else (f"{k}*{body}" if body else str(k))
        text.append(item)
    return " + ".join(text), common


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def evaluate(p: Poly, table: dict[str, int]) -> Fraction:
    return sum((c * _eval_mono(m, table) for m, c in p.items()), Fraction(0))


def canonical_poly(p: Poly) -> Poly:
    """`p` in the interface's names (composites formed); a leftover r (heads per KV head) is no interface name."""
    out: Poly = {}
    for m, c in p.items():
        cm = canonical(m)
        if "r" in cm or "P" in cm:
            raise ShapeError(f"an element count keeps the heads-per-KV-head ratio or the max positions: {p}")
        out[cm] = out.get(cm, Fraction(0)) + c
    return {m: c for m, c in out.items() if c}
