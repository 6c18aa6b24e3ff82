"""`memplan bench --system MODEL [layout flags]`: sweep the GEMMs, attention, copies and collectives that MODEL's
layout runs on this GPU and write the record `memplan time/plan --system RUN.json` take (measure/sweep.py)."""
from __future__ import annotations

import click

from memplan.cli.options import (_stack, architecture_options, parallel_options, precision_options,
                                 workload_options)
from memplan.cli.types import NAME, BoundedInt

system_options = _stack(
    click.option("--system", "system_model", type=NAME, metavar="MODEL",
                 help="Sweep the shapes MODEL runs with the layout flags given (--tp, --pp, -b, --seq, ...) and "
                      "write a record for `memplan time/plan --system` (with --out)."),
    click.option("--nproc", type=BoundedInt(1, "gpus"), default=None,
                 help="With --system: ranks for the collective sweep (default: every visible GPU, at most 8)."),
    click.option("--execution", "system_execution", type=NAME,
                 help="With --system: the execution profile whose ops are swept (default: the engine's)."),
    architecture_options, precision_options, parallel_options, workload_options,
)

SYSTEM_KEYS = ("system_model", "nproc", "system_execution")


def run_system(kw: dict, device: str | None, gpu_name: str | None, repeats: int, out: str | None, force: bool,
               as_json: bool, progress) -> None:
    from memplan.cli.options import build_setup, pop_training_kwargs, resolve_gpu_for_device
    from memplan.cli.preflight import check_device, device_memory_bytes, need_torch

    if out:  # before any measurement
        from memplan.report.files import check_writable

        check_writable(out, force, "--out")
    nproc, execution = kw.pop("nproc"), kw.pop("system_execution")
    kw["model"] = kw.pop("system_model")
    setup = build_setup(**pop_training_kwargs(kw))
    torch = need_torch("memplan bench --system")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(torch, device)
    if nproc is None:
        nproc = min(torch.cuda.device_count(), 8) if device == "cuda" else 0
    gpu = resolve_gpu_for_device(gpu_name, device, progress)
    from memplan.measure.sweep import run_system_bench

    rec = run_system_bench(setup, device, repeats=repeats, gpu=gpu, nproc=nproc, execution=execution,
                           progress=progress, memory_bytes=device_memory_bytes(torch, device)[0])
    if out:
        from memplan.report.files import write_new_file

        written = write_new_file(out, rec.model_dump_json(indent=2) + "\n", force=force)
        progress(f"system record written to {written}; use it with `memplan time ... --system {written}`")
    if as_json:
        click.echo(rec.model_dump_json(indent=2))
        return
    from tabulate import tabulate

    click.echo(f"{rec.device_name} ({rec.device}), {rec.dtype}; the shapes {rec.model} runs with "
               f"{setup.layout.tp=}, {setup.layout.pp=}, micro-batch {setup.layout.micro_batch}, seq {setup.seq}"
               .replace("setup.layout.", ""))
    click.echo(tabulate([[f"{g.M}x{g.N}x{g.K}" + (f" x{g.batch}" if g.batch > 1 else ""), f"{g.seconds * 1e3:.3f}",
                          f"{g.tflops:.1f}", g.where[:70]] for g in rec.gemms],
                        headers=["GEMM MxNxK", "ms", "TFLOP/s", "runs in"]))
    for a in rec.attention:
        click.echo(f"attention b{a.batch} h{a.heads}/{a.kv_heads} s{a.seq} d{a.head_dim}: forward "
                   f"{a.forward_seconds * 1e3:.2f} ms, backward {a.backward_seconds * 1e3:.2f} ms")
    for b in rec.bandwidth:
        click.echo(f"copy {b.bytes / 2**20:,.0f} MiB (read + write): {b.gbps:,.1f} GB/s")
    for c in rec.collectives:
        click.echo(f"{c.collective} x{c.ranks} {c.bytes / 2**20:,.0f} MiB: busbw {c.busbw_gbps:,.1f} GB/s")
    for note in rec.notes:
        click.echo(f"note: {note}")
