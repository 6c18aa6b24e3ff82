"""Speed of `memplan plan`: a 70B model on 1024 GPUs (issue 11: >= 10,000 layouts/s, the command < 2 s).

Run: python benchmarks/bench_plan.py   (prints the figures; nothing is asserted: speed goals live here, not in tests)
Both wall time and this process's CPU time are printed: on a shared machine the wall figure carries the others'
load, the CPU figure does not.
"""
from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

ARGS = ["llama-2-70b", "--gpu", "h100-sxm", "--gpus", "1024", "--global-batch", "1024", "--seq", "4096",
        "--tokens", "2T"]


def _timed(fn, repeats):
    walls, cpus, res = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        res = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), res


def in_process(repeats: int = 5) -> None:
    from memplan.catalog import get_gpu
    from memplan.cli.options import build_setup
    from memplan.perf.plan import plan

    setup = build_setup(model=ARGS[0], gpus=1024, seq=4096)
    gpu = get_gpu("h100-sxm")
    wall, cpu, res = _timed(lambda: plan(setup, gpu, global_batch=1024, tokens=2e12), repeats)
    print(f"plan() in process, median of {repeats}: {wall * 1e3:.0f} ms wall / {cpu * 1e3:.0f} ms CPU for "
          f"{res.evaluated:,} layouts = {res.evaluated / wall:,.0f} layouts/s wall, {res.evaluated / cpu:,.0f}/s CPU "
          f"(goal >= 10,000/s); {res.pruned_by_bound} pruned by the model-state bound, {res.checked_full} full "
          f"memory estimates ({res.rejected_full} did not fit)")


def scaling(repeats: int = 3) -> None:
    """A harder search: 4 GPU counts (1024..8192) at once, to measure the per-layout rate on more work."""
    from memplan.catalog import get_gpu
    from memplan.cli.options import build_setup
    from memplan.perf.plan import plan

    setup = build_setup(model=ARGS[0], gpus=1024, seq=4096)
    gpu = get_gpu("h100-sxm")
    wall, cpu, res = _timed(lambda: plan(setup, gpu, global_batch=8192, gpus=[1024, 2048, 4096, 8192], by="cost",
                                         tokens=2e12), repeats)
    print(f"plan() over 1024-8192 GPUs, batch 8192, --by cost: {wall * 1e3:.0f} ms wall / {cpu * 1e3:.0f} ms CPU "
          f"for {res.evaluated:,} layouts = {res.evaluated / wall:,.0f}/s wall, {res.evaluated / cpu:,.0f}/s CPU")


def command(repeats: int = 3) -> None:
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "memplan", "plan", *ARGS], check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    print(f"`memplan plan {' '.join(ARGS)}`: median {statistics.median(walls):.2f} s wall, "
          f"{statistics.median(cpus):.2f} s CPU over {repeats} runs (goal < 2 s; includes interpreter start-up and "
          "imports)")


if __name__ == "__main__":
    in_process()
    scaling()
    command()
