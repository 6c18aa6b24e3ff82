"""How a multi-rank profile looks: per rank, measured beside estimated, then why they differ."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from memplan.spec.units import Units, format_bytes

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.distributed import DistributedProfile

# the fields measured beside estimated, in the table's order (measure/distributed.py compares the same)
COMPARED = ("weights", "master_weights", "gradients", "optimizer_states", "model_states", "gathered_parameters",
            "communication_buffers", "backend_device_bytes", "peak_allocated")

EXACT_BELOW_BYTES = 10 * 2**20  # small figures in exact bytes: padding differences are a few hundred bytes


def _b(n: int | None, units: Units) -> str:
    if n is None:
        return "-"
    if abs(n) < EXACT_BELOW_BYTES:
        return f"{n:,} B"
    return format_bytes(n, units)


def _ranks_label(ranks: list[int]) -> str:
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def distributed_table(p: DistributedProfile, units: Units = Units.GiB) -> str:
    head = [f"{p.model} ({p.parameters:,} parameters, {p.model_source}): {p.strategy} on {p.world_size} ranks "
            f"({p.backend}, {p.launcher}), {p.recipe}, {p.optimizer} ({p.optimizer_impl})",
            f"{p.wrapping}" + (f"; {p.mixed_precision}" if p.mixed_precision else ""),
            f"estimate: memplan estimate {p.estimate_flags}  [{p.estimate_convention.split(' (')[0]}]"]
    if p.losses:
        head.append("loss per step (mean over ranks): " + ", ".join(f"{x:.6f}" for x in p.losses))
    rows = []
    for r in p.ranks:
        for f in COMPARED:
            got, want = getattr(r.measured, f), getattr(r.estimated, f)
            if not got and not want:
                continue
            rows.append([r.rank, f, _b(got, units), _b(want, units),
                         _b(r.difference[f], units) if f in r.difference else "-"])
        rows.append([r.rank, f"(peak in {r.measured.peak_phase})", "", "", ""])
    table = tabulate(rows, headers=["rank", "field", "measured", "estimated", "measured - estimated"],
                     colalign=("right", "left", "right", "right", "right"))
    # one line per distinct explanation, with the ranks it applies to
    why: dict[tuple[str, str], list[int]] = {}
    for r in p.ranks:
        for f, text in r.explanations.items():
            why.setdefault((f, text), []).append(r.rank)
    lines = [f"  {f} ({_ranks_label(ranks)}): {text}" for (f, text), ranks in why.items()
             if not text.startswith("equal to the estimate")]
    same = [f for f in COMPARED if f in p.ranks[0].explanations and
            all(r.explanations.get(f, "").startswith("equal to the estimate") and getattr(r.measured, f, 0)
                for r in p.ranks)]
    out = "\n".join(head) + "\n\n" + table + "\n\nwhy:\n" + "\n".join(lines)
    if same:
        out += "\n  equal to the estimate on every rank shown: " + ", ".join(same)
    if p.notes:
        out += "\n\nnotes:\n" + "\n".join(f"  {n}" for n in p.notes)
    return out
