"""scripts/gpu-check.sh --dry: every step of the GPU check (issue 25) runs on the CPU, and what comes back is at
most three files -- a table, a JSON of every figure with its criterion, a tarball of the rest.

Marked slow (about a minute on a free CI core, two to three on a loaded one): it runs some twenty memplan
processes, each importing torch.  It still runs in CI (the `slow` marker says so)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("env", "bench", "profiles", "hf", "distributed", "system", "pytest")


@pytest.mark.slow
def test_dry_run_exercises_every_step_and_returns_three_files(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path), MEMPLAN_GPU_CHECK_BUDGET="280")
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--dry", str(out)], capture_output=True,
                       text=True, env=env, timeout=420, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(x.name for x in out.iterdir()) == ["figures.json", "summary.txt", "work.tar.gz"]
    d = json.loads((out / "figures.json").read_text())
    assert d["dry"] is True
    rows = d["figures"]
    # every step ran to its end: a row of its own, none saying it broke, timed out or was skipped
    assert {r["step"] for r in rows} == set(STEPS)
    broken = [r for r in rows if r["pass"] is False]
    assert not broken, broken
    assert all(r["pass"] is None for r in rows)  # dry: nothing judged
    names = {r["name"] for r in rows}
    assert "sdpa kernel, fp32 GQA causal" in names
    assert any(n.endswith("model states, cpu - fake") for n in names)
    size = next(r for r in rows if r["name"].startswith("bench --size"))
    assert size["value"] == "[('bf16', 72), ('fp8', 80)]"
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("memplan GPU check (DRY RUN") and "Traceback" not in summary
    with tarfile.open(out / "work.tar.gz") as tar:
        members = tar.getnames()
    assert any(m.endswith("environment.txt") for m in members)
    assert any(m.endswith("results/profiles.json") for m in members)


def test_a_step_that_breaks_is_a_row_and_the_table_still_prints(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    work = tmp_path / "work"
    for sub in ("results", "logs", "raw"):
        (work / sub).mkdir(parents=True)

    def broken(f, w):
        f.add("first figure", 1.0, "s")
        raise RuntimeError("CUDA error: an illegal memory access\nsecond line")

    monkeypatch.setitem(gpu_check.STEP_FUNCS, "env", broken)
    gpu_check.run_step("env", work, dry=False)
    rows = json.loads((work / "results" / "env.json").read_text())["rows"]
    assert rows[0]["name"] == "first figure"  # what was measured before the error stays
    assert rows[1]["pass"] is False and rows[1]["note"] == "RuntimeError: CUDA error: an illegal memory access"
    text = gpu_check.table(rows)
    assert "FAIL" in text and "first figure" in text
