"""Speed of `memplan plan`: a 70B model on 1024 GPUs (issue 5, section 6).

Goal: at least 10,000 candidate strategies evaluated per second, the whole command under 2 s.
Run: python benchmarks/bench_plan.py   (prints the figures; nothing is asserted: speed goals live here, not in tests)
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

ARGS = ["llama-2-70b", "--gpu", "h100-sxm", "--gpus", "1024", "--global-batch", "1024", "--seq", "4096",
        "--tokens", "2T"]


def in_process(repeats: int = 5) -> None:
    from memplan.cli.options import build_setup
    from memplan.catalog import get_gpu
    from memplan.perf.plan import plan

    setup = build_setup(model=ARGS[0], gpus=1024, seq=4096)
    gpu = get_gpu("h100-sxm")
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = plan(setup, gpu, global_batch=1024, tokens=2e12)
        runs.append((time.perf_counter() - t, res))
    secs = statistics.median(r[0] for r in runs)
    res = runs[0][1]
    print(f"plan() in process, median of {repeats}: {secs * 1e3:.1f} ms for {res.evaluated:,} strategies "
          f"= {res.evaluated / secs:,.0f} strategies/s (goal >= 10,000/s); "
          f"{res.pruned_by_bound} pruned by the model-state bound, {res.checked_full} full memory estimates "
          f"({res.rejected_full} did not fit)")


def scaling(repeats: int = 3) -> None:
    """A harder search: 4 GPU counts (1024..8192) at once, to measure the per-strategy rate on more work."""
    from memplan.cli.options import build_setup
    from memplan.catalog import get_gpu
    from memplan.perf.plan import plan

    setup = build_setup(model=ARGS[0], gpus=1024, seq=4096)
    gpu = get_gpu("h100-sxm")
    times, res = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        res = plan(setup, gpu, global_batch=8192, gpus=[1024, 2048, 4096, 8192], by="cost", tokens=2e12)
        times.append(time.perf_counter() - t)
    secs = statistics.median(times)
    print(f"plan() over 1024-8192 GPUs, batch 8192, --by cost: {secs * 1e3:.1f} ms for {res.evaluated:,} "
          f"strategies = {res.evaluated / secs:,.0f}/s")


def command(repeats: int = 3) -> None:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "memplan", "plan", *ARGS], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    print(f"`memplan plan {' '.join(ARGS)}`: median {statistics.median(times):.2f} s wall over {repeats} runs "
          f"(goal < 2 s; includes interpreter start-up and imports)")


if __name__ == "__main__":
    in_process()
    scaling()
    command()
