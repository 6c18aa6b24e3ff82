"""Ctrl-C anywhere in memplan's own start-up and work: `memplan: aborted` on stderr, exit 130, no traceback.

The console script is `memplan.cli:run`, which installs memplan.interrupt's handler before importing click,
pydantic, torch or transformers.  Python's own start-up (site, .pth files such as an editable install's
finder) runs before any memplan code: an interrupt there is reported by Python, so the delays start after the
time this machine takes to get that far (measured first, under the same load).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("torch")

ENTRY = "from memplan.cli import run; run()"  # what the console script does
TINY = ["1", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "160", "--vocab", "512",
        "--max-positions", "64", "--seq", "32", "-b", "2", "--device", "cpu"]
BATCH = 5  # concurrent children: enough to be quick, few enough that start-up stays near its measured time


def _reach_memplan_seconds() -> float:
    """Wall time for BATCH concurrent interpreters to start and import memplan.cli (the window before ours)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", "import memplan.cli, memplan.interrupt"]) for _ in range(BATCH)]
    for p in procs:
        p.wait(timeout=60)
    return time.monotonic() - t0


def _interrupted_run(args: list[str], delays: list[float]) -> list[tuple[float, int, str]]:
    """Start one child per delay (concurrently), SIGINT each after its delay; (delay, exit code, stderr)."""
    procs = []
    for d in delays:
        p = subprocess.Popen([sys.executable, "-c", ENTRY, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        procs.append((d, p, time.monotonic()))
    for d, p, start in sorted(procs, key=lambda x: x[2] + x[0]):
        wait = start + d - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    return [(d, p.wait(timeout=120), p.stderr.read()) for d, p, _ in procs]


def test_ctrl_c_during_start_up_and_import_is_one_line_and_exit_130():
    rng = random.Random(13)
    first = 1.5 * _reach_memplan_seconds()
    # 20 delays over the first 2 s after that: the torch/transformers import window and the first steps
    delays = [first + rng.uniform(0.0, 2.0) for _ in range(20)]
    results = []
    for i in range(0, len(delays), BATCH):
        results += _interrupted_run(["profile", *TINY, "--model-source", "hf"], delays[i:i + BATCH])
    for delay, code, err in results:
        assert "Traceback" not in err and "Exception ignored" not in err, (delay, err)
        if code == 0:  # it finished before the signal: a clean completion is fine
            continue
        assert code == 130, (delay, code, err)
        assert err.strip().splitlines()[-1] == "memplan: aborted", (delay, err)
    assert sum(code == 130 for _, code, _ in results) >= 10  # the signals did land mid-run


def test_abort_removes_the_temporary_file_of_a_write_in_progress(tmp_path):
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from memplan import interrupt
        from memplan.report.files import write_new_file_with
        interrupt.install()

        def slow(tmp):
            tmp.write_text("partial")
            Path({str(ready)!r}).write_text("1")
            time.sleep(30)

        write_new_file_with({str(tmp_path / "out.json")!r}, slow)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    code, err = p.wait(timeout=30), p.stderr.read()
    assert code == 130 and err.strip() == "memplan: aborted"
    assert sorted(os.listdir(tmp_path)) == ["ready"]  # no out.json, no hidden temporary file


def test_in_process_keyboard_interrupt_is_aborted_130(capsys, monkeypatch):
    from memplan.cli import main
    from memplan.perf import time as perf_time

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(perf_time, "estimate_time", interrupted)
    code = main(["time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B"])
    err = capsys.readouterr().err
    assert code == 130 and err.strip().splitlines()[-1] == "memplan: aborted" and "Traceback" not in err


def test_loading_the_cli_package_imports_nothing_heavy():
    code = ("import sys, memplan.cli; heavy = [m for m in ('click', 'pydantic', 'torch', 'tabulate') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
