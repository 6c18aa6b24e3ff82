"""`memplan serve`: how many GPUs, with which engine settings, serve a request rate under TTFT/TPOT targets.

The flags are generated from memplan/keywords.py ServeKeywords (and ServingKeywords for the engine's own settings),
the fields `memplan.serve` takes as keywords: one definition each, the same bounds and choices on both sides."""
from __future__ import annotations

import click

from memplan.cli.options import _stack, field_option, json_option
from memplan.cli.types import NAME, PATH, FiniteFloat
from memplan.keywords import SERVE_SERVING, ServeKeywords, ServingKeywords


def _float(name: str) -> FiniteFloat:
    field = ServeKeywords.model_fields[name]
    lo = next((m.gt for m in field.metadata if getattr(m, "gt", None) is not None), None)
    lo_closed = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
    hi = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
    hi = hi if hi is not None else next((m.lt for m in field.metadata if getattr(m, "lt", None) is not None), None)
    if lo is not None:
        return FiniteFloat(lo, True, hi, f"a number above {lo:g}" + (f", at most {hi:g}" if hi else ""))
    return FiniteFloat(lo_closed, False, hi, f"a number from {lo_closed:g} to {hi:g}")


_FLOATS = ("rate", "ttft_ms", "tpot_ms", "prefix_hit_rate", "acceptance_rate")
_OWN = [n for n in ServeKeywords.model_fields if n != "gpu"]
serve_options = _stack(*(
    field_option(ServeKeywords, n, type=_float(n)) if n in _FLOATS else
    field_option(ServeKeywords, n, type=PATH) if n == "trace" else
    field_option(ServeKeywords, n) for n in _OWN),
    *(field_option(ServingKeywords, n) for n in SERVE_SERVING if n not in ("gpu_memory_utilization",)),
    click.option("--gpu-memory-utilization", "gpu_memory_utilization", type=FiniteFloat(0.0, True, 1.0,
                 "a fraction in (0, 1]"), help="vllm: fraction of the GPU's memory vLLM may use."))


@click.command("serve")
@click.argument("model", metavar="MODEL", type=NAME)
@click.option("--gpu", "-g", "gpu", type=NAME, required=True, help="GPU profile name (see `memplan gpus`).")
@serve_options
@click.option("--plot", type=PATH, metavar="FILE.png", help="Also draw the Pareto plot (needs matplotlib).")
@click.option("--force", is_flag=True, help="Overwrite the --plot file if it exists.")
@json_option
def serve_command(model: str, gpu: str, plot: str | None, force: bool, as_json: bool, **kwargs) -> None:
    """Capacity planning: the serving layout with the fewest GPUs for a request rate under TTFT/TPOT targets.

    MODEL at --rate requests/s of --prompt + --output tokens (or --prompt-p90/--output-p90, or --trace FILE), with
    --ttft-ms / --tpot-ms targets: TP, max_num_seqs, max_num_batched_tokens, replicas, aggregated or disaggregated
    prefill/decode (P:D), from the roofline and a batching/queueing model; the Pareto table of output tokens/s per
    GPU against latency, the assumptions, and what the model cannot know.
    """
    import memplan.api as api
    from memplan.report.capacity import capacity_plot, capacity_table

    if plot is not None:
        from memplan.report.files import check_writable

        check_writable(plot, force, what="--plot")
    given = {k: v for k, v in kwargs.items() if v is not None}
    plan = api.serve(model, gpu, **given)
    click.echo(plan.model_dump_json(indent=2) if as_json else capacity_table(plan))
    if plot:
        written = capacity_plot(plan, plot)
        click.echo(f"memplan serve: plot written to {written}", err=True)
