"""`memplan bench`: matmul TFLOP/s per dtype and memory bandwidth of this device, against its GPU profile."""
from __future__ import annotations

import click

from memplan.cli.bench_system import SYSTEM_KEYS, run_system, system_options
from memplan.cli.options import json_option
from memplan.cli.types import NAME, PATH, BoundedInt, NonEmptyText
from memplan.errors import MemplanError


def _progress(msg: str) -> None:
    click.echo(f"memplan bench: {msg}", err=True)


@click.command("bench")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None,
              help="Default: cuda if torch sees one, else the CPU (and says so).")
@click.option("--gpu", "-g", "gpu_name", type=NAME,
              help="GPU profile to compare with (default: the device's own name).")
@click.option("--dtypes", type=NonEmptyText("a comma-separated list of dtypes"), default=None,
              help="Comma-separated: fp32, tf32, bf16, fp16, fp8 (fp8 only on sm_89+). Default: all on cuda; "
                   "fp32,bf16 on cpu (CPU fp16 matmuls have no fast kernel: seconds each).")
@click.option("--size", "n", type=BoundedInt(64, "matrix"),
              help="Matrix size n (default 8192 on cuda, 1024 on cpu).")
@click.option("--repeats", type=BoundedInt(1, "repeat"), default=10, show_default=True)
@click.option("--out", type=PATH, help="Save the results as JSON (the achievable ceiling).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@system_options
@json_option
def bench_command(device, gpu_name, dtypes, n, repeats, out, force, as_json, **system) -> None:
    """Measure tensor-core TFLOP/s per dtype and device memory bandwidth; with --system MODEL, the GEMMs,
    attention, copies and collectives MODEL's layout runs, as a record for `memplan time/plan --system`.

    An out-of-memory is a result: the measurements made before it, and "oom": true in --out.
    """
    if system.get("system_model"):
        return run_system(system, device, gpu_name, repeats, out, force, as_json, _progress)
    if any(system.get(k) is not None for k in SYSTEM_KEYS) or any(v is not None for k, v in system.items()
                                                                   if k not in SYSTEM_KEYS):
        raise MemplanError("model and layout flags (and --nproc, --execution) go with --system MODEL")
    wanted_text = dtypes
    if out:  # before any measurement
        from memplan.report.files import check_writable

        check_writable(out, force, "--out")
    from memplan.cli.preflight import check_bench_size, check_device, device_memory_bytes, need_torch

    torch = need_torch("memplan bench")
    from memplan.cli.options import resolve_gpu_for_device
    from memplan.measure.bench import default_copy_bytes, default_size, flush_bytes, run_bench

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    wanted_text = wanted_text or ("fp32,tf32,bf16,fp16,fp8" if device == "cuda" else "fp32,bf16")
    wanted = tuple(d.strip().lower() for d in wanted_text.split(",") if d.strip())
    bad = [d for d in wanted if d not in ("fp32", "tf32", "bf16", "fp16", "fp8")]
    if bad or not wanted:
        raise MemplanError(f"--dtypes: unknown {', '.join(bad) or wanted_text!r}; use fp32, tf32, bf16, fp16, fp8")
    check_device(torch, device)
    n = n or default_size(device)
    memory = device_memory_bytes(torch, device)
    check_bench_size(wanted, n, memory, reserved=flush_bytes(device))
    gpu = resolve_gpu_for_device(gpu_name, device, _progress)
    result = run_bench(device, wanted, n=n, repeats=repeats, gpu=gpu, progress=_progress,
                       copy_bytes=default_copy_bytes(device, memory[0]))
    if result.oom:
        _progress(f"OUT OF MEMORY during {result.oom_phase}: {result.oom_message}")
    if out:
        from memplan.report.files import write_new_file

        written = write_new_file(out, result.model_dump_json(indent=2) + "\n", force=force)
        _progress(f"results written to {written}" + (" (oom: true)" if result.oom else ""))
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    from tabulate import tabulate

    click.echo(f"{result.device_name} ({result.device}); torch {result.torch_version}"
               + (f"; profile {result.gpu_profile}" if result.gpu_profile else ""))
    if result.oom:
        click.echo(f"OUT OF MEMORY during {result.oom_phase}: {result.oom_message} (results before it below)")
    rows = [[m.dtype, m.n, f"{m.median_seconds * 1e3:.3f} ms", f"{m.achieved_tflops:.3g}",
             f"{m.peak_tflops:g}" if m.peak_tflops else "-",
             f"{m.fraction_of_peak:.0%}" if m.fraction_of_peak is not None else "-"] for m in result.matmul]
    click.echo(tabulate(rows, headers=["dtype", "n", "median", "TFLOP/s", "dense peak", "of peak"]))
    b = result.bandwidth
    if b is not None:
        click.echo(f"\ncopy {b.bytes_copied / 2**20:.0f} MiB: {b.achieved_gbps:.1f} GB/s (read+write)"
                   + (f", {b.fraction_of_peak:.0%} of {b.peak_gbps:g} GB/s" if b.peak_gbps else ""))
    for note in result.notes:
        click.echo(f"note: {note}")
