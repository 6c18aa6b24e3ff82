"""The first questions a new user types: a training sequence people run (not the model's whole context window),
every assumed input stated where it is read and in the JSON, reader warnings said, ambiguous GPU names asked,
and the transformers release the traced rows describe."""
from __future__ import annotations

import json

import pytest

from memplan.spec.training import DEFAULT_TRAINING_SEQ
from tests.helpers import cli_json, run_cli


@pytest.mark.parametrize("model, max_positions", [("qwen2.5-7b", 131072), ("llama-3.1-8b", 131072),
                                                  ("mistral-7b", 32768)])
def test_a_long_context_model_trains_at_the_default_sequence(capsys, model, max_positions):
    est = cli_json(capsys, "estimate", model, "--gpu", "h100-sxm")
    assert est["setup"]["workload"]["seq"] == DEFAULT_TRAINING_SEQ <= 8192  # a value, never null
    first = est["assumed"][0]
    assert first == {"input": "seq", "value": DEFAULT_TRAINING_SEQ,
                     "why": f"training default; the model allows {max_positions:,}"}
    assert {a["input"] for a in est["assumed"]} == {"seq", "micro_batch", "precision", "optimizer", "engine",
                                                     "attention"}
    code, out, _ = run_cli(capsys, "estimate", model, "--gpu", "h100-sxm")
    assert code == 0
    header = out.split("\n\n")[0]  # the lines above the table
    assert f"assumed: seq {DEFAULT_TRAINING_SEQ:,} (training default; the model allows {max_positions:,}: --seq to " \
           "change)" in " ".join(header.split())
    assert "micro-batch 1 (--micro-batch)" in " ".join(header.split())


def test_the_default_is_the_models_own_context_when_shorter(capsys):
    est = cli_json(capsys, "estimate", "gpt2")
    assert est["setup"]["workload"]["seq"] == 1024
    assert est["assumed"][0]["why"].startswith("the model's max positions")


def test_given_inputs_are_not_listed_as_assumed(capsys):
    est = cli_json(capsys, "estimate", "qwen2.5-7b", "--seq", "2048", "-b", "2", "--precision", "bf16-mixed",
                   "--optimizer", "adamw", "--engine", "plain", "--attention", "sdpa")
    assert est["assumed"] == [] and est["setup"]["workload"]["seq"] == 2048
    code, out, _ = run_cli(capsys, "estimate", "qwen2.5-7b", "--seq", "2048")
    assert "assumed: seq" not in out and "assumed: micro-batch 1" in out


def test_a_hint_is_printed_whenever_a_change_fits(capsys):
    code, out, _ = run_cli(capsys, "estimate", "qwen2.5-7b", "--gpu", "h100-sxm")
    assert "DOES NOT FIT" in out and "would fit with: --" in out


def test_the_time_table_states_the_assumed_sequence(capsys):
    code, out, err = run_cli(capsys, "time", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "-B", "64", "-t",
                             "1T", "--zero", "1")
    assert code == 0, err
    assert "x seq 4096 = 262,144 tokens/step" in out and "assumed: seq 4,096" in out


def test_an_ambiguous_gpu_name_asks(capsys):
    code, _, err = run_cli(capsys, "estimate", "llama-2-7b", "--gpu", "a100")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'a100' is ambiguous: did you mean a100-40gb / a100-40gb-pcie / a100-80gb / a100-80gb-pcie?" in err


def test_reader_warnings_are_said_and_kept_in_the_json(capsys, tmp_path):
    """transformers' optim adamw_torch_4bit has no memplan counterpart: read as --optimizer's default, and said."""
    args = tmp_path / "training_args.json"
    args.write_text(json.dumps({"per_device_train_batch_size": 2, "optim": "adamw_torch_4bit", "bf16": True}))
    code, out, err = run_cli(capsys, "estimate", "llama-3-8b", "--setup", str(args), "--seq", "1024", "--json")
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("memplan: warning: ")]
    assert any("adamw_torch_4bit" in line for line in warned)
    assert any("adamw_torch_4bit" in w for w in json.loads(out)["warnings"])


