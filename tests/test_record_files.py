"""`--measured` and `--calibration` files: parsed into their record types, the first bad field in one line.

pydantic's own wording ("Input should be ...", "N validation errors for MeasuredStep", URLs) never reaches
the user: memplan.field_errors says the field, what it must be, and what was given.
"""
from __future__ import annotations

import json

import pytest

from memplan.errors import MemplanError
from memplan.field_errors import field_error_line
from tests.helpers import run_cli

TIME = ["time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B", "--measured"]
LEAKS = ("Input should", "validation error", "pydantic", "NoneType", "Traceback", "type=")


def _one_line_error(capsys, *args) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memplan: error: "), err
    assert not any(leak in err for leak in LEAKS), err
    return lines[0].removeprefix("memplan: error: ")


@pytest.mark.parametrize("cuda,expected", [
    ({"achieved_tflops": "NaN"}, "field measured.cuda.achieved_tflops must be a positive finite number, got 'NaN'"),
    ({"achieved_tflops": -5}, "field measured.cuda.achieved_tflops must be a positive finite number, got -5"),
    ({"achieved_tflops": 0}, "field measured.cuda.achieved_tflops must be a positive finite number, got 0"),
    ({"achieved_tflops": "fast"}, "field measured.cuda.achieved_tflops must be a number, got 'fast'"),
    ({"achieved_tflops": True}, "field measured.cuda.achieved_tflops must be a number, not true/false, got true"),
    ({"step_seconds": 1e400, "flops_per_step": 10}, "field measured.cuda.step_seconds must be a positive finite "
                                                    "number, got Infinity"),
    ({"flops_per_step": -1, "step_seconds": 1}, "field measured.cuda.flops_per_step must be a whole number, zero "
                                                "or more, got -1"),
    ([1, 2], "field measured.cuda must be an object, got a list"),
])
def test_bad_measured_fields_are_named(capsys, tmp_path, cuda, expected):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"measured": {"cuda": cuda}}).replace("Infinity", "1e400"))
    msg = _one_line_error(capsys, *TIME, path)
    assert msg == f"--measured file {path}: {expected}"


def test_measured_nan_literal_and_top_level_kinds(capsys, tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"measured": {"cuda": {"achieved_tflops": NaN}}}')
    assert _one_line_error(capsys, *TIME, path).endswith(
        "field measured.cuda.achieved_tflops must be a positive finite number, got NaN")
    for text, kind in (("[]", "a list"), ("null", "null"), ("42", "a number")):
        path.write_text(text)
        assert f"holds {kind}, not an object (a `memplan profile --out` record)" in _one_line_error(
            capsys, *TIME, path)
    path.write_text('{"measured": 5}')
    assert _one_line_error(capsys, *TIME, path).endswith("field measured must be an object, got 5")
    path.write_text('{"measured": {"cuda": null}}')
    assert "holds no timing" in _one_line_error(capsys, *TIME, path)
    path.write_text('{"measured": {"oom": true, "cuda": {"achieved_tflops": 100}}}')
    assert "ran out of memory, so it has no timing" in _one_line_error(capsys, *TIME, path)


def test_a_good_measured_record_sets_the_efficiency(capsys, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"measured": {"cuda": {"achieved_tflops": 156.0}}}))
    code, out, err = run_cli(capsys, *TIME, path, "--json")
    assert code == 0, err
    eff = json.loads(out)["efficiency"]
    assert eff["value"] == pytest.approx(156.0 / 312.0)  # the A100's dense bf16 peak is 312 TFLOP/s


def test_calibration_record_fields(capsys, tmp_path):
    from memplan.catalog import profiles_dir

    good = json.loads((profiles_dir() / "runs" / "falcon-tiny-cpu-fp32.json").read_text())
    path = tmp_path / "cal.json"
    for field, value, expected in (
            ("activations_at_backward_start", -1, "must be a whole number of bytes, zero or more, got -1"),
            ("peak_allocated", "many", "must be a whole number, got 'many'"),
            ("micro_batch", 0, "must be a whole number, 1 or more, got 0"),
            ("device", "tpu", "must be one of 'cpu', 'fake' or 'cuda', got 'tpu'")):
        bad = json.loads(json.dumps(good))
        bad["measured"][field] = value
        path.write_text(json.dumps(bad))
        msg = _one_line_error(capsys, "estimate", "falcon-7b", "--calibration", path)
        assert msg == f"--calibration file {path}: field measured.{field} {expected}", msg
    del good["measured"]["weights"]
    path.write_text(json.dumps(good))
    assert _one_line_error(capsys, "estimate", "falcon-7b", "--calibration", path).endswith(
        "field measured.weights is missing")


def test_field_error_line_counts_the_others_and_names_nested_fields():
    from pydantic import ValidationError

    from memplan.results.profile import MeasuredStep

    with pytest.raises(ValidationError) as info:
        MeasuredStep.model_validate({"model": "m", "phases": [{"name": "forward", "peak_bytes": -3, "bytes": {}}]})
    line = field_error_line(info.value, "file r.json")
    assert line.startswith("file r.json: field parameters is missing (") and "more fields also invalid)" in line
    with pytest.raises(ValidationError) as info:
        MeasuredStep.model_validate_json('{"phases": [{"name": "f", "peak_bytes": -3, "bytes": {}}]}')
    errors = [e for e in info.value.errors() if e["loc"][0] == "phases"]
    assert errors and ".".join(map(str, errors[0]["loc"])) == "phases.0.peak_bytes"
    from memplan.field_errors import field_path

    assert field_path(("phases", 0, "peak_bytes")) == "phases[0].peak_bytes"
    assert field_path(("cuda", "function-after[check(), float]")) == "cuda"


def test_calibration_of_a_missing_file_is_one_line(tmp_path):
    from memplan.memory.calibration import load_calibration

    with pytest.raises(MemplanError, match=r"^--calibration file .*missing.json does not exist$"):
        load_calibration(tmp_path / "missing.json")
