"""Times `memplan trace` of one layer period per family (issue 10 goal: under a minute on 2 cores).

Each trace runs every variant (3 precision modes x CPU/CUDA kernels x eager/sdpa x recompute, windows and dropout
where the model has them) at the probe sizes under FakeTensorMode, in worker processes (one per core, at most 4).
Usage: python benchmarks/bench_trace.py [family ...]   (default: every family of memplan.measure.trace.REPRESENTATIVE)

Measured on the development machine (2 cores, torch 2.13 CPU, transformers 5.24), seconds per family
(variants traced), recorded in docs/validation.md.
"""
from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> None:
    from memplan.catalog import resolve_model
    from memplan.measure.trace import REPRESENTATIVE
    from memplan.measure.trace.profile import trace_profile

    families = argv or sorted(REPRESENTATIVE)
    print(f"{'family':<12} {'traced from':<20} {'layers':>6} {'rows':>6} {'seconds':>8}")
    for family in families:
        spec = resolve_model(REPRESENTATIVE[family])
        t0 = time.perf_counter()
        prof = trace_profile(spec.hf_config)
        dt = time.perf_counter() - t0
        rows = sum(len(v) for v in prof.values() if isinstance(v, list) and v and isinstance(v[0], dict))
        layers = next((s for s in prof["sources"] if " at " in s and "layer(s)" in s), "")
        n = layers.split(" at ", 1)[1].split(" ", 1)[0] if layers else "?"
        print(f"{family:<12} {spec.name:<20} {n:>6} {rows:>6} {dt:>8.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