def test_deepspeed_host_ram_without_offload_is_labelled_as_what_it_is(capsys):
    code, out, _ = run_cli(capsys, "estimate", "llama-2-7b", "--gpus", "8", "--engine", "deepspeed", "--zero", "2")
    ram = next(line for line in out.splitlines() if line.startswith("CPU RAM per node"))
    assert "host RAM DeepSpeed needs at init (nothing offloaded)" in ram and "offloaded states" not in ram
    code, out, _ = run_cli(capsys, "estimate", "llama-2-7b", "--gpus", "8", "--engine", "deepspeed", "--zero", "2",
                           "--offload-optimizer", "cpu")
    assert "offloaded states" in next(line for line in out.splitlines() if line.startswith("CPU RAM per node"))


def test_a_transformers_release_other_than_the_traced_one_is_said_once(capsys, monkeypatch):
    from memplan import versions

    monkeypatch.setattr(versions, "installed_version", lambda dist: "9.0.0" if dist == "transformers" else None)
    code, out, err = run_cli(capsys, "estimate", "llama-3.1-8b", "--json")
    drift = [w for w in json.loads(out)["warnings"] if "traced with transformers" in w]
    assert drift == [f"activation rows traced with transformers {versions.TRACED_WITH['transformers']}; 9.0.0 is "
                     "installed, whose modeling code may keep other tensors: `pip install 'memplan[trace]'` pins "
                     f"{versions.TRACED_WITH['transformers']}, `memplan trace` re-traces with yours"]
    assert err.count("traced with transformers") == 1
    # the hand-written rows describe no release; transformers not installed: nothing to say
    assert "traced with" not in run_cli(capsys, "estimate", "llama-3.1-8b", "--implementation", "hf-hand")[2]
    monkeypatch.setattr(versions, "installed_version", lambda dist: None)
    assert "traced with" not in run_cli(capsys, "estimate", "llama-3.1-8b")[2]


def test_the_pinned_release_is_the_one_the_profiles_name():
    """pyproject's trace extra, memplan/versions.py and every traced profile's description name one release."""
    import pathlib
    import re

    from memplan import versions
    from memplan.catalog import profiles_dir

    root = pathlib.Path(__file__).resolve().parent.parent
    pins = re.findall(r'"transformers==([\d.]+)"', (root / "pyproject.toml").read_text())
    assert pins and set(pins) == {versions.TRACED_WITH["transformers"]}
    traced = [p for p in (profiles_dir() / "implementations").iterdir() if p.name.startswith("hf-")]
    assert len(traced) >= 19
    for p in traced:
        description = json.loads(p.read_text())["description"]
        assert f"transformers {versions.TRACED_WITH['transformers']} " in description, p.name


def test_installed_version_reads_the_metadata_folder(tmp_path, monkeypatch):
    import sys

    from memplan import versions

    (tmp_path / "transformers-5.99.1.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(tmp_path)])
    assert versions.installed_version("transformers") == "5.99.1"
    assert versions.installed_version("torch") is None


def test_fp32_gqa_attention_says_what_older_torch_keeps(capsys):
    """Issue 25: on torch < 2.13 fp32 GQA sdpa runs the math path on CUDA (b x heads x s^2 fp32 per layer); the
    estimate follows 2.13's memory-efficient kernel and says so, with the figure."""
    est = cli_json(capsys, "estimate", "llama-3.1-8b", "-p", "fp32", "--seq", "4096")
    line = next(w for w in est["warnings"] if w.startswith("fp32 sdpa with grouped KV heads"))
    assert f"keeps {1 * 32 * 4096 * 4096 * 4 / 2**30:,.2f} GiB" in line  # 32 query heads, 4096^2, 4 B
    assert not any("grouped KV" in w for w in cli_json(capsys, "estimate", "llama-3.1-8b", "--seq", "4096")["warnings"])
    assert not any("grouped KV" in w for w in cli_json(capsys, "estimate", "llama-2-7b", "-p", "fp32")["warnings"])
