"""How a result looks in Python and in a notebook: one summary line, the CLI's own table, rows for pandas.

`ResultView` is mixed into the result classes (MemoryEstimate, Comparison, InferenceEstimate, TimeEstimate,
PlanResult): `repr()`/`str()` is one line (model, GPU, required memory, the verdict) instead of every pydantic
field; `_repr_html_`/`_repr_markdown_` show the table `memplan <command>` prints (memplan/report/, imported
only when shown: the views sit below the results and name their classes for type checkers only); `.rows()` is
one dict per component (per strategy, per candidate) and `.to_dataframe()` the same as a pandas DataFrame.  The JSON (`model_dump_json`) is unchanged.
"""
from __future__ import annotations

import html
from typing import Any

GIB = 2**30


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:,.2f} GiB"


def markdown_rows(headers: list[str], rows: list[list[Any]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def dataframe(rows: list[dict[str, Any]], what: str):
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(f"{what}.to_dataframe() needs pandas: `pip install pandas` (or use .rows(), a list of "
                          "dicts)") from None
    return pd.DataFrame(rows)


class ResultView:
    """Mixed into a pydantic result: subclasses give `_summary()`, `_table()` and `rows()`."""

    def _summary(self) -> str:  # pragma: no cover - every result class overrides it
        return ""

    def _table(self) -> str:  # pragma: no cover
        return ""

    def rows(self) -> list[dict[str, Any]]:  # pragma: no cover
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._summary()})"

    def __str__(self) -> str:
        return self._summary()

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's plain-text display
        p.text(repr(self))

    def table(self) -> str:
        """The text table `memplan` prints for this result."""
        return self._table()

    def _repr_markdown_(self) -> str:
        return f"**{html.escape(self._summary())}**\n\n```\n{self._table()}\n```\n"

    def _repr_html_(self) -> str:
        return (f"<p><b>{html.escape(self._summary())}</b></p>\n<pre style=\"font-size: 0.85em\">"
                f"{html.escape(self._table())}</pre>")

    def to_dataframe(self):
        """`.rows()` as a pandas DataFrame (pandas is not a dependency: `pip install pandas`)."""
        return dataframe(self.rows(), type(self).__name__)


# ---- per result --------------------------------------------------------------------------------------------
def _verdict(fits: bool | None) -> str:
    return "" if fits is None else (", fits" if fits else ", DOES NOT FIT")


def _on(gpus: int, gpu: str | None) -> str:
    return f"{gpus} x {gpu}" if gpu else f"{gpus} GPU{'s' if gpus != 1 else ''}"


def component_rows(components) -> list[dict[str, Any]]:
    return [{"name": c.name, "category": c.category, "location": c.location, "bytes": c.bytes,
             "gib": c.bytes / GIB, "dtype": c.dtype, "bytes_per_param": c.bytes_per_param,
             "sharded_over": c.sharded_over, "note": c.note} for c in components]


class MemoryView(ResultView):
    def _summary(self) -> str:
        e: Any = self
        text = f"{e.model} on {_on(e.setup.layout.gpus, e.gpu)}: {_gib(e.per_gpu.required)} per GPU required"
        text += _verdict(e.fits)
        return text + (f", peak in {e.peak_phase}" if e.peak_phase else "")

    def _table(self) -> str:
        from memplan.report.tables import memory_table
        from memplan.spec.units import Units

        return memory_table(self, Units.GiB)  # type: ignore[arg-type]

    def rows(self) -> list[dict[str, Any]]:
        return component_rows(self.components)  # type: ignore[attr-defined]


class ComparisonView(ResultView):
    def _summary(self) -> str:
        c: Any = self
        if not c.strategies:
            return "no strategies"
        first = c.strategies[0].estimate
        fitting = [s.strategy for s in c.strategies if s.estimate.fits]
        verdict = "" if first.fits is None else (f", fits from {fitting[0]}" if fitting else ", none fits")
        return f"{first.model} on {_on(first.setup.layout.gpus, first.gpu)}: {len(c.strategies)} strategies{verdict}"

    def _table(self) -> str:
        from memplan.report.tables import compare_table
        from memplan.spec.units import Units

        return compare_table(self, Units.GiB)  # type: ignore[arg-type]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for s in self.strategies:  # type: ignore[attr-defined]
            p = s.estimate.per_gpu
            out.append({"strategy": s.strategy, "recipe": s.estimate.setup.recipe.name, "weights": p.weights,
                        "gathered_parameters": p.gathered_parameters, "gradients": p.gradients,
                        "master_weights": p.master_weights, "optimizer_states": p.optimizer_states,
                        "activations": p.activations, "temporaries": p.temporaries, "required": p.required,
                        "required_gib": p.required / GIB, "cpu_per_node": s.estimate.cpu.total,
                        "fits": s.estimate.fits})
        return out


class InferenceView(ResultView):
    def _summary(self) -> str:
        e: Any = self
        text = (f"{e.model} on {_on(e.setup.layout.gpus, e.gpu)}, {e.engine}: {_gib(e.per_gpu.required)} per GPU "
                f"required{_verdict(e.fits)}")
        return text + f", batch {e.batch} x context {e.context:,}"

    def _table(self) -> str:
        from memplan.report.inference import inference_table
        from memplan.spec.units import Units

        return inference_table(self, Units.GiB)  # type: ignore[arg-type]

    def rows(self) -> list[dict[str, Any]]:
        return component_rows(self.components)  # type: ignore[attr-defined]


