"""Measured TRL CPU steps (benchmarks/rl/trl-cpu.jsonl) beside memplan's estimate (kernels="cpu", overheads left
out: a CPU run has no CUDA context or allocator reserve).  Prints the markdown table of docs/rl.md."""
from __future__ import annotations

import json
import os
import sys
import tempfile

from memplan.measure.rl_step import TinyModel, estimate_beside

HERE = os.path.dirname(__file__)


def main(path: str) -> None:
    seen = {}
    for line in open(path):
        r = json.loads(line)
        seen[r["case"]] = r
    print("| case | measured peak (phase) | estimate (phase) | error | per phase, MiB: measured / estimate |")
    print("|---|---|---|---|---|")
    for r in seen.values():
        folder = tempfile.mkdtemp()
        cfg = os.path.join(folder, "config.json")
        with open(cfg, "w") as f:
            json.dump(TinyModel(**r["model"]).config(), f)
        e = estimate_beside(r, cfg)
        err = (e["peak"] - r["measured_peak"]) / r["measured_peak"]
        per = "; ".join(f"{k} {r['measured_phases'][k] / 2**20:.2f} / {(e['phases'].get(k) or 0) / 2**20:.2f}"
                        for k in r["measured_phases"])
        print(f"| {r['case']} | {r['measured_peak'] / 2**20:.2f} MiB ({r['measured_phase']}) | "
              f"{e['peak'] / 2**20:.2f} MiB ({e['peak_phase']}) | {err:+.1%} | {per} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "trl-cpu.jsonl"))
