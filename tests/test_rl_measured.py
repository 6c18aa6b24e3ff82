"""memplan's RL estimate against real TRL 1.16 steps measured on the CPU (benchmarks/rl/trl-cpu.jsonl, written by
benchmarks/rl/measure_trl.py with memplan.measure.rl_step: tiny Qwen2/Llama configs, a word-level tokenizer built
in memory, transformers generate, the storage tracker over the second optimizer step).  The recorded cases are
checked here in milliseconds; `slow` re-measures one (needs trl)."""
from __future__ import annotations

import json
import os

import pytest

from memplan.measure.rl_step import TinyModel, estimate_beside

RECORDS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "rl", "trl-cpu.jsonl")


def _records():
    seen = {}
    with open(RECORDS) as f:
        for line in f:
            r = json.loads(line)
            seen[r["case"]] = r
    return list(seen.values())


def _config(tmp_path, model):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TinyModel(**model).config()))
    return str(path)


@pytest.mark.parametrize("rec", _records(), ids=lambda r: r["case"])
def test_recorded_trl_step_within_3_percent(tmp_path, rec):
    e = estimate_beside(rec, _config(tmp_path, rec["model"]))
    assert e["peak_phase"] == rec["measured_phase"]
    assert e["peak"] == pytest.approx(rec["measured_peak"], rel=0.03)


@pytest.mark.slow
def test_measure_a_grpo_step_now(tmp_path):
    pytest.importorskip("trl")
    from memplan.measure.rl_step import measure_trl_step

    tiny = TinyModel()
    m = measure_trl_step("grpo", tiny, prompt=16, completion=16, batch=2, generations=2, folder=str(tmp_path))
    rec = {"algorithm": "grpo", "batch": 2, "prompt": 16, "completion": 16, "generations": 2}
    e = estimate_beside(rec, str(tmp_path / "config.json"))
    assert e["peak_phase"] == m.peak_phase
    assert e["peak"] == pytest.approx(m.peak, rel=0.03)
