"""`memplan bench`: matmul TFLOP/s per dtype and memory bandwidth of this device, against its GPU profile."""
from __future__ import annotations

import click

from memplan.cli.options import json_option
from memplan.errors import MemplanError


def _progress(msg: str) -> None:
    click.echo(f"memplan bench: {msg}", err=True)


@click.command("bench")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None,
              help="Default: cuda if torch sees one, else the CPU (and says so).")
@click.option("--gpu", "-g", "gpu_name", help="GPU profile to compare with (default: the device's own name).")
@click.option("--dtypes", default=None,
              help="Comma-separated: fp32, tf32, bf16, fp16, fp8 (fp8 only on sm_89+). Default: all on cuda; "
                   "fp32,bf16 on cpu (CPU fp16 matmuls have no fast kernel: seconds each).")
@click.option("--size", "n", type=click.IntRange(min=64), help="Matrix size n (default 8192 on cuda, 1024 on cpu).")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Save the results as JSON (the achievable ceiling).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@json_option
def bench_command(device, gpu_name, dtypes, n, repeats, out, force, as_json) -> None:
    """Measure tensor-core TFLOP/s per dtype and device memory bandwidth."""
    try:
        import torch
    except ImportError:
        raise MemplanError("memplan bench needs torch: `pip install torch`") from None
    from memplan.cli.options import resolve_gpu_for_device
    from memplan.measure.bench import run_bench

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = dtypes or ("fp32,tf32,bf16,fp16,fp8" if device == "cuda" else "fp32,bf16")
    wanted = tuple(d.strip().lower() for d in dtypes.split(",") if d.strip())
    bad = [d for d in wanted if d not in ("fp32", "tf32", "bf16", "fp16", "fp8")]
    if bad:
        raise MemplanError(f"--dtypes: unknown {', '.join(bad)}; use fp32, tf32, bf16, fp16, fp8")
    if device == "cuda" and not torch.cuda.is_available():
        raise MemplanError("--device cuda: torch sees no CUDA device here; use --device cpu")
    if out and not force:
        from pathlib import Path

        if Path(out).exists():
            raise MemplanError(f"{out} exists; pass --force to overwrite it or choose another --out")
    gpu = resolve_gpu_for_device(gpu_name, device, _progress)
    result = run_bench(device, wanted, n=n, repeats=repeats, gpu=gpu, progress=_progress)
    if out:
        from memplan.report.files import write_new_file

        write_new_file(out, result.model_dump_json(indent=2) + "\n", force=force)
        _progress(f"results written to {out}")
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    from tabulate import tabulate

    click.echo(f"{result.device_name} ({result.device}); torch {result.torch_version}"
               + (f"; profile {result.gpu_profile}" if result.gpu_profile else ""))
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
