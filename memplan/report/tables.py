"""Plain-text tables for memory estimates.  Every size names its unit; bytes/param names its convention."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from memplan.spec.units import Units, format_bytes, format_count, format_number

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.memory import Comparison, MemoryEstimate

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
SMALL_ROW = 2**20  # activation rows under 1 MiB per GPU are one "other" line in the table (--verbose lists them)


def _note(note: str, footnotes: list[str], numbered: bool = False) -> str:
    """Short notes stay in the table; a long one shows its head, and its whole text is a source (listed under
    the table with --verbose, `numbered`)."""
    if len(note) <= NOTE_WIDTH:
        return note
    footnotes.append(note)
    head = note.split(":")[0] if ":" in note[:NOTE_WIDTH] else note[: NOTE_WIDTH - 8].rsplit(" ", 1)[0]
    return f"{head} [{len(footnotes)}]" if numbered else head


def _activation_rows(comps: list, verbose: bool) -> list:
    """Activation components as the table lists them: a name with its row count, and the small ones grouped."""
    shown, small = [], []
    for c in comps:
        label = c.name + (f" ({c.rows} rows)" if getattr(c, "rows", 1) > 1 else "")
        c = c.model_copy(update={"name": label})
        # a row LoRA emptied keeps its line: its note says what is not saved
        (small if not verbose and abs(c.bytes) < SMALL_ROW and "LoRA" not in c.note else shown).append(c)
    if len(small) == 1:
        shown.append(small[0])
    elif small:
        shown.append(small[0].model_copy(update={
            "name": f"other, {len(small)} rows", "bytes": sum(c.bytes for c in small), "note": "each under 1 MiB "
            "(--verbose lists them)", "dtype": None, "bytes_per_param": None, "detail": ""}))
    return shown


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
        rows.append([ph.name] + [format_number(ph.bytes.get(c, 0), units) for c in cats]
                    + [format_number(ph.total, units) + mark])
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


def memory_table(est: MemoryEstimate, units: Units = Units.GiB, verbose: bool = False) -> str:
    """The breakdown, timeline and verdict.  `verbose`: every activation row (none grouped) with the traced ops
    behind it, and the sources of the assumptions in full."""
    s = est.setup
    p = s.layout
    exact = "" if est.parameters_exact else " (given count, no architecture)"
    w = s.workload
    lines = [
        f"{est.model}: {est.parameters:,} parameters ({format_count(est.parameters)}){exact}"
        + (f", trained as {est.objective}" if est.objective and est.objective != "causal-lm" else "")
        + (f" with a {s.model.arch.head.describe()}" if est.objective == "sequence-classification"
           and s.model.architecture is not None else ""),
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
        if "activations" in cats:
            comps = _activation_rows(comps, verbose)
        for c in sorted(comps, key=lambda c: LOCATION_ORDER[c.location]):
            shard = f"/{c.sharded_over}" if c.sharded_over > 1 else ""
            where = "GPU" if c.location == "gpu" else f"{c.location.upper()} (per node)"
            rows.append([f"   {_short(c.name)}", c.dtype or "", _bpp(c.bytes_per_param) + shard if c.bytes_per_param
                         is not None else "", format_bytes(c.bytes, units), where,
                         _note(c.note, footnotes, numbered=verbose)])
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
        if not any(n.endswith(f) for f in footnotes):  # already said as a source of its line
            lines.append(f"note: {n}")
    if verbose:
        detailed = [c for c in est.components if c.category == "activations" and c.detail]
        if detailed:
            lines += ["", "activation rows, as traced (module: op that made the tensor, saved by op @ module):"]
            lines += [f"  {c.name}: {c.detail}" for c in detailed]
        if footnotes:
            lines += ["", "sources:"] + [f"[{i}] {f}" for i, f in enumerate(footnotes, 1)]
    return "\n".join(lines)


SETUP_ROWS = 20  # fields the reading table lists by default


def setup_reading_table(path: str, fmt: str, table: list[tuple[str, str, str]], ignored: list[str],
                        verbose: bool = False) -> str:
    """What a --setup file gave, for stderr: a header line, then field, value and the file's key per field; the
    ignored keys as a count (every one, with its reason, under --verbose)."""
    head = f"setup file {path} ({fmt}): read {len(table)} field(s)" + (
        f", ignored {len(ignored)}" if ignored else "")
    rows = table if verbose or len(table) <= SETUP_ROWS else table[:SETUP_ROWS]
    out = [head]
    if rows:
        text = tabulate([[f, v, k] for f, v, k in rows], headers=["field", "value", "from (key in the file)"],
                        disable_numparse=True, tablefmt="plain")
        out += ["  " + line.rstrip() for line in text.splitlines()]
    if len(rows) < len(table):
        out.append(f"  ... and {len(table) - len(rows)} more field(s) (--verbose lists them)")
    if ignored:
        if verbose:
            out.append(f"ignored {len(ignored)} key(s):")
            out += [f"  {i}" for i in ignored]
        else:
            out.append(f"ignored {len(ignored)} key(s) (--verbose lists them)")
    return "\n".join(out)


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
            format_number(g.weights + g.gathered_parameters, units, 1),
            format_number(g.gradients, units, 1),
            format_number(g.master_weights, units, 1),
            format_number(g.optimizer_states, units, 1),
            format_number(g.activations + g.temporaries, units, 1),
            format_number(g.required, units, 1),
            format_number(e.cpu.total, units, 1),
            "-" if e.fits is None else ("yes" if e.fits else "no"),
        ])
    headers = ["strategy", "recipe", "B/param/GPU", "weights", "grads", "master", "optim", "act+tmp",
               "required", "CPU/node", "fits"]
    return header + "\n" + tabulate(table, headers=headers, disable_numparse=True, colalign=("left", "left") +
                                    ("right",) * 9)


COMPONENT_NAME_CHARS = 90  # activation rows are named by what they are (short); --json keeps every field


def _short(name: str) -> str:
    """A component's name cut to fit the table (at a word when it can be)."""
    if len(name) <= COMPONENT_NAME_CHARS:
        return name
    cut = name.rfind(" ", 0, COMPONENT_NAME_CHARS - 3)
    return (name[:cut] if cut > COMPONENT_NAME_CHARS // 2 else name[:COMPONENT_NAME_CHARS - 3]) + "..."
