"""--setup FILE / --save-setup FILE: one setup file format of memplan's own, the engines' files read, flags on top."""
from __future__ import annotations

import json
import re

from tests.helpers import cli_json, run_cli

ARGS = ["llama-2-7b", "--gpus", "8", "--zero", "3", "-b", "4", "--seq", "4096", "--recompute", "full"]


def test_saved_setup_reads_back_to_the_same_estimate(capsys, tmp_path):
    saved = tmp_path / "setup.json"
    first = cli_json(capsys, "estimate", *ARGS, "--gpu", "a100-80gb", "--save-setup", str(saved))
    written = json.loads(saved.read_text())  # what the user set, as flags name it: not the whole architecture
    assert written == {"memplan_setup": 1, "model": "llama-2-7b", "gpus": 8, "zero": 3, "micro_batch": 4,
                       "seq": 4096, "recompute": "full"}
    again = cli_json(capsys, "estimate", "--setup", str(saved), "--gpu", "a100-80gb")
    assert again["per_gpu"] == first["per_gpu"] and again["parameters"] == first["parameters"]
    # a flag given with --setup overrides the file
    smaller = cli_json(capsys, "estimate", "--setup", str(saved), "-b", "1", "--gpu", "a100-80gb")
    assert smaller["setup"]["layout"]["micro_batch"] == 1
    assert smaller["per_gpu"]["peak_allocated"] < first["per_gpu"]["peak_allocated"]


def test_a_saved_setup_keeps_defaults_as_defaults(capsys, tmp_path):
    """No --seq given: the file does not freeze the default sequence; reading it back assumes it again."""
    saved = tmp_path / "setup.json"
    first = cli_json(capsys, "estimate", "qwen2.5-7b", "--gpus", "8", "--zero", "3", "--save-setup", str(saved))
    assert "seq" not in json.loads(saved.read_text())
    again = cli_json(capsys, "estimate", "--setup", str(saved))
    assert again["per_gpu"] == first["per_gpu"] and [a["input"] for a in again["assumed"]][0] == "seq"


def test_old_whole_setup_files_still_read(capsys, tmp_path):
    from memplan.setups import training_setup

    whole = tmp_path / "old.json"
    whole.write_text(training_setup("gpt2", zero=1, seq=512).model_dump_json())
    again = cli_json(capsys, "estimate", "--setup", str(whole))
    assert again["setup"]["layout"]["zero"] == 1 and again["setup"]["workload"]["seq"] == 512


def test_yaml_setup_round_trip(capsys, tmp_path):
    saved = tmp_path / "setup.yaml"
    first = cli_json(capsys, "estimate", *ARGS, "--save-setup", str(saved))
    again = cli_json(capsys, "estimate", "--setup", str(saved))
    assert again["per_gpu"] == first["per_gpu"]


def test_deepspeed_config_is_read_and_the_fields_are_listed(capsys, tmp_path):
    ds = tmp_path / "ds_config.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
                              "bf16": {"enabled": True}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                              "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}))
    code, out, err = run_cli(capsys, "estimate", "llama-3-8b", "--setup", str(ds), "--gpus", "8", "--seq", "2048",
                             "--json")
    assert code == 0
    lay = json.loads(out)["setup"]["layout"]
    assert (lay["zero"], lay["offload_optimizer"], lay["micro_batch"], lay["grad_accum"]) == (3, "cpu", 2, 4)
    # a short table (field, value, the file's key); the ignored keys counted, listed with --verbose
    assert re.search(r"^memplan:\s+zero\s+3\s+zero_optimization\.stage$", err, re.M) and "ignored 1 key(s)" in err
    code, _, err = run_cli(capsys, "estimate", "llama-3-8b", "--setup", str(ds), "--seq", "2048", "--verbose")
    assert code == 0 and "optimizer.params" in err


def test_a_setup_without_a_model_needs_one(capsys, tmp_path):
    ds = tmp_path / "ds_config.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 2}))
    code, _, err = run_cli(capsys, "estimate", "--setup", str(ds))
    errors = [line for line in err.splitlines() if line.startswith("memplan: error:")]
    assert code == 2 and len(errors) == 1 and "MODEL is needed" in errors[0] and "Traceback" not in err


def test_bad_setup_files_are_one_line(capsys, tmp_path):
    bad = tmp_path / "setup.json"
    bad.write_text(json.dumps({"model": {"name": "x", "total_parameters": -5}, "layout": {"tp": 0}}))
    code, _, err = run_cli(capsys, "estimate", "--setup", str(bad))
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "estimate", "llama-2-7b", "--save-setup", str(tmp_path / "s.toml"))
    assert code == 2 and "JSON or YAML" in err


def test_plan_emits_the_best_layout_in_an_engines_format(capsys, tmp_path):
    from memplan.setupfiles import read_setup_file

    for fmt, name in (("deepspeed", "ds.json"), ("megatron", "run.sh"), ("torchtitan", "job.toml"),
                      ("accelerate", "acc.yaml")):
        target = tmp_path / name
        code, out, err = run_cli(capsys, "plan", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "16",
                                 "--global-batch", "256", "--seq", "4096", "--emit", fmt, "--emit-to", str(target),
                                 "--json")
        assert code == 0, err
        best = json.loads(out)["candidates"][0]["layout"]
        back = read_setup_file(str(target), format=fmt).setup.given()
        assert back.get("zero", 0) == best["zero"], fmt
        if fmt != "accelerate":  # an accelerate config holds no batch sizes (the script does)
            assert back["micro_batch"] == best["micro_batch"], fmt
        if fmt != "deepspeed":  # a ds_config.json says nothing of TP/PP
            assert back.get("tp", 1) == best["tp"] and back.get("pp", 1) == best["pp"], fmt
        # nothing is overwritten without --force
        code, _, err = run_cli(capsys, "plan", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "16",
                               "--global-batch", "256", "--seq", "4096", "--emit", fmt, "--emit-to", str(target))
        assert code == 2 and "exists" in err
