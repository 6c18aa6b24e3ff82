"""In-process cost of one `estimate_memory` call (the plan search calls it many times).

Goal: well under 1 ms per call for a 7B setup; nothing in it grows with the layer count (the backward is
evaluated at its two extreme layers, the optimizer's tensor order over two layers).
Usage: python benchmarks/bench_estimate_memory.py [--calls 500]
"""
from __future__ import annotations

import argparse
import time

from memplan.catalog import resolve_model
from memplan.memory.estimate import estimate_memory
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import Parallelism, Workload, get_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=500)
    n = ap.parse_args().calls
    for name, setup in [
        ("llama-2-7b bf16-mixed b4 s4096", TrainingSetup(model=resolve_model("llama-2-7b"),
                                                          workload=Workload(micro_batch=4, seq=4096))),
        ("llama-3.1-405b tp8 pp16 sp zero1", TrainingSetup(
            model=resolve_model("llama-3.1-405b"), recipe=get_recipe("bf16-mixed"),
            parallel=Parallelism(gpus=1024, tp=8, pp=16, sequence_parallel=True, zero=1),
            workload=Workload(micro_batch=1, seq=8192, recompute="selective"))),
    ]:
        estimate_memory(setup)
        t0 = time.perf_counter()
        for _ in range(n):
            estimate_memory(setup)
        print(f"{name:<40} {(time.perf_counter() - t0) / n * 1e3:.3f} ms per call")


if __name__ == "__main__":
    main()
