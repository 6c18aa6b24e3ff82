"""Re-derive the A100 in-training scales (profiles/efficiency/a100.json gemm_scale, memory_scale) on a stated
subset of the 18 published values, and report the error on the rest (nothing here is asserted: the tests assert
the shipped constants, tests/test_published_runs.py).

Run: python benchmarks/calibrate_time.py   (~1 min)
Subsets: even (the shipped calibration: every other row from the first), odd, megatron (Table 1 only: Table 5 held
out), korthikanti (Table 5 only: Table 1 held out).  Grid: gemm_scale 0.80-0.95 step 0.005, memory_scale 0.50-0.90
step 0.01, minimising the mean |error| over the subset.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memplan.catalog import get_gpu  # noqa: E402
from memplan.perf.flops import flops_per_token  # noqa: E402
from memplan.perf.time import build_step_model  # noqa: E402
from tests.published_runs import PUBLISHED, error_percent, setup_of  # noqa: E402

A100 = get_gpu("a100-80gb")
SUBSETS = {
    "even": lambda i, r: i % 2 == 0,
    "odd": lambda i, r: i % 2 == 1,
    "megatron": lambda i, r: r.table == "megatron2021-t1",
    "korthikanti": lambda i, r: r.table == "korthikanti2022-t5",
}


def models():
    out = []
    for r in PUBLISHED:
        s = setup_of(r)
        out.append((r, s, build_step_model(s, A100, execution=r.execution)))
    return out


def errors(runs, gemm_scale: float, memory_scale: float) -> list[float]:
    errs = []
    for r, s, sm in runs:
        sm.k.gemm_scale, sm.k.mem_scale = gemm_scale, memory_scale
        sm.k._gemm_memo.clear()
        sm.k._mem_memo.clear()
        sm._layers.clear()
        sm._stage_memo.clear()
        sm._ends.clear()
        sm._pipes.clear()
        step = sm.evaluate(s.layout).step
        if r.table == "megatron2021-t1":  # eq. 3 hardware FLOPs per GPU per second
            value = flops_per_token(s.model, s.seq, "full").hardware * r.global_batch * s.seq / r.gpus / step / 1e12
        else:
            value = step
        errs.append(error_percent(r, value))
    return errs


def summary(errs):
    a = [abs(e) for e in errs]
    return (sum(a) / len(a), max(a)) if a else (float("nan"), float("nan"))


def main() -> None:
    runs = models()
    grid = [(0.80 + 0.005 * i, 0.50 + 0.01 * j) for i in range(31) for j in range(41)]
    for name, pick in SUBSETS.items():
        idx = [i for i, (r, _, _) in enumerate(runs) if pick(i, r)]
        best = None
        for g, m in grid:
            e = errors(runs, g, m)
            fit = summary([e[i] for i in idx])[0]
            if best is None or fit < best[0]:
                best = (fit, g, m, e)
        fit, g, m, e = best
        held = [e[i] for i in range(len(runs)) if i not in idx]
        print(f"{name:12s} gemm_scale {g:.3f} memory_scale {m:.2f}: fit mean {fit:.2f}%, held out mean/max "
              f"{summary(held)[0]:.2f}/{summary(held)[1]:.2f}% ({len(held)} values), all 18 "
              f"{summary(e)[0]:.2f}/{summary(e)[1]:.2f}%")


if __name__ == "__main__":
    main()
