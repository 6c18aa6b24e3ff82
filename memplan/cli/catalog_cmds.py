"""`memplan models` and `memplan gpus`: what the built-in profiles hold."""
from __future__ import annotations

import json

import click
from tabulate import tabulate

from memplan.cli.options import json_option, units_option, units_of
from memplan.spec.units import format_bytes, format_count


def _positions(indices: list[int]) -> str:
    """Layer indices as a reader scans them: '0-2', '0, 2, ..., 40 (every 2nd)', '3-60'."""
    if len(indices) == 1:
        return str(indices[0])
    steps = {b - a for a, b in zip(indices, indices[1:])}
    if steps == {1}:
        return f"{indices[0]}-{indices[-1]}"
    if len(steps) == 1:
        step = steps.pop()
        return f"{indices[0]}, {indices[1]}, ..., {indices[-1]} (every {step})"
    shown = ", ".join(str(i) for i in indices[:6])
    return shown + (", ..." if len(indices) > 6 else "")


def _kinds(a) -> list[tuple[object, list[int]]]:
    """Distinct layer specs with the indices of the layers that have them, in order of first appearance."""
    where: dict[object, list[int]] = {}
    i = 0
    for g in a.groups:
        where.setdefault(g.layer, []).extend(range(i, i + g.count))
        i += g.count
    return list(where.items())


def _attention_text(att) -> str:
    extras = []
    if att.softcap:
        extras.append(f"softcap {att.softcap:g}")
    if att.sinks:
        extras.append("sinks")
    if att.qk_norm != "none":
        extras.append(f"{att.qk_norm} q/k norm")
    if att.position == "rotary" and att.rotary_fraction < 1:
        extras.append(f"rotary {att.rotary_fraction:.3g} of head dim")
    if att.position in ("learned", "alibi"):
        extras.append(att.position)
    if not att.causal:
        extras.append("bidirectional")
    return f"{att.describe()} {att.kind.upper()}" + (f" ({', '.join(extras)})" if extras else "")


def _heads_text(att) -> str:
    if att.mla:
        q = f"q rank {att.q_lora_rank}" if att.q_lora_rank else "full q"
        return (f"{att.heads} heads, {att.head_dim}/{att.value_dim} dim, kv rank {att.kv_lora_rank} + rope "
                f"{att.qk_rope_head_dim}, {q}")
    return f"{att.heads}/{att.kv_heads} x {att.head_dim}"


def _ffn_text(ffn) -> str:
    act = ("GLU " if ffn.gated else "") + ffn.activation
    return f"{ffn.describe()} {act}"


def _short_kinds(a) -> str:
    """One cell for the list: the layer kinds' counts where the layers differ ('21 sliding 4096 + 21 global')."""
    def tally(key) -> list[tuple[str, int]]:
        out: dict[str, int] = {}
        for g in a.groups:
            out[key(g.layer)] = out.get(key(g.layer), 0) + g.count
        return list(out.items())

    def window(s) -> str:
        if s.attn is None:  # a recurrent/convolutional mixer layer
            return s.mixer.describe()
        att = s.attention
        if att.window_kind == "sliding":
            return f"sliding {att.window}"
        if att.window_kind == "chunked":
            return f"chunked {att.window}"
        return "global NoPE" if att.position == "none" else "global"

    def ffn(s) -> str:
        f = s.ffn
        if not f.moe:
            return "dense"
        shared = "+shared" if f.shared_intermediate_size else ""
        return f"MoE {f.experts}x{f.intermediate_size} top-{f.top_k}{shared}"

    parts = []
    attn = tally(window)
    if len(attn) > 1 or attn[0][0] != "global":
        parts.append(" + ".join(f"{n} {k}" for k, n in attn))
    ffns = tally(ffn)
    if len(ffns) > 1 or ffns[0][0] != "dense":
        parts.append(" + ".join(f"{n} {k}" if len(ffns) > 1 else k for k, n in ffns))
    if a.first_attention is not None and a.first_attention.mla:
        parts.insert(0, "MLA")
    return "; ".join(parts)


@click.command("models")
@click.argument("name", required=False)
@json_option
def models_command(name: str | None, as_json: bool) -> None:
    """List model profiles, or show NAME (a profile, count or config.json) with its layer groups and parameter
    breakdown."""
    import memplan.catalog as catalog

    if name is None:
        items = catalog.models()
        if as_json:
            click.echo(json.dumps({k: v.model_dump(mode="json") for k, v in items.items()}, indent=2))
            return
        rows = []
        for key, m in items.items():
            a, pc = m.architecture, m.parameters
            att = a.first_attention if a else None
            rows.append([key, f"{pc.total:,}", format_count(pc.total),
                         format_count(pc.active) if pc.active != pc.total else "",
                         a.family if a else "-", a.n_layers if a else "-", a.hidden_size if a else "-",
                         (f"{att.heads} MLA" if att.mla else f"{att.heads}/{att.kv_heads}") if att else "-",
                         a.vocab_size if a else "-", _short_kinds(a) if a else ""])
        click.echo(tabulate(rows, headers=["name", "parameters", "", "active", "family", "layers", "hidden",
                                           "heads/kv", "vocab", "layer kinds"], disable_numparse=True))
        return
    m = catalog.resolve_model(name)
    pc = m.parameters
    if as_json:
        click.echo(json.dumps({"model": m.model_dump(mode="json"), "parameters": pc.model_dump()}, indent=2))
        return
    click.echo(f"{m.name}" + (f"  ({m.source})" if m.source else ""))
    if m.architecture is not None:
        _show_architecture(m.architecture, pc)
    _show_parameters(m, pc)


