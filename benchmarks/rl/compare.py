"""Measured TRL CPU steps (benchmarks/rl/trl-cpu.jsonl) beside memplan's estimate (kernels="cpu", overheads left
out: a CPU run has no CUDA context or allocator reserve).  Prints a markdown table for docs/rl.md."""
from __future__ import annotations

import json
import os
import sys

from memplan.answers.rl import rl

HERE = os.path.dirname(__file__)


def estimate_for(rec: dict) -> dict:
    folder = f"/tmp/memplan-rl-{rec['model']['family']}-{rec['model']['hidden']}-{rec['model']['vocab']}"
    kw = dict(algorithm=rec["algorithm"], per_device_train_batch_size=rec["batch"],
              gradient_checkpointing=rec.get("gradient_checkpointing", True))
    if rec["algorithm"] == "grpo":
        kw.update(prompt_length=rec["prompt"], completion_length=rec["completion"], num_generations=rec["generations"],
                  beta=rec.get("beta") or 0.0)
    else:
        kw.update(prompt_length=rec["prompt"], max_length=rec["prompt"] + rec["completion"] + 1,
                  precompute_ref_log_probs=rec.get("precompute", False))
    if rec.get("lora_rank"):
        kw.update(policy="lora", lora_rank=rec["lora_rank"])
    p = rl(os.path.join(folder, "config.json"), None, kernels="cpu", search_changes=False, **kw)
    o = p.overheads
    ph = {x.name: x.total - o for x in p.phases}
    m = {k: v - o for k, v in p.update_moments.items()}
    out = {"rollout": ph.get("rollout"), "scoring": ph.get("scoring"), "backward": m["backward"],
           "optimizer_step": m["optimizer_step"],
           "forward": max(m["loss"], m["forward"], ph.get("reference forward", 0))}
    return {"phases": out, "peak": max(v for v in out.values() if v), "peak_phase": max(
        (k for k in out if out[k]), key=lambda k: out[k])}


def main(path: str) -> None:
    rows = [json.loads(x) for x in open(path)]
    seen = {}
    for r in rows:
        seen[r["case"]] = r
    print("| case | measured peak (phase) | estimate (phase) | error | per phase: measured / estimate |")
    print("|---|---|---|---|---|")
    for r in seen.values():
        e = estimate_for(r)
        err = (e["peak"] - r["measured_peak"]) / r["measured_peak"]
        per = "; ".join(f"{k} {r['measured_phases'][k] / 2**20:.2f}/{(e['phases'].get(k) or 0) / 2**20:.2f}"
                        for k in r["measured_phases"])
        print(f"| {r['case']} | {r['measured_peak'] / 2**20:.2f} MiB ({r['measured_phase']}) | "
              f"{e['peak'] / 2**20:.2f} MiB ({e['peak_phase']}) | {err:+.1%} | {per} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "trl-cpu.jsonl"))
