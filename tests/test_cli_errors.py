"""Bad input: one clear line on stderr, exit code 2, never a traceback."""
from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

CASES = {
    "unknown model": (["estimate", "llama-2-7x"], "did you mean 'llama-2-7b'"),
    "unparsable count": (["estimate", "7Q"], "cannot parse '7Q' as a parameter count"),
    "zero count": (["estimate", "0B"], "must be a positive number"),
    "negative gpus": (["estimate", "7B", "--gpus", "-1"], "--gpus"),
    "zero micro-batch": (["estimate", "7B", "--micro-batch", "0"], "--micro-batch"),
    "zero stage 5": (["estimate", "7B", "--zero", "5"], "0<=x<=3"),
    "unknown gpu": (["estimate", "7B", "--gpu", "a100-80gbb"], "did you mean"),
    "unknown precision": (["estimate", "7B", "--precision", "bf17-mixed"], "did you mean 'bf16-mixed'"),
    "unknown optimizer": (["estimate", "7B", "--optimizer", "adamm"], "did you mean 'adam'"),
    "gpus not divisible": (["estimate", "7B", "--gpus", "6", "--tp", "4"], "not divisible by tp*pp"),
    "heads vs kv heads": (["estimate", "llama-2-7b", "--kv-heads", "5"], "divisible by KV heads"),
    "heads vs tp": (["estimate", "falcon-7b", "--gpus", "2", "--tp", "2"], "must divide the 71 attention heads"),
    "param offload needs zero 3": (["estimate", "7B", "--zero", "2", "--offload-params", "cpu"], "needs --zero 3"),
    "nvme optimizer needs zero 3": (["estimate", "7B", "--zero", "2", "--offload-optimizer", "nvme"], "--zero 3"),
    "missing path": (["estimate", "./no/such/config.json"], "no such file"),
    "unknown command": (["estimat", "7B"], "did you mean 'estimate'"),
    "bare count needs arch for deepspeed zero3": (["estimate", "7B", "--engine", "deepspeed", "--zero", "3"],
                                                  "needs the largest layer"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(capsys, name):
    args, expected = CASES[name]
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("memplan: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err


def test_malformed_and_unsupported_config(capsys, tmp_path):
    bad = tmp_path / "bad" / "config.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "estimate", str(bad))
    assert code == 2 and "not valid JSON" in err and len(err.strip().splitlines()) == 1
    unsupported = tmp_path / "t5"
    unsupported.mkdir()
    (unsupported / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    code, _, err = run_cli(capsys, "estimate", str(unsupported))
    assert code == 2 and "t5" in err and "encoder-decoder" in err and len(err.strip().splitlines()) == 1
    unknown = tmp_path / "mystery"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "llamma", "hidden_size": 512}))
    code, _, err = run_cli(capsys, "estimate", str(unknown))
    assert code == 2 and "did you mean 'llama'" in err and "memplan trace" in err \
        and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,expected", [
    (["estimate", "llama-2-7b", "--mode", "inference", "-b", "4", "-s", "1024"], "use --batch and --context"),
    (["estimate", "llama-2-7b", "--batch", "8", "--context", "1024"], "need --mode inference"),
    (["estimate", "llama-2-7b", "--lora-rank", "100000"], "exceeds the smallest adapted layer"),
    (["estimate", "1e30"], "above 1e+15"),
    (["estimate", "llama-2-7b", "--engine", "deepspeed", "--zero", "3", "--offload-optimizer", "nvme"],
     "CPU offload only"),
])
def test_flags_of_the_wrong_mode_and_impossible_sizes(capsys, args, expected):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and expected in err
