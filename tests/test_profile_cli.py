"""`memplan profile`: the JSON fields scripts read, records, plots, refusal to overwrite, bad input."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from tests.helpers import run_cli  # noqa: E402

TINY = ["1", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "160", "--vocab", "512",
        "--max-positions", "64", "--seq", "32", "-b", "2", "--model-source", "reference"]


def test_json_has_measured_and_estimated_integer_fields(capsys):
    code, out, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--json")
    assert code == 0, err
    d = json.loads(out)
    for side in ("measured", "estimated"):
        for field in ("peak_allocated", "weights", "gradients", "optimizer_states", "activations"):
            assert isinstance(d[side][field], int), (side, field)
    assert d["device"] == "fake"
    assert d["reserved_peak"] is None and d["step_seconds"] is None and d["mfu"] is None  # cuda-only
    # the default recipe is bf16-mixed: 2 B/param weights, 151,872 parameters (count_parameters of this arch)
    assert d["measured"]["weights"] == d["estimated"]["weights"] == 2 * 151_872
    m, e = d["measured"]["peak_allocated"], d["estimated"]["peak_allocated"]
    assert d["error_percent"] == pytest.approx(100 * (e - m) / m)
    assert d["measurement"]["optimizer_impl"] == "for-loop"
    assert "measured step" in err  # progress goes to stderr, stdout stays one JSON object


def test_table_shows_both_columns(capsys):
    code, out, err = run_cli(capsys, "profile", *TINY, "--device", "cpu", "-p", "fp32", "-o", "sgd")
    assert code == 0, err
    assert "measured (GiB)" in out and "estimated (GiB)" in out and "peak phase" in out
    assert "optimizer sgd (for-loop)" in out


def test_out_record_is_atomic_and_not_overwritten(capsys, tmp_path):
    path = tmp_path / "run.json"
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--out", str(path))
    assert code == 0, err
    rec = json.loads(path.read_text())
    assert rec["schema_version"] == 1 and rec["kind"] == "memplan.profile"
    assert rec["measured"]["device"] == "fake" and rec["estimated"]["per_gpu"]["weights"] == 2 * 151_872
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--out", str(path))
    assert code == 2 and "--force" in err
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--out", str(path), "--force")
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp files left behind


def test_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--plot", str(path), "--gpu", "h100-sxm")
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_max_batch_on_fake_needs_a_gpu(capsys):
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--find-max-batch")
    assert code == 2 and "--gpu" in err


def test_bad_input_is_one_line(capsys):
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--factory", "nocolon")
    assert code == 2 and "package.module:function" in err
    code, _, err = run_cli(capsys, "profile", *TINY, "--device", "fake", "--snapshot", "x.pickle")
    assert code == 2 and "--device cuda" in err
    assert "Traceback" not in err
