"""`memplan models` and `memplan gpus`: what the built-in profiles hold."""
from __future__ import annotations

import json

import click
from tabulate import tabulate

from memplan.cli.options import json_option, units_option, units_of
from memplan.spec.units import format_bytes, format_count


@click.command("models")
@click.argument("name", required=False)
@json_option
def models_command(name: str | None, as_json: bool) -> None:
    """List model profiles, or show NAME (a profile, count or config.json) with its parameter breakdown."""
    from memplan import catalog

    if name is None:
        items = catalog.models()
        if as_json:
            click.echo(json.dumps({k: v.model_dump(mode="json") for k, v in items.items()}, indent=2))
            return
        rows = []
        for key, m in items.items():
            a, pc = m.architecture, m.parameters
            rows.append([key, f"{pc.total:,}", format_count(pc.total),
                         f"{pc.active:,}" if pc.active != pc.total else "",
                         a.family if a else "-", a.n_layers if a else "-", a.hidden_size if a else "-",
                         f"{a.n_heads}/{a.kv_heads}" if a else "-", a.vocab_size if a else "-"])
        click.echo(tabulate(rows, headers=["name", "parameters", "", "active (MoE)", "family", "layers", "hidden",
                                           "heads/kv", "vocab"], disable_numparse=True))
        return
    m = catalog.resolve_model(name)
    pc = m.parameters
    if as_json:
        click.echo(json.dumps({"model": m.model_dump(mode="json"), "parameters": pc.model_dump()}, indent=2))
        return
    click.echo(f"{m.name}" + (f"  ({m.source})" if m.source else ""))
    if m.architecture is not None:
        a = m.architecture
        fields = a.model_dump(exclude_defaults=False)
        click.echo(tabulate([[k, v] for k, v in fields.items() if v not in (None, False, 0, 0.0) or k in
                             ("tied_embeddings",)], tablefmt="plain"))
        click.echo()
    rows = [[k, f"{getattr(pc, k):,}", f"{100 * getattr(pc, k) / pc.total:.2f}%"]
            for k in ("embeddings", "attention", "mlp", "norms", "lm_head", "other") if getattr(pc, k)]
    rows.append(["total", f"{pc.total:,}", format_count(pc.total)])
    if pc.active != pc.total:
        rows.append(["active per token (MoE)", f"{pc.active:,}", format_count(pc.active)])
    if m.published_parameters:
        same = "matches" if m.published_parameters == pc.total else "DIFFERS"
        rows.append(["published", f"{m.published_parameters:,}", same])
    click.echo(tabulate(rows, headers=["component", "parameters", "share"], disable_numparse=True,
                        colalign=("left", "right", "right")))


@click.command("gpus")
@click.argument("name", required=False)
@units_option
@json_option
def gpus_command(name: str | None, units: str, as_json: bool) -> None:
    """List GPU profiles (dense peak TFLOP/s, no sparsity), or show NAME with its sources."""
    from memplan import catalog

    u = units_of(units)
    items = catalog.gpus() if name is None else {name: catalog.get_gpu(name)}
    if as_json:
        click.echo(json.dumps({k: v.model_dump(mode="json") for k, v in items.items()}, indent=2))
        return
    rows = []
    for key, g in items.items():
        t = g.peak_tflops
        rows.append([key, format_bytes(g.memory_bytes, u, 0), f"{g.memory_bandwidth_gbps:,.0f}",
                     *(f"{t[d]:g}" if d in t else "-" for d in ("fp32", "tf32", "bf16", "fp16", "fp8")),
                     g.interconnect or "-"])
    click.echo(tabulate(rows, headers=["gpu", "memory", "GB/s", "fp32", "tf32", "bf16", "fp16", "fp8",
                                       "interconnect"], disable_numparse=True))
    click.echo("TFLOP/s are dense peaks (no 2:4 sparsity).")
    if name is not None:
        g = next(iter(items.values()))
        for s in g.sources:
            click.echo(f"source: {s}")
        if g.notes:
            click.echo(f"notes: {g.notes}")


@click.command("interconnects")
@json_option
def interconnects_command(as_json: bool) -> None:
    """List interconnect profiles (per-GPU, one-direction GB/s)."""
    from memplan import catalog

    items = catalog.interconnects()
    if as_json:
        click.echo(json.dumps({k: v.model_dump(mode="json") for k, v in items.items()}, indent=2))
        return
    rows = [[k, v.scope, f"{v.bandwidth_gbps:g}", f"{v.latency_us:g}", (v.sources or [""])[0][:70]]
            for k, v in sorted(items.items(), key=lambda kv: (kv[1].scope, -kv[1].bandwidth_gbps))]
    click.echo(tabulate(rows, headers=["interconnect", "scope", "GB/s per GPU", "latency us", "source"],
                        disable_numparse=True))