class TimeView(ResultView):
    def _summary(self) -> str:
        e: Any = self
        cost = f", ${e.cost:,.0f}" if e.cost is not None else ""
        return (f"{e.model} on {_on(e.layout.gpus, e.gpu)}: step {e.step_seconds:,.3f} s, {e.days:,.1f} days, "
                f"MFU {e.mfu:.1%}{cost}" + _verdict(e.fits))

    def _table(self) -> str:
        from memplan.report.time import time_table

        return time_table(self)  # type: ignore[arg-type]

    def rows(self) -> list[dict[str, Any]]:
        """One row per part of the step: the op walk's (GEMMs, attention, ..., exposed communication, bubble)."""
        e: Any = self
        w = e.walk
        if w is None:
            return [{"component": "step", "seconds": e.step_seconds, "source": e.step_source},
                    {"component": "exposed communication", "seconds": e.exposed_comm_seconds, "source": "op walk"},
                    {"component": "bubble", "seconds": e.bubble_seconds, "source": "op walk"}]
        parts = [("GEMMs", "gemm_seconds"), ("attention", "attention_seconds"),
                 ("memory-bound", "memory_bound_seconds"), ("optimizer", "optimizer_seconds"),
                 ("tensor-parallel exposed", "tp_exposed_seconds"), ("pipeline sends", "pp_p2p_seconds"),
                 ("bubble", "bubble_seconds"), ("data-parallel exposed", "dp_exposed_seconds"),
                 ("context-parallel exposed", "cp_exposed_seconds"), ("expert-parallel exposed", "ep_exposed_seconds"),
                 ("offload exposed", "offload_exposed_seconds")]
        rows = [{"component": label, "seconds": getattr(w, key), "source": "op walk"}
                for label, key in parts if getattr(w, key, None) is not None]
        rows.append({"component": "step", "seconds": e.step_seconds, "source": e.step_source})
        return rows


class PlanView(ResultView):
    def _summary(self) -> str:
        r: Any = self
        if not r.candidates:
            return f"{r.model} on {r.gpu}: no layout fits ({r.evaluated:,} searched)"
        best = r.candidates[0]
        L = best.layout
        return (f"{r.model} on {L.gpus} x {r.gpu}: {len(r.candidates)} candidates, best tp={L.tp} pp={L.pp} "
                f"dp={L.dp} zero={L.zero} micro_batch={L.micro_batch} recompute={L.recompute}: step "
                f"{best.step_seconds:,.3f} s, MFU {best.mfu:.1%}")

    def _table(self) -> str:
        from memplan.report.plan import plan_table

        return plan_table(self)  # type: ignore[arg-type]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for c in self.candidates:  # type: ignore[attr-defined]
            L = c.layout
            out.append({"rank": c.rank, "gpus": L.gpus, "dp": L.dp, "tp": L.tp, "pp": L.pp,
                        "virtual_stages": L.virtual_stages, "cp": L.cp, "ep": L.ep,
                        "sequence_parallel": L.sequence_parallel, "zero": L.zero,
                        "offload_optimizer": L.offload_optimizer, "offload_params": L.offload_params,
                        "micro_batch": L.micro_batch, "grad_accum": L.grad_accum, "recompute": L.recompute,
                        "memory_required_bytes": c.memory_required_bytes, "step_seconds": c.step_seconds,
                        "exposed_comm_seconds": c.exposed_comm_seconds, "bubble_seconds": c.bubble_seconds,
                        "mfu": c.mfu, "days": c.days, "cost": c.cost})
        return out


class ProfileView(ResultView):
    def _summary(self) -> str:
        r: Any = self
        m, e = r.measured, r.estimated
        err = f" ({r.error_percent:+.2f}%)" if r.error_percent is not None else ""
        oom = ", OUT OF MEMORY" if getattr(m, "oom", False) else ""
        return (f"{m.model} on {m.device}: measured peak {_gib(m.peak_allocated)}, estimated "
                f"{_gib(e.per_gpu.peak_allocated)}{err}{oom}")

    def _table(self) -> str:
        from memplan.report.profile import profile_table
        from memplan.spec.units import Units

        return profile_table(self.measured, self.estimated, Units.GiB)  # type: ignore[attr-defined]

    def rows(self) -> list[dict[str, Any]]:
        """One row per category: measured and estimated bytes at the peak."""
        m, p = self.measured, self.estimated.per_gpu  # type: ignore[attr-defined]
        return [{"category": k, "measured": getattr(m, k), "estimated": getattr(p, k, None)}
                for k in ("weights", "master_weights", "gradients", "optimizer_states", "activations",
                          "temporaries", "peak_allocated")]


class Table(list):
    """A listing (`memplan.models()`, `memplan.gpus()`): a list of dict rows that renders as a table."""

    def __init__(self, what: str, rows: list[dict[str, Any]]):
        super().__init__(rows)
        self.what = what

    def __repr__(self) -> str:
        return f"<{len(self)} {self.what}: " + ", ".join(str(r.get("name")) for r in self[:6]) + \
            (", ..." if len(self) > 6 else "") + ">"

    def _text(self, fmt: str) -> str:
        from tabulate import tabulate

        if not self:
            return ""
        headers = list(self[0])
        return tabulate([[("" if r.get(h) is None else r.get(h)) for h in headers] for r in self], headers=headers,
                        tablefmt=fmt, disable_numparse=True)

    def _repr_markdown_(self) -> str:
        return self._text("github")

    def _repr_html_(self) -> str:
        return self._text("html")

    def rows(self) -> list[dict[str, Any]]:
        return list(self)

    def to_dataframe(self):
        return dataframe(list(self), self.what)
