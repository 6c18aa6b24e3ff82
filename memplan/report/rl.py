"""Plain-text view of an RL plan: the setup, memory per phase (one column per phase), the verdict, the time per RL
step, and the changes that fit."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tabulate import tabulate

from memplan.spec.units import Units, format_bytes, format_count

if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.rl import RLPhase, RLPlan


def _header(p: RLPlan) -> list[str]:
    w = p.workload
    ro = w.rollout
    engine = {"hf": "transformers generate (the policy)", "vllm-colocate":
              f"vLLM colocated, gpu_memory_utilization {w.vllm_utilization}, sleep level {ro.sleep_level}",
              "vllm-server": f"vLLM server on {ro.gpus} GPU(s), gpu_memory_utilization {w.vllm_utilization}"}
    lines = [f"{p.model}: {p.parameters:,} parameters ({format_count(p.parameters)}), {w.algorithm.upper()} with "
             f"{w.framework.upper()} conventions, policy {w.policy}"
             + (f" (rank {w.lora_rank})" if w.policy != "full" else "") + f", reference {p.reference}"]
    if w.online:
        lines.append(f"prompt {w.prompt_tokens:,} + completion {w.completion_tokens:,} = {p.sequence:,} tokens; "
                     f"G={w.num_generations}; {w.per_device_train_batch_size} completion(s) per GPU per micro-step x "
                     f"{w.generation_steps} step(s) per generation; beta {w.kl_beta:g}")
        lines.append(f"rollout: {engine[ro.kind]}")
    else:
        pairs = f" (chosen + rejected: {w.sequences_per_micro_batch} sequences)" \
            if w.algorithm in ("dpo", "orpo") else ""
        lines.append(f"sequence {p.sequence:,} tokens; {w.per_device_train_batch_size} pair(s) per GPU per micro-step"
                     f"{pairs}; beta {w.kl_beta:g}")
    lines.append(f"{w.gpus} training GPU(s), ZeRO-{w.zero}, gradient checkpointing "
                 f"{'on' if w.gradient_checkpointing else 'off'}, policy {w.model_dtype} under bf16 autocast")
    return lines


def _phase_table(phases: list[RLPhase], units: Units) -> str:
    names: list[str] = []
    for ph in phases:
        for c in ph.components:
            if c.name not in names:
                names.append(c.name)
    rows = []
    for n in names:
        row = [n]
        for ph in phases:
            v = next((c.bytes for c in ph.components if c.name == n), 0)
            row.append(format_bytes(v, units) if v else "-")
        rows.append(row)
    rows.append(["total"] + [format_bytes(ph.total, units) for ph in phases])
    return tabulate(rows, headers=["per training GPU"] + [ph.name for ph in phases], tablefmt="simple",
                    disable_numparse=True)


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:,.3g} s"


def rl_table(p: RLPlan, units: Units = Units.GiB) -> str:
    b = lambda x: format_bytes(x, units)  # noqa: E731
    out = _header(p) + ["", _phase_table(p.phases, units)]
    for ph in p.phases:
        if ph.note:
            out.append(f"  {ph.name}: {ph.note}")
    if p.rollout_gpu_phase is not None:
        r = p.rollout_gpu_phase
        out += ["", f"per rollout GPU ({r.note}): " + ", ".join(f"{c.name} {b(c.bytes)}" for c in r.components)
                + f"; total {b(r.total)}"]
    if p.host_ram_per_node:
        out.append(f"host RAM per node: {b(p.host_ram_per_node)} ({p.host_ram_note})")
    out.append("")
    if p.gpu is None:
        out.append(f"peak: {b(p.required)} in {p.peak_phase} (no --gpu: no verdict)")
    else:
        verdict = "FITS" if p.fits else "DOES NOT FIT"
        out.append(f"{verdict}: peak {b(p.required)} in {p.peak_phase} on the {p.gpu} ({b(p.gpu_memory or 0)}; "
                   f"headroom {b(p.headroom or 0)})")
        if p.vllm_refusal:
            out.append(f"  vLLM: {p.vllm_refusal}")
    if p.time is not None:
        t = p.time
        what = "completions" if p.workload.online else "pairs" if p.workload.algorithm in ("dpo", "orpo") \
            else "sequences"
        out += ["", f"time per {'RL' if p.workload.online else 'optimizer'} step ({t.completions} {what}, "
                    f"{t.tokens:,} tokens, {t.optimizer_steps:g} optimizer step(s)):",
                tabulate([["rollout", _seconds(t.rollout_seconds)], ["scoring", _seconds(t.scoring_seconds)],
                          ["update", _seconds(t.update_seconds)], ["weight sync", _seconds(t.sync_seconds)],
                          ["sleep/wake", _seconds(t.sleep_wake_seconds)], ["step", _seconds(t.step_seconds)]],
                         tablefmt="plain"),
                f"{t.tokens_per_second:,.0f} tokens/s; {t.gpu_hours_per_1000_steps:,.1f} GPU-hours per 1,000 steps "
                f"({t.gpus} GPU(s))"]
    if p.smallest_change is not None:
        o = p.smallest_change
        out.append(f"smallest change that fits: {o.change} (peak {b(o.required)} in {o.peak_phase}"
                   + (f", step {_seconds(o.step_seconds)}" if o.step_seconds else "") + ")")
    if p.fastest is not None:
        o = p.fastest
        out.append(f"fastest that fits: {o.change or 'as given'} (step {_seconds(o.step_seconds or 0)}, peak "
                   f"{b(o.required)} in {o.peak_phase})")
    if p.gpu is not None and not p.fits and p.smallest_change is None and p.options:
        out.append("nothing in the searched space fits (sleep, gpu_memory_utilization, micro-batch, checkpointing, "
                   "ZeRO, LoRA/QLoRA, separate rollout GPUs, and pairs of them)")
    if p.notes:
        out += ["", "notes:"] + [f"  - {n}" for n in p.notes]
    if p.time is not None:
        out += ["", "time assumptions:"] + [f"  - {a}" for a in p.time.assumptions]
    out += ["", "assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(out)


RL_PALETTE = {"policy": "#4c72b0", "reference": "#937860", "reward": "#8172b2", "critic": "#da8bc3",
              "rollout": "#55a868", "activations": "#c44e52", "temporaries": "#ccb974", "overheads": "#64b5cd"}


def rl_plot(p: RLPlan, path: str, units: Units = Units.GiB, force: bool = False) -> str:
    """Memory over the RL step: one stacked bar per phase (update split into its moments), by category, against the
    GPU.  Returns the path written (needs matplotlib)."""
    import io

    from memplan.report.files import write_new_file
    from memplan.report.plot import _pyplot

    plt = _pyplot()
    div = units.bytes
    bars: list[tuple[str, dict[str, int]]] = []
    for ph in p.phases:
        cats: dict[str, int] = {}
        for c in ph.components:
            cats[c.category] = cats.get(c.category, 0) + c.bytes
        bars.append((ph.name, cats))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(bars) + 3), 5))
    bottoms = [0.0] * len(bars)
    for cat, color in RL_PALETTE.items():
        vals = [b[1].get(cat, 0) / div for b in bars]
        if any(vals):
            ax.bar(range(len(bars)), vals, bottom=bottoms, color=color, label=cat)
            bottoms = [x + v for x, v in zip(bottoms, vals)]
    top = max(bottoms, default=0.0)
    if p.gpu_memory:
        ax.axhline(p.gpu_memory / div, color="red", ls="--", lw=1.2)
        ax.text(len(bars) - 0.5, p.gpu_memory / div, f"{p.gpu}", color="red", va="bottom", ha="right", fontsize=8)
        top = max(top, p.gpu_memory / div)
    for i, (name, _) in enumerate(bars):
        if name == p.peak_phase:
            ax.annotate("peak", (i, bottoms[i]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.set_ylim(0, top * 1.15 if top else 1)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=9)
    ax.set_ylabel(f"per training GPU ({units.value})")
    verdict = "" if p.fits is None else (" — fits" if p.fits else " — DOES NOT FIT")
    ax.set_title(f"{p.model} {p.workload.algorithm.upper()}: memory over the RL step{verdict}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.subplots_adjust(left=0.1, right=0.82, bottom=0.1, top=0.9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return str(write_new_file(path, buf.getvalue(), force=force, what="--plot"))
