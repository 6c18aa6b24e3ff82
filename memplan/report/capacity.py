"""How `memplan serve` looks: the answer, the layout, the Pareto table, the assumptions and the unknowns; the
Pareto plot (matplotlib, optional)."""
from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:  # the views read a result's fields; its class is named for type checkers only
    from memplan.results.capacity import CapacityLayout, CapacityPlan


def _ms(x: float) -> str:
    if x != x or x == float("inf"):
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _where(r: CapacityLayout) -> str:
    if r.mode == "aggregated":
        return f"{r.replicas} x TP{r.tp}"
    return f"{r.prefill_replicas} x TP{r.prefill_tp} P + {r.replicas} x TP{r.tp} D"


def _settings(r: CapacityLayout, engine: str) -> str:
    if engine == "sglang":
        text = (f"--tp {r.tp} --max-running-requests {r.max_num_seqs} --chunked-prefill-size "
                f"{r.max_num_batched_tokens}")
        flag = "--chunked-prefill-size"
    else:
        text = (f"--tensor-parallel-size {r.tp} --max-num-seqs {r.max_num_seqs} --max-num-batched-tokens "
                f"{r.max_num_batched_tokens}")
        flag = "--max-num-batched-tokens"
    if r.mode == "disaggregated":
        text += f" (prefill replicas: --tp {r.prefill_tp} {flag} {r.prefill_max_num_batched_tokens})"
    return text


def _layout_lines(title: str, r: CapacityLayout, plan: CapacityPlan) -> list[str]:
    eng = "vllm serve" if plan.engine == "vllm" else "sglang.launch_server"
    lines = [f"{title}: {r.mode}, {_where(r)} = {r.gpus} GPU(s)" + (f", P:D = {r.pd_ratio}" if r.pd_ratio else ""),
             f"  {eng} {_settings(r, plan.engine)}",
             f"  TTFT p50 {_ms(r.ttft_ms_p50)} ms, p90 {_ms(r.ttft_ms_p90)} ms;  TPOT p50 {_ms(r.tpot_ms_p50)} ms, "
             f"p90 {_ms(r.tpot_ms_p90)} ms;  step {_ms(r.step_ms)} ms",
             f"  {r.output_tokens_per_s:,.0f} output tokens/s ({r.output_tokens_per_s_per_gpu:,.0f} per GPU); "
             f"{r.running:,.1f} sequences decoding per replica on average",
             "  " + _use(r)]
    return lines


def _use(r: CapacityLayout) -> str:
    """What a replica holds and how much of it the load uses: its seats (max_num_seqs, or fewer when the KV cache
    holds fewer sequences of the mean context) and its prefill budget (perf/batching.py: utilization is the busier)."""
    seats = min(float(r.max_num_seqs), r.kv_sequences)
    seat_use = r.running / seats if seats > 0 else 0.0
    text = (f"{seats:,.0f} seats per replica (max_num_seqs {r.max_num_seqs}; the KV cache holds "
            f"{r.kv_sequences:,.0f} sequences of the mean context), {seat_use:.0%} in use")
    if r.utilization > seat_use + 0.005:  # the prefill budget is the busier (shown only when it differs)
        text += f"; prefill budget per step {r.utilization:.0%} in use"
    return text + (f" (the bound: {r.limit})" if r.limit else "")


def pareto_rows(plan: CapacityPlan) -> list[list[str]]:
    rows = []
    for r in plan.pareto:
        rows.append(["agg" if r.mode == "aggregated" else "disagg", _where(r), r.gpus, r.max_num_seqs,
                     r.max_num_batched_tokens,
                     f"{r.output_tokens_per_s_per_gpu:,.0f}", _ms(r.ttft_ms_p50), _ms(r.ttft_ms_p90),
                     _ms(r.tpot_ms_p50), _ms(r.tpot_ms_p90), "yes" if r.meets else "no"])
    return rows


def capacity_table(plan: CapacityPlan) -> str:
    from tabulate import tabulate

    L, t = plan.load, plan.targets
    load = (f"{L.rate:g} req/s" if L.rate is not None else f"concurrency {L.concurrency}")
    tg = ", ".join(x for x in ((f"TTFT <= {t.ttft_ms:g} ms" if t.ttft_ms else ""),
                               (f"TPOT <= {t.tpot_ms:g} ms" if t.tpot_ms else "")) if x) or "no latency targets"
    out = [f"{plan.model} on {plan.gpu} ({plan.engine}): {load}, prompt {L.prompt_mean:,.0f} / output "
           f"{L.output_mean:,.0f} tokens; targets {tg} at {t.percentile}", ""]
    if plan.best is not None:
        out += _layout_lines("Best", plan.best, plan)
    elif plan.closest is not None:
        out.append("NO LAYOUT MEETS THE TARGETS: " + (plan.why or ""))
        out += _layout_lines("Closest", plan.closest, plan)
    else:
        out.append("No layout: " + (plan.why or "nothing starts"))
    if plan.speculation:
        s = plan.speculation
        out.append(f"  speculative decoding: k={s.num_speculative_tokens}, acceptance {s.acceptance_rate} -> "
                   f"{s.tokens_per_step:.2f} tokens per step" + (f", draft {s.draft}" if s.draft else ""))
    if plan.pareto:
        out += ["", f"Pareto: output tokens/s per GPU against latency ({plan.candidates} layouts evaluated)",
                tabulate(pareto_rows(plan), headers=["mode", "replicas", "GPUs", "seqs", "chunk", "tok/s/GPU",
                                                     "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90", "meets"],
                         tablefmt="simple", disable_numparse=True)]
    if plan.skipped:
        out += ["", "Not started (memory): " + "; ".join(plan.skipped[:3])]
    out += ["", "Assumptions:"] + [f"  - {a}" for a in plan.assumptions]
    out += ["What this cannot know:"] + [f"  - {u}" for u in plan.unknowns]
    out += [f"note: {n}" for n in plan.notes]
    return "\n".join(out)


def capacity_plot(plan: CapacityPlan, path: str) -> str:
    """Output tokens/s per GPU against TPOT (the percentile targeted), every layout of the Pareto table, the best
    circled; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from memplan.errors import MemplanError

        raise MemplanError("--plot needs matplotlib: `pip install matplotlib`") from None
    p90 = plan.targets.percentile == "p90"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, marker in (("aggregated", "o"), ("disaggregated", "s")):
        rows = [r for r in plan.pareto if r.mode == mode]
        if rows:
            ax.scatter([r.tpot_ms_p90 if p90 else r.tpot_ms_p50 for r in rows],
                       [r.output_tokens_per_s_per_gpu for r in rows], marker=marker, label=mode)
    pick = plan.best or plan.closest
    if pick is not None:
        ax.scatter([pick.tpot_ms_p90 if p90 else pick.tpot_ms_p50], [pick.output_tokens_per_s_per_gpu], s=200,
                   facecolors="none", edgecolors="red", label="best" if plan.best else "closest")
    if plan.targets.tpot_ms:
        ax.axvline(plan.targets.tpot_ms, color="grey", linestyle="--", label="TPOT target")
    xs = [r.tpot_ms_p90 if p90 else r.tpot_ms_p50 for r in plan.pareto]
    if xs and max(xs) > 10 * max(min(xs), 1e-9):
        ax.set_xscale("log")
    ax.set_xlabel(f"TPOT {plan.targets.percentile} (ms)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(f"{plan.model} on {plan.gpu}: throughput per GPU vs latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
