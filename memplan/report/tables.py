"""Plain-text tables for memory estimates.  Every size names its unit; bytes/param names its convention."""
from __future__ import annotations

from tabulate import tabulate

from memplan.results.memory import MemoryEstimate
from memplan.spec.units import Units, format_bytes, format_count

LOCATION_ORDER = {"gpu": 0, "cpu": 1, "nvme": 2}


def _bpp(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def memory_table(est: MemoryEstimate, units: Units = Units.GiB) -> str:
    s = est.setup
    p = s.parallel
    exact = "" if est.parameters_exact else " (given count, no architecture)"
    lines = [
        f"{est.model}: {est.parameters:,} parameters ({format_count(est.parameters)}){exact}",
        f"recipe {s.recipe.name} ({s.recipe.description}), optimizer {s.optimizer.name}",
        f"{p.gpus} GPU(s): dp={p.dp} tp={p.tp} pp={p.pp}, ZeRO-{p.zero}, offload optimizer={p.offload_optimizer} "
        f"params={p.offload_params}",
        f"convention: {est.convention}",
        "",
    ]
    rows = []
    for c in sorted(est.components, key=lambda c: LOCATION_ORDER[c.location]):
        shard = f"/{c.sharded_over}" if c.sharded_over > 1 else ""
        where = c.location.upper() if c.location != "gpu" else "GPU"
        if c.location != "gpu":
            where += " (per node)"
        rows.append([c.name, c.dtype or "-", _bpp(c.bytes_per_param) + shard, format_bytes(c.bytes, units), where,
                     c.note])
    lines.append(tabulate(rows, headers=["component", "dtype", "B/param", f"size ({units.value})", "where", "note"]))
    g = est.per_gpu
    lines += ["", tabulate([
        ["model states per GPU", format_bytes(g.model_states, units),
         f"{est.bytes_per_param:.3g} B/param of the full model"],
        ["peak allocated per GPU", format_bytes(g.peak_allocated, units), f"phase: {est.peak_phase}"],
        ["required per GPU", format_bytes(g.required, units), "peak + overheads"],
        ["CPU RAM per node", format_bytes(est.cpu.total, units), ""],
        ["NVMe per node", format_bytes(est.nvme.total, units), ""],
    ], tablefmt="plain")]
    if est.gpu:
        verdict = "FITS" if est.fits else "DOES NOT FIT"
        head = format_bytes(abs(est.headroom or 0), units)
        lines.append(f"\n{verdict} on {est.gpu} ({format_bytes(est.gpu_memory, units)}): "
                     + (f"{head} headroom" if est.fits else f"short by {head}"))
    for n in est.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def compare_table(rows: list[tuple[str, MemoryEstimate]], units: Units = Units.GiB) -> str:
    first = rows[0][1]
    header = (f"{first.model}: {first.parameters:,} parameters on {first.setup.parallel.gpus} GPU(s) "
              f"(dp={first.setup.parallel.dp}), optimizer {first.setup.optimizer.name}; sizes per GPU in "
              f"{units.value}, CPU per node")
    table = []
    for label, e in rows:
        g = e.per_gpu
        table.append([
            label, e.setup.recipe.name,
            f"{e.bytes_per_param:.3g}",
            format_bytes(g.weights + g.gathered_parameters, units, 1).split()[0],
            format_bytes(g.gradients, units, 1).split()[0],
            format_bytes(g.master_weights, units, 1).split()[0],
            format_bytes(g.optimizer_states, units, 1).split()[0],
            format_bytes(g.activations + g.temporaries, units, 1).split()[0],
            format_bytes(g.required, units, 1).split()[0],
            format_bytes(e.cpu.total, units, 1).split()[0],
            "-" if e.fits is None else ("yes" if e.fits else "no"),
        ])
    headers = ["strategy", "recipe", "B/param/GPU", "weights", "grads", "master", "optim", "act+tmp",
               "required", "CPU/node", "fits"]
    return header + "\n" + tabulate(table, headers=headers, disable_numparse=True, colalign=("left", "left") +
                                    ("right",) * 9)
