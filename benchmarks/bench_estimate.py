"""Times `memplan estimate` as a user runs it: a fresh process per call (interpreter start included).

Goal (issue 2): under 150 ms per call on the development machine (2 cores), and no torch import.
Usage: python benchmarks/bench_estimate.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["estimate", "7B"],
    ["estimate", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "8", "--zero", "3"],
    ["estimate", "llama-2-7b", "--gpu", "h100-sxm", "--micro-batch", "4", "--seq", "4096"],
    ["estimate", "gpt2", "--compare", "--gpus", "16"],
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    exe = shutil.which("memplan")
    base = [exe] if exe else [sys.executable, "-m", "memplan"]
    print(f"{'command':<75} {'median ms':>10} {'min ms':>8}")
    for cmd in COMMANDS:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(base + cmd, check=True, capture_output=True)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"{'memplan ' + ' '.join(cmd):<75} {statistics.median(times):>10.1f} {min(times):>8.1f}")
    imp = subprocess.run([sys.executable, "-X", "importtime", "-m", "memplan", "estimate", "7B"],
                         capture_output=True, text=True)
    torch_lines = [ln for ln in imp.stderr.splitlines() if ln.rstrip().endswith("| torch")]
    print("torch imported:", "YES (bug)" if torch_lines else "no")


if __name__ == "__main__":
    main()
