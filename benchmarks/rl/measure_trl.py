"""Measure TRL 1.16 steps on the CPU (tiny configs, no downloads) beside memplan's RL estimate; writes one JSON line
per case to benchmarks/rl/trl-cpu.jsonl.  Run: python benchmarks/rl/measure_trl.py [CASE ...]"""
from __future__ import annotations

import json
import os
import sys
import time

from memplan.measure.rl_step import TinyModel, measure_trl_step

SMALL = TinyModel(hidden=128, layers=2, heads=4, kv_heads=2, ffn=256, vocab=2048)
WIDE = TinyModel(hidden=256, layers=4, heads=8, kv_heads=2, ffn=768, vocab=8192)
LLAMA = TinyModel(hidden=192, layers=3, heads=6, kv_heads=2, ffn=512, vocab=4096, family="llama")
CASES = {
    "grpo-short-b0-g2": ("grpo", SMALL, dict(prompt=16, completion=16, batch=2, generations=2)),
    "grpo-b0-g2": ("grpo", SMALL, dict(prompt=32, completion=32, batch=4, generations=2)),
    "grpo-b0.04-g4": ("grpo", SMALL, dict(prompt=32, completion=64, batch=4, generations=4, beta=0.04)),
    "grpo-wide-b0-g4": ("grpo", WIDE, dict(prompt=64, completion=96, batch=4, generations=4)),
    "grpo-wide-b0.04-g2": ("grpo", WIDE, dict(prompt=48, completion=64, batch=4, generations=2, beta=0.04)),
    "grpo-llama-lora-b0.04": ("grpo", LLAMA, dict(prompt=32, completion=48, batch=4, generations=2, beta=0.04,
                                                  lora_rank=8)),
    "rloo-b0.05-g2": ("rloo", SMALL, dict(prompt=32, completion=48, batch=4, generations=2)),
    "rloo-wide-g4": ("rloo", WIDE, dict(prompt=32, completion=64, batch=4, generations=4)),
    "grpo-ga2-b0.04": ("grpo", SMALL, dict(prompt=32, completion=32, batch=4, generations=4, beta=0.04, grad_accum=2)),
    "grpo-nogc": ("grpo", SMALL, dict(prompt=32, completion=48, batch=4, generations=2, gradient_checkpointing=False)),
    "dpo-lora-precomputed": ("dpo", WIDE, dict(prompt=48, completion=48, batch=2, lora_rank=8, precompute=True)),
    "dpo-ref": ("dpo", SMALL, dict(prompt=32, completion=32, batch=2)),
    "dpo-precomputed": ("dpo", SMALL, dict(prompt=32, completion=32, batch=2, precompute=True)),
    "dpo-wide-ref": ("dpo", WIDE, dict(prompt=64, completion=64, batch=2)),
    "dpo-wide-lora": ("dpo", WIDE, dict(prompt=64, completion=64, batch=2, lora_rank=8)),
    "dpo-llama-ref-nogc": ("dpo", LLAMA, dict(prompt=48, completion=48, batch=2, gradient_checkpointing=False)),
}


def main(names: list[str]) -> None:
    out = os.path.join(os.path.dirname(__file__), "trl-cpu.jsonl")
    for name in names or list(CASES):
        algo, tiny, kw = CASES[name]
        folder = f"/tmp/memplan-rl-{tiny.family}-{tiny.hidden}-{tiny.vocab}"
        t = time.time()
        m = measure_trl_step(algo, tiny, folder=folder, **kw)
        rec = {"case": name, "algorithm": algo, "model": tiny.__dict__, **kw, "measured_peak": m.peak,
               "measured_phase": m.peak_phase, "measured_phases": m.phases, "seconds": round(time.time() - t, 1),
               "trl": "1.16.0"}
        print(json.dumps(rec), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
