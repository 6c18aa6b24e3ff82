"""`memplan bench`: on a CPU it measures the CPU and says so; results save as JSON; bad input is one line."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from tests.helpers import run_cli  # noqa: E402


def test_cpu_bench_json(capsys, tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(capsys, "bench", "--device", "cpu", "--size", "128", "--repeats", "2",
                                "--out", str(out), "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["device"] == "cpu" and any("CPU" in n for n in d["notes"])
    assert [m["dtype"] for m in d["matmul"]] == ["fp32", "bf16"]
    for m in d["matmul"]:
        # 2*n^3 FLOPs per n x n matmul (one multiply and one add per inner-product term)
        assert m["achieved_tflops"] == pytest.approx(2 * 128 ** 3 / m["median_seconds"] / 1e12)
        assert m["peak_tflops"] is None  # a CPU has no GPU-profile peak
    b = d["bandwidth"]
    assert b["achieved_gbps"] == pytest.approx(2 * b["bytes_copied"] / b["median_seconds"] / 1e9)
    assert json.loads(out.read_text())["kind"] == "memplan.bench"
    code, _, err = run_cli(capsys, "bench", "--device", "cpu", "--size", "128", "--out", str(out))
    assert code == 2 and "--force" in err


def test_bad_dtype_and_missing_cuda_are_one_line(capsys):
    code, _, err = run_cli(capsys, "bench", "--device", "cpu", "--dtypes", "fp32,fp7")
    assert code == 2 and "fp7" in err
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "bench", "--device", "cuda")
        # a CPU-only build says how to get a CUDA one; a CUDA build without a device says where to look
        expected = "CPU-only build" if torch.version.cuda is None else "sees no CUDA device"
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bench_reaches_a_sane_fraction_of_peak(capsys):
    code, stdout, err = run_cli(capsys, "bench", "--dtypes", "bf16", "--size", "4096", "--repeats", "5", "--json")
    assert code == 0, err
    m = json.loads(stdout)["matmul"][0]
    if m["peak_tflops"]:
        assert 0.2 < m["fraction_of_peak"] <= 1.05


def test_fp8_size_not_divisible_by_16_is_rounded_and_keeps_the_other_dtypes(monkeypatch):
    # torch._scaled_mm on CUDA refuses dims not divisible by 16; the CPU kernel runs any, so it stands in here
    import memplan.measure.bench as bench

    monkeypatch.setattr(bench, "fp8_supported", lambda _d: True)
    r = bench.run_bench("cpu", ("bf16", "fp8"), n=72, repeats=1, copy_bytes=2**20)
    assert [(m.dtype, m.n) for m in r.matmul] == [("bf16", 72), ("fp8", 80)]
    assert any("rounded up to 80" in n for n in r.notes)
    assert r.matmul[1].achieved_tflops == pytest.approx(2 * 80 ** 3 / r.matmul[1].median_seconds / 1e12)


def test_a_failing_dtype_is_a_note_and_the_measured_ones_stay(monkeypatch):
    import memplan.measure.bench as bench

    def refuse(*_a, **kw):
        assert kw.get("use_fast_accum") is True  # fp8 with the fast accumulation training runs
        raise RuntimeError("mat1 dims must be divisible by 16\nmore detail")

    monkeypatch.setattr(bench, "fp8_supported", lambda _d: True)
    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    r = bench.run_bench("cpu", ("bf16", "fp8", "fp32"), n=64, repeats=1, copy_bytes=2**20)
    assert [m.dtype for m in r.matmul] == ["bf16", "fp32"] and r.bandwidth is not None
    assert "fp8 skipped: RuntimeError: mat1 dims must be divisible by 16" in r.notes
