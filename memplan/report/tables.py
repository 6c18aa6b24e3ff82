"""Plain-text tables for memory estimates.  Every size names its unit; bytes/param names its convention."""
from __future__ import annotations

from tabulate import tabulate

from memplan.results.memory import Comparison, MemoryEstimate
from memplan.spec.units import Units, format_bytes, format_count

LOCATION_ORDER = {"gpu": 0, "cpu": 1, "nvme": 2}


def _bpp(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


SECTIONS = [
    ("model states", ("weights", "gradients", "master_weights", "optimizer_states", "gathered_parameters")),
    ("activations (saved for backward)", ("activations",)),
    ("temporaries", ("temporaries",)),
    ("buffers in the allocator (communication buckets, cuBLAS workspace)", ("buffers",)),
    ("overheads outside tensors", ("overheads",)),
    ("KV cache", ("kv_cache",)),
]
NOTE_WIDTH = 60


def _note(note: str, footnotes: list[str]) -> str:
    """Short notes stay in the table; long assumptions become numbered footnotes under it."""
    if len(note) <= NOTE_WIDTH:
        return note
    footnotes.append(note)
    head = note.split(":")[0] if ":" in note[:NOTE_WIDTH] else note[: NOTE_WIDTH - 8].rsplit(" ", 1)[0]
    return f"{head} [{len(footnotes)}]"


def _tabulate_indented(rows: list[list[str]], headers: list[str]) -> str:
    # tabulate >= 0.10 takes preserve_whitespace as an argument: keep the indent under section titles
    return tabulate(rows, headers=headers, disable_numparse=True, preserve_whitespace=True)


def timeline_table(est: MemoryEstimate, units: Units = Units.GiB) -> str:
    """The step's phases side by side: what each holds, and which one is the peak."""
    order = ["weights", "gradients", "master_weights", "optimizer_states", "gathered_parameters", "activations",
             "temporaries", "buffers"]
    seen = {c for ph in est.timeline for c, v in ph.bytes.items() if v}
    cats = [c for c in order if c in seen] + sorted(seen - set(order))
    rows = []
    for ph in est.timeline:
        mark = "  <- peak" if ph.name == est.peak_phase else ""
        rows.append([ph.name] + [format_bytes(ph.bytes.get(c, 0), units).split()[0] for c in cats]
                    + [format_bytes(ph.total, units).split()[0] + mark])
    return (f"timeline of the step (peak of each phase, {units.value}):\n"
            + tabulate(rows, headers=["phase", *[c.replace("_", " ") for c in cats], "total"],
                       disable_numparse=True))


def assumed_lines(assumed, width: int = 118) -> list[str]:
    """`assumed: seq 4,096 (training default; the model allows 131,072: --seq to change), micro-batch 1
    (--micro-batch), ...`: every input that drives the answer and was not given, where the table is read."""
    if not assumed:
        return []
    parts = []
    for a in assumed:
        flag = "--" + a.input.replace("_", "-")
        value = f"{a.value:,}" if isinstance(a.value, int) else str(a.value)
        label = a.input.replace("_", "-")
        parts.append(f"{label} {value} ({a.why}: {flag} to change)" if a.input == "seq" else f"{label} {value} "
                     f"({flag})")
    import textwrap

    return textwrap.wrap("assumed: " + ", ".join(parts), width=width, subsequent_indent="  ",
                         break_on_hyphens=False)


def _host_ram_note(est: MemoryEstimate) -> str:
    """What the CPU RAM figure is: offloaded states, or (DeepSpeed's estimator without offload) the host RAM
    DeepSpeed needs while it initialises the model, with nothing offloaded."""
    host = [c for c in est.components if c.location == "cpu" and c.bytes]
    if not host:
        return ""
    if any("offload" in c.name for c in host):
        return "offloaded states"
    return "host RAM DeepSpeed needs at init (nothing offloaded)"


def memory_table(est: MemoryEstimate, units: Units = Units.GiB) -> str:
    s = est.setup
    p = s.layout
    exact = "" if est.parameters_exact else " (given count, no architecture)"
    w = s.workload
    lines = [
        f"{est.model}: {est.parameters:,} parameters ({format_count(est.parameters)}){exact}"
        + (f", trained as {est.objective}" if est.objective and est.objective != "causal-lm" else ""),
        *([f"layers: {est.layers}"] if est.layers else []),
        f"recipe {s.recipe.name} ({s.recipe.description}), optimizer {s.optimizer.name}",
        f"{p.gpus} GPU(s): dp={p.dp} tp={p.tp} pp={p.pp}" + (f" cp={p.cp}" if p.cp > 1 else "")
        + (f" ep={p.ep}" if p.ep > 1 else "") + f", ZeRO-{p.zero}, offload optimizer={p.offload_optimizer} "
        f"params={p.offload_params}",
        f"step: micro-batch {p.micro_batch} x seq {s.seq}, recompute {p.recompute}, attention {w.attention}, "
        f"activation rows {est.activation_profile or w.implementation}",
        *assumed_lines(est.assumed),
        f"convention: {est.convention}",
        "",
    ]
    footnotes: list[str] = []
    rows = []
    for title, cats in SECTIONS:
        comps = [c for c in est.components if c.category in cats]
        if not comps:
            continue
        rows.append([f"{title}:", "", "", "", "", ""])
        for c in sorted(comps, key=lambda c: LOCATION_ORDER[c.location]):
            shard = f"/{c.sharded_over}" if c.sharded_over > 1 else ""
            where = "GPU" if c.location == "gpu" else f"{c.location.upper()} (per node)"
            rows.append([f"   {_short(c.name)}", c.dtype or "", _bpp(c.bytes_per_param) + shard if c.bytes_per_param
                         is not None else "", format_bytes(c.bytes, units), where, _note(c.note, footnotes)])
    lines.append(_tabulate_indented(rows, headers=["component", "dtype", "B/param", f"size ({units.value})",
                                                   "where", "note"]))
    if len(est.timeline) > 1:
        lines += ["", timeline_table(est, units)]
    g = est.per_gpu
    summary = [
        ["model states per GPU", format_bytes(g.model_states, units),
         f"{est.bytes_per_param:.3g} B/param of the full model"],
    ]
    if g.activations or g.temporaries:
        summary += [["activations at the peak", format_bytes(g.activations, units), ""],
                    ["temporaries at the peak", format_bytes(g.temporaries, units), ""]]
    summary += [
        ["peak allocated per GPU", format_bytes(g.peak_allocated, units),
         f"during {est.peak_phase} (compare torch.cuda.max_memory_allocated)"],
        ["required per GPU", format_bytes(g.required, units), "peak + overheads: compared with the GPU's memory"],
        ["CPU RAM per node", format_bytes(est.cpu.total, units), _host_ram_note(est)],
        ["NVMe per node", format_bytes(est.nvme.total, units), ""],
    ]
    lines += ["", tabulate(summary, tablefmt="plain", disable_numparse=True)]
    if est.gpu:
        verdict = "FITS" if est.fits else "DOES NOT FIT"
        head = format_bytes(abs(est.headroom or 0), units)
        lines.append(f"\n{verdict} on {est.gpu} ({format_bytes(est.gpu_memory, units)}): "
                     + (f"{head} headroom" if est.fits else f"short by {head}"))
        if not est.fits:
            lines.append(f"would fit with: {est.hint}" if est.hint else
                         "no single change fits (tried recompute, smaller micro-batches, ZeRO, offload, up to "
                         "1024x the GPUs): see `memplan plan`")
    if est.max_micro_batch is not None or est.max_seq is not None:
        if est.max_micro_batch is not None:
            lines.append(f"largest micro-batch that fits: {est.max_micro_batch}")
        if est.max_seq is not None:
            lines.append(f"longest sequence that fits: {est.max_seq}")
    for n in est.notes:
        if not any(n.endswith(f) for f in footnotes):  # already said as a footnote of its line
            lines.append(f"note: {n}")
    for i, f in enumerate(footnotes, 1):
        lines.append(f"[{i}] {f}")
    return "\n".join(lines)


def compare_table(cmp: Comparison, units: Units = Units.GiB) -> str:
    rows = [(r.strategy, r.estimate) for r in cmp.strategies]
    first = rows[0][1]
    header = (f"{first.model}: {first.parameters:,} parameters on {first.setup.layout.gpus} GPU(s) "
              f"(dp={first.setup.layout.dp}), optimizer {first.setup.optimizer.name}; sizes per GPU in "
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


COMPONENT_NAME_CHARS = 72  # a traced row names every op that saves its storage; --json keeps the whole name


def _short(name: str) -> str:
    """A component's name cut to fit the table, at a '; ' between ops when there is one."""
    if len(name) <= COMPONENT_NAME_CHARS:
        return name
    cut = name.rfind("; ", 0, COMPONENT_NAME_CHARS - 5)
    return (name[:cut] if cut > 0 else name[:COMPONENT_NAME_CHARS - 5]) + "; ..."