def _show_architecture(a, pc) -> None:
    from memplan.families.registry import find_family

    fam = find_family(a.family)
    cls = fam.transformers_class if fam is not None and isinstance(fam.transformers_class, str) else None
    hd = a.head
    facts = [f"family {a.family}" + (f" ({cls})" if cls else ""), f"hidden {a.hidden_size}",
             f"vocab {a.vocab_size}", f"max positions {a.max_positions}", f"{a.first.norm.kind} ({a.first.norm_place})"]
    if a.embeddings.scale:
        facts.append("scaled embeddings")
    if a.embeddings.learned_positions:
        facts.append("learned positions")
    if hd.lm_head and hd.tied:
        facts.append("tied LM head")
    if hd.softcap:
        facts.append(f"logit softcap {hd.softcap:g}")
    if hd.objective != "causal-lm":
        facts.append(f"objective {hd.objective}" + (" (MLM head)" if hd.mlm_transform else "")
                     + (" + pooler" if hd.pooler else ""))
    click.echo(", ".join(facts))
    click.echo(a.describe_layers())
    click.echo()
    rows = []
    for spec, where in _kinds(a):
        lp = spec.parameters(a.hidden_size, a.module_names)
        mixer = spec.mixer.describe() if spec.mixer is not None else ""
        attn_text = " + ".join(x for x in (_attention_text(spec.attn) if spec.attn else "", mixer) if x)
        heads = _heads_text(spec.attn) if spec.attn else f"{spec.mixer.heads or '-'} (mixer)"
        rows.append([len(where), _positions(where), attn_text, heads,
                     _ffn_text(spec.ffn), f"{lp.total:,}",
                     f"{lp.active:,}" if lp.active != lp.total else "", f"{len(where) * lp.total:,}"])
    click.echo(tabulate(rows, headers=["layers", "at", "attention", "heads/kv x dim", "FFN", "per layer",
                                       "active/layer", "all of them"], disable_numparse=True,
                        colalign=("right", "left", "left", "left", "left", "right", "right", "right")))
    click.echo()


def _show_parameters(m, pc) -> None:
    a = m.architecture
    rows = [[k, f"{getattr(pc, k):,}", f"{100 * getattr(pc, k) / pc.total:.2f}%"]
            for k in ("embeddings", "attention", "mlp", "norms", "lm_head") if getattr(pc, k)]
    if a is not None:
        if a.head.pooler:
            n = a.hidden_size ** 2 + a.hidden_size
            rows.append(["pooler", f"{n:,}", f"{100 * n / pc.total:.2f}%"])
        for x in a.extras:
            rows.append([x.name, f"{x.params:,}", f"{100 * x.params / pc.total:.2f}%"])
    if pc.mtp:
        rows.append(["MTP modules (trained)", f"{pc.mtp:,}", f"{100 * pc.mtp / pc.total:.2f}%"])
    rows.append(["total", f"{pc.total:,}", format_count(pc.total)])
    if pc.active != pc.total:
        rows.append(["active per token (MoE)", f"{pc.active:,}", format_count(pc.active)])
    if pc.mtp_declared and not pc.mtp:
        rows.append(["MTP modules (declared, not in total)", f"{pc.mtp_declared:,}", format_count(pc.mtp_declared)])
    if m.published_parameters:
        same = "matches" if m.published_parameters == pc.total else "DIFFERS"
        rows.append(["published", f"{m.published_parameters:,}", same])
    click.echo(tabulate(rows, headers=["component", "parameters", "share"], disable_numparse=True,
                        colalign=("left", "right", "right")))
    notes = []
    if a is not None:
        notes += [f"{x.name}: {x.note}" for x in a.extras if x.note]
        if a.mtp is not None and not a.mtp.trained:
            notes.append(f"MTP: {a.mtp.depth} multi-token-prediction module(s) declared by the config (each a "
                         "MoE layer, enorm/hnorm, eh_proj and a norm; embeddings and head shared); transformers "
                         "does not build them, so they are not in the total")
    for n in notes:
        click.echo(f"note: {n}")


@click.command("gpus")
@click.argument("name", required=False)
@units_option
@json_option
def gpus_command(name: str | None, units: str, as_json: bool) -> None:
    """List GPU profiles (dense peak TFLOP/s, no sparsity), or show NAME with its sources."""
    import memplan.catalog as catalog

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
    import memplan.catalog as catalog

    items = catalog.interconnects()
    if as_json:
        click.echo(json.dumps({k: v.model_dump(mode="json") for k, v in items.items()}, indent=2))
        return
    rows = [[k, v.scope, f"{v.bandwidth_gbps:g}", f"{v.latency_us:g}", (v.sources or [""])[0][:70]]
            for k, v in sorted(items.items(), key=lambda kv: (kv[1].scope, -kv[1].bandwidth_gbps))]
    click.echo(tabulate(rows, headers=["interconnect", "scope", "GB/s per GPU", "latency us", "source"],
                        disable_numparse=True))
