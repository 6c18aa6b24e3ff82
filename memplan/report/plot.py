"""`memplan estimate --plot FILE`: memory by component against the GPU's capacity, and the step's timeline.

A view of the same MemoryEstimate the table and the JSON show.  The axes are scaled to what is drawn (the data,
and the capacity when --gpu gives one), so the plot reads the same with or without a GPU.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from memplan.errors import MemplanError
from memplan.report.files import write_new_file
from memplan.spec.units import Units

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.memory import MemoryEstimate

CATEGORY_ORDER = ["weights", "gradients", "master_weights", "optimizer_states", "gathered_parameters", "buffers",
                  "activations", "temporaries", "other", "overheads"]
PALETTE = {"weights": "#4c72b0", "gradients": "#dd8452", "master_weights": "#937860", "optimizer_states": "#55a868",
           "gathered_parameters": "#8172b2", "buffers": "#da8bc3", "activations": "#c44e52",
           "temporaries": "#ccb974", "other": "#8c8c8c", "overheads": "#64b5cd"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MemplanError("--plot needs matplotlib: `pip install matplotlib` (or memplan[plot])") from None
    return plt


def estimate_plot(est: MemoryEstimate, path: str, units: Units = Units.GiB, force: bool = False) -> str:
    """Write the PNG; returns the path written."""
    plt = _pyplot()
    div = units.bytes
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 2.2], "wspace": 0.55})
    # left: what `required` is made of, at the peak, plus the overheads outside tensors
    peak = next((ph for ph in est.timeline if ph.name == est.peak_phase), None)
    parts = dict(peak.bytes) if peak is not None else {}
    parts["overheads"] = est.per_gpu.overheads
    bottom = 0.0
    for cat in [c for c in CATEGORY_ORDER if parts.get(c)]:
        v = parts[cat] / div
        ax1.bar(0, v, bottom=bottom, color=PALETTE[cat], width=0.6)
        if v > 0.03 * (est.per_gpu.required / div):
            ax1.text(0, bottom + v / 2, f"{v:,.1f}", ha="center", va="center", fontsize=8, color="white")
        bottom += v
    top = bottom
    if est.gpu_memory:
        cap = est.gpu_memory / div
        ax1.axhline(cap, color="red", ls="--", lw=1.2)
        ax1.text(0.32, cap, f"{est.gpu} {cap:,.0f} {units.value}", color="red", va="bottom", ha="right", fontsize=8)
        top = max(top, cap)
    ax1.set_ylim(0, top * 1.15 if top else 1)
    ax1.set_xlim(-0.6, 0.6)
    ax1.set_xticks([0], [f"required ({est.peak_phase} peak + overheads)"])
    ax1.set_ylabel(f"per GPU ({units.value})")
    verdict = "" if est.fits is None else (" — fits" if est.fits else " — DOES NOT FIT")
    ax1.set_title(f"{est.model}{verdict}", fontsize=10)
    from matplotlib.patches import Patch

    shown = [c for c in CATEGORY_ORDER if parts.get(c) or any(ph.bytes.get(c) for ph in est.timeline)]
    ax1.legend(handles=[Patch(color=PALETTE[c], label=c.replace("_", " ")) for c in shown], fontsize=7,
               loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    # right: the step's phases, stacked by category, the peak marked
    names = [ph.name for ph in est.timeline]
    bottoms = [0.0] * len(names)
    for cat in [c for c in CATEGORY_ORDER if any(ph.bytes.get(c) for ph in est.timeline)]:
        vals = [ph.bytes.get(cat, 0) / div for ph in est.timeline]
        ax2.bar(range(len(names)), vals, bottom=bottoms, color=PALETTE[cat])
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    top2 = max(bottoms, default=0.0)
    if est.gpu_memory:
        ax2.axhline(est.gpu_memory / div, color="red", ls="--", lw=1.2)
        top2 = max(top2, est.gpu_memory / div)
    for i, ph in enumerate(est.timeline):
        if ph.name == est.peak_phase:
            ax2.annotate("peak", (i, bottoms[i]), textcoords="offset points", xytext=(0, 4), ha="center",
                         fontsize=8)
    ax2.set_ylim(0, top2 * 1.15 if top2 else 1)
    ax2.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax2.set_ylabel(f"allocated per GPU ({units.value})")
    p = est.setup.layout
    ax2.set_title(f"the step: {p.gpus} GPU(s), ZeRO-{p.zero}, micro-batch {p.micro_batch} x seq {est.setup.seq}, "
                  f"recompute {p.recompute}", fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.92)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return str(write_new_file(path, buf.getvalue(), force=force, what="--plot"))
