"""How a measured step looks beside its estimate: a table, a JSON object, a plot (matplotlib, optional)."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from tabulate import tabulate

from memplan.errors import MemplanError
from memplan.report.files import write_new_file
from memplan.spec.units import Units, format_bytes

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.memory import MemoryEstimate
    from memplan.results.profile import MeasuredStep

# (label, MeasuredStep field, PerGPU field)
ROWS = [
    ("weights", "weights", "weights"),
    ("gradients", "gradients", "gradients"),
    ("master weights", "master_weights", "master_weights"),
    ("optimizer states", "optimizer_states", "optimizer_states"),
    ("activations", "activations", "activations"),
    ("temporaries", "temporaries", "temporaries"),
    ("peak allocated", "peak_allocated", "peak_allocated"),
]
JSON_FIELDS = ("peak_allocated", "weights", "gradients", "master_weights", "optimizer_states", "activations",
               "temporaries")


def error_percent(estimated: int | None, measured: int | None) -> float | None:
    """(estimate - measurement) / measurement, in percent; None when nothing was measured."""
    if estimated is None or not measured:
        return None
    return 100.0 * (estimated - measured) / measured


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def profile_table(m: MeasuredStep, est: MemoryEstimate | None, units: Units = Units.GiB) -> str:
    lines = [
        f"{m.model}: {m.parameters:,} parameters ({m.model_source}), measured on {m.device}"
        + (f" ({m.cuda.device_name})" if m.cuda else ""),
        f"recipe {m.recipe}, optimizer {m.optimizer} ({m.optimizer_impl}), micro-batch {m.micro_batch} x seq {m.seq}, "
        f"recompute {m.recompute}, attention {m.attention}; torch {m.torch_version}",
        "",
    ]
    if m.oom:
        lines.append(f"OUT OF MEMORY during {m.oom_phase}: {m.oom_message}")
        lines.append("(figures below are what was measured before the error; no error % against the estimate)")
        lines.append("")
    # Categories are compared at the same moment: the estimate's figures for the phase where the measured peak
    # happened (comparing each side's own peak would set, say, backward's activations against the optimizer
    # step's zero). The peak itself is compared peak to peak.
    est_phases = {p.name: p for p in est.timeline} if est is not None else {}
    at = est_phases.get(m.peak_phase)
    rows = []
    for label, mf, ef in ROWS:
        measured = getattr(m, mf)
        if est is None:
            estimated = None
        elif mf == "peak_allocated" or at is None:
            estimated = getattr(est.per_gpu, ef)
        else:
            estimated = at.bytes.get(ef, 0) + (at.bytes.get("gathered_parameters", 0) if ef == "weights" else 0)
        # a relative error of a category that is (almost) empty on the measured side says nothing
        tiny = measured < 0.01 * max(m.peak_allocated, 1)
        rows.append([label, format_bytes(measured, units),
                     format_bytes(estimated, units) if estimated is not None else "-",
                     "-" if m.oom else "(~0 measured)" if tiny and estimated
                     else _pct(error_percent(estimated, measured))])
    rows.append(["peak phase", m.peak_phase, est.peak_phase if est is not None and est.peak_phase else "-", ""])
    lines.append(tabulate(rows, headers=[f"at the measured peak ({m.peak_phase})", f"measured ({units.value})",
                                         f"estimated ({units.value})", "error"]))
    lines.append("")
    phase_rows = []
    for p in m.phases:
        e = est_phases.get(p.name)
        row = [p.name, format_bytes(p.peak_bytes, units)]
        if est is not None:
            row += [format_bytes(e.total, units) if e else "-",
                    _pct(error_percent(e.total, p.peak_bytes)) if e and not m.oom else ""]
        if m.cuda:
            row += [format_bytes(p.allocated_peak_bytes, units), format_bytes(p.reserved_peak_bytes, units)]
        phase_rows.append(row)
    headers = (["phase", "measured tensor peak"] + (["estimated", "error"] if est is not None else [])
               + (["allocator peak", "reserved peak"] if m.cuda else []))
    lines.append(tabulate(phase_rows, headers=headers))
    if m.cuda:
        c = m.cuda
        lines += ["", tabulate([
            ["reserved peak", format_bytes(c.reserved_peak_bytes, units), "torch.cuda caching allocator"],
            ["NVML used", format_bytes(c.nvml_used_bytes, units), "this process, as the driver sees it"],
            ["context + libraries", format_bytes(c.context_overhead_bytes, units), "NVML used - reserved"],
            ["step time", f"{c.step_seconds * 1e3:.1f} ms" if c.step_seconds else "-",
             f"median of {len(c.step_seconds_all)} steps, CUDA events"],
            ["achieved", f"{c.achieved_tflops:.1f} TFLOP/s" if c.achieved_tflops else "-",
             "FlopCounterMode FLOPs / step time"],
            ["MFU / HFU", (f"{c.mfu:.1%} / {c.hfu:.1%}" if c.mfu is not None and c.hfu is not None else "-"),
             f"PaLM appendix B, peak {c.peak_tflops} TFLOP/s" if c.peak_tflops else "no GPU profile peak"],
        ], tablefmt="plain")]
    for n in m.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def profile_json(m: MeasuredStep, est: MemoryEstimate | None) -> dict:
    """The --json object: `measured` and `estimated` integer fields, error_percent of peak_allocated, device,
    and on cuda reserved_peak, step_seconds, achieved_tflops, mfu (null elsewhere)."""
    measured = {f: getattr(m, f) for f in JSON_FIELDS}
    measured["peak_phase"] = m.peak_phase
    estimated = None
    if est is not None:
        estimated = {f: getattr(est.per_gpu, f) for f in JSON_FIELDS}
        estimated["peak_phase"] = est.peak_phase
        estimated["required"] = est.per_gpu.required
    c = m.cuda
    return {
        "measured": measured,
        "estimated": estimated,
        # a step cut short by an out-of-memory has no peak to compare with
        "error_percent": None if m.oom else error_percent(est.per_gpu.peak_allocated if est else None,
                                                          m.peak_allocated),
        "device": m.device,
        "reserved_peak": c.reserved_peak_bytes if c else None,
        "step_seconds": c.step_seconds if c else None,
        "achieved_tflops": c.achieved_tflops if c else None,
        "mfu": c.mfu if c else None,
        "oom": m.oom,
        "oom_phase": m.oom_phase,
        "measurement": m.model_dump(mode="json", exclude={"setup", "timeline_bytes"}),
    }


def profile_plot(m: MeasuredStep, est: MemoryEstimate | None, path: str, capacity_bytes: int | None = None,
                 units: Units = Units.GiB, force: bool = False) -> None:
    """PNG: tensor bytes over the step (phases shaded) and the categories at the peak, measured vs estimated,
    against the GPU's capacity when known."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MemplanError("--plot needs matplotlib: `pip install matplotlib` (or memplan[plot])") from None
    div = units.bytes
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    ys = [v / div for v in m.timeline_bytes]
    ax1.plot(range(len(ys)), ys, lw=1.2, color="black")
    starts = sorted(m.timeline_phase_starts.items(), key=lambda kv: kv[1])
    colors = ["#dbe9f6", "#fde2cf", "#e3f1dc", "#efe1f4", "#f5f5dc"]
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(ys)
        ax1.axvspan(start, end, color=colors[i % len(colors)], lw=0)
        ax1.text((start + end) / 2, 0, name, ha="center", va="bottom", fontsize=8, rotation=90)
    if capacity_bytes:
        ax1.axhline(capacity_bytes / div, color="red", ls="--", lw=1, label="GPU capacity")
        ax1.legend(loc="upper left")
    ax1.set_xlabel("allocation/free events (sampled)")
    ax1.set_ylabel(f"tensor memory ({units.value})")
    ax1.set_title(f"{m.model} {m.recipe} b={m.micro_batch} s={m.seq} on {m.device}")
    cats = [r for r in ROWS if r[1] != "peak_allocated"]
    bottom_m = bottom_e = 0.0
    palette = ["#4c72b0", "#dd8452", "#937860", "#55a868", "#c44e52", "#8172b2"]
    for (label, mf, ef), color in zip(cats, palette):
        mv = getattr(m, mf) / div
        ax2.bar(0, mv, bottom=bottom_m, color=color, label=label)
        bottom_m += mv
        if est is not None:
            ev = getattr(est.per_gpu, ef) / div
            ax2.bar(1, ev, bottom=bottom_e, color=color)
            bottom_e += ev
    if capacity_bytes:
        ax2.axhline(capacity_bytes / div, color="red", ls="--", lw=1)
    ax2.set_xticks([0, 1] if est is not None else [0], ["measured", "estimated"] if est is not None else ["measured"])
    ax2.set_ylabel(units.value)
    ax2.set_title("at the peak")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_new_file(path, buf.getvalue(), force=force)
