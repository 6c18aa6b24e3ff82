"""What the fuzzer (tests/test_fuzz.py) found, one test each, so that each stays fixed whatever seed CI runs."""
from __future__ import annotations

import json
import re

import pytest

from tests.helpers import cli_json, run_cli


def _one_error_line(capsys, *args) -> str:
    code, out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("memplan: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["estimate", "models"])
def test_a_path_component_over_255_bytes_is_named_not_a_traceback(capsys, tmp_path, command):
    # Path.is_dir()/exists() raise ENAMETOOLONG instead of answering False
    line = _one_error_line(capsys, command, str(tmp_path / ("d" * 300) / "config.json"))
    assert "name too long for the file system" in line and "(255 bytes per component)" in line
    # a bare name that long is just an unknown model
    assert "unknown model" in _one_error_line(capsys, command, "x" * 300)


def test_an_integer_of_5000_digits_in_a_file_is_refused_plainly(capsys, tmp_path):
    big = '{"model_type": "llama", "hidden_size": 1' + "0" * 5000 + "}"
    for name, args in (("config.json", ["estimate", "{path}"]), ("setup.json", ["estimate", "gpt2", "--setup", "{path}"])):
        path = tmp_path / name
        path.write_text(big)
        line = _one_error_line(capsys, *[a.format(path=path) for a in args])
        assert "holds a number of over 4,300 digits" in line and "sys.set_int_max_str_digits" not in line


@pytest.mark.parametrize("layer_types,expected", [
    (["full_attention"] * 11 + ["weird_attention"], "'weird_attention'"),
    (["full_attention"] * 3, "a list of 12 entries (num_hidden_layers), got '3 entries'"),
])
def test_layer_types_are_checked_for_every_family_as_transformers_does(capsys, tmp_path, layer_types, expected):
    """transformers 5 PreTrainedConfig.validate_layer_type refuses these for every model type, also for families
    whose modeling code never reads the list (GPT-NeoX): `memplan profile` failed where `estimate` answered."""
    from memplan.catalog import get_model_profile

    cfg = dict(get_model_profile("pythia-160m").hf_config, layer_types=layer_types)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    line = _one_error_line(capsys, "estimate", str(path))
    assert "layer_types" in line and expected in line
    # the legacy names transformers remaps are accepted
    path.write_text(json.dumps(dict(cfg, layer_types=["attention"] * 12)))
    assert run_cli(capsys, "estimate", str(path))[0] == 0


def test_vllm_short_of_memory_reports_a_shortfall_not_a_negative_byte_count(capsys):
    """vLLM logs 'Available KV cache memory: -3.05 GiB' and refuses; memplan's byte fields stay >= 0 and the
    deficit is its own figure (what --gpu-memory-utilization or a quantised checkpoint must recover)."""
    out = cli_json(capsys, "estimate", "llama-3-8b", "--mode", "inference", "-g", "t4")
    v = out["vllm"]
    budget = v["requested"] - v["weights"] - v["profile_peak"] - v["non_torch"] \
        - (v["cudagraph"] if v["cudagraph_in_budget"] else 0)
    assert budget < 0 and v["kv_cache_available"] == 0 and v["kv_cache_shortfall"] == -budget
    assert not v["starts"] and "No available memory for the cache blocks" in v["refusal"]
    assert out["fits"] is False and out["headroom"] < -v["kv_cache_shortfall"]
    code, table, _ = run_cli(capsys, "estimate", "llama-3-8b", "--mode", "inference", "-g", "t4")
    shown = re.search(r"Available KV cache memory +0\.00 GiB \((\S+) GiB short\)", table)
    assert code == 0 and shown and shown.group(1) == f"{v['kv_cache_shortfall'] / 2**30:.2f}"


def test_lora_on_a_family_without_peft_defaults_asks_for_targets(capsys):
    line = _one_error_line(capsys, "estimate", "deepseek-v3", "--lora-rank", "16")
    assert "PEFT has no default LoRA targets for deepseek_v3" in line and "q_a_proj" in line
    assert run_cli(capsys, "estimate", "deepseek-v3", "--lora-rank", "16", "--lora-targets", "q_a_proj")[0] == 0
    assert run_cli(capsys, "estimate", "bert-base", "--lora-rank", "8", "--lora-targets", "pooler")[0] == 0


def test_setup_file_values_out_of_range_say_which_field(capsys, tmp_path):
    script = tmp_path / "pretrain_gpt.sh"
    script.write_text("torchrun --nproc_per_node 0 pretrain_gpt.py --tensor-model-parallel-size 2\n")
    line = _one_error_line(capsys, "estimate", "llama-2-7b", "--setup", str(script))
    assert "field gpus must be a positive number, got 0" in line and "validation error" not in line
    empty = tmp_path / "setup.json"
    empty.write_text("null")
    assert "the top level is null, not a mapping" in _one_error_line(capsys, "estimate", "gpt2", "--setup", str(empty))


def test_alternating_layer_kinds_show_one_row_per_kind(capsys):
    """Gemma 2's 42 layers alternate sliding and global: 42 layer groups of one layer each.  The breakdown has one
    set of rows per kind (x 21 layers), not 42 (it printed ~460 activation rows), and the same totals."""
    est = cli_json(capsys, "estimate", "gemma-2-9b", "-g", "h100-sxm", "-s", "2048")
    rows = [c for c in est["components"] if c["category"] == "activations" and c["name"].startswith("layer")]
    names = [c["name"] for c in rows]
    assert len(names) == len(set(names))
    assert {c["name"].split("]")[0] + "]" for c in rows} == {"layer [sliding-window (4096)]", "layer [global]"}
    assert all("x 21 layers" in c["note"] for c in rows)
    saved = [c for c in est["components"] if c["category"] == "activations"
             and c["name"].split(":")[0].split(" [")[0] in ("layer", "embedding", "head")]
    assert sum(c["bytes"] for c in saved) == est["per_gpu"]["saved_activations"]


@pytest.mark.parametrize("target", [".", "./", "..", "sub/"])
def test_a_folder_name_is_not_a_file_to_write(capsys, tmp_path, monkeypatch, target):
    """`--save-setup .` raised ValueError (Path('.').with_name) after the estimate; `sub/` would have written a
    file named sub."""
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(capsys, "estimate", "gpt2", "--save-setup", target)
    assert "names a folder, not a file" in line
    line = _one_error_line(capsys, "profile", "1M", "--layers", "2", "--hidden", "64", "--heads", "4", "--ffn",
                           "128", "--vocab", "256", "--device", "fake", "--out", target)
    assert "names a folder, not a file" in line
    assert list(tmp_path.iterdir()) == []


def test_save_setup_refuses_an_existing_file_before_the_work_and_writes_nothing(capsys, tmp_path, monkeypatch):
    """It used to estimate, refuse, then keep the setup as saved-1.json anyway."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved.json").write_text("old\n")
    line = _one_error_line(capsys, "estimate", "gpt2", "--save-setup", "saved.json")
    assert "exists; pass --force" in line and "this result is in" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.json"]
    assert (tmp_path / "saved.json").read_text() == "old\n"


def test_force_overwrites_a_saved_setup_where_the_command_has_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved.json").write_text("old\n")
    code, _, err = run_cli(capsys, "estimate", "gpt2", "--save-setup", "saved.json", "--force")
    assert code == 0 and json.loads((tmp_path / "saved.json").read_text())["model"] == "gpt2"
    # `time` has no --force: the refusal does not tell to pass one
    line = _one_error_line(capsys, "time", "gpt2", "-g", "a100-80gb", "-t", "1B", "--save-setup", "saved.json")
    assert "exists; choose another path" in line and "pass --force" not in line


def test_profile_writes_save_setup_only_once_nothing_refuses(capsys, tmp_path, monkeypatch):
    """profile wrote --save-setup when it built the setup, then refused --snapshot on fake tensors (exit 2, a file
    written anyway)."""
    monkeypatch.chdir(tmp_path)
    tiny = ["1M", "--layers", "2", "--hidden", "64", "--heads", "4", "--ffn", "128", "--vocab", "256", "--device",
            "fake", "-s", "32", "--save-setup", "saved.json"]
    assert "--snapshot" in _one_error_line(capsys, "profile", *tiny, "--snapshot", "snap.pickle")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("act,expected", [("", "unknown activation ''"), ("gelu_tanh", "did you mean")])
def test_an_activation_transformers_cannot_build_is_refused(capsys, tmp_path, act, expected):
    """ACT2FN[''] is a KeyError when `memplan profile` builds the model; the estimate refuses it the same way."""
    from memplan.catalog import get_model_profile

    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(get_model_profile("phi-3-mini").hf_config, hidden_act=act)))
    line = _one_error_line(capsys, "estimate", str(path))
    assert "'hidden_act'" in line and expected in line


def test_output_longer_than_the_derived_context_is_refused(capsys):
    """--output without --context: the context is the model's (or --max-model-len); an output that fills it left a
    prompt of <= 0 tokens (ZeroDivisionError in the prefill roofline)."""
    line = _one_error_line(capsys, "estimate", "gpt2", "--mode", "inference", "--output", "1024", "-g", "t4")
    assert "leaves no prompt in a context of 1,024 tokens (the model's max positions)" in line
    line = _one_error_line(capsys, "estimate", "gpt2", "--mode", "inference", "--output", "600", "--max-model-len",
                           "512", "-g", "t4")
    assert "(--max-model-len)" in line
    assert cli_json(capsys, "estimate", "gpt2", "--mode", "inference", "--output", "1000", "-g", "t4")["prompt"] == 24


@pytest.mark.parametrize("rope,expected", [({"type": "yarn", "factor": "x"}, "'rope_scaling.factor' must be a number"),
                                           ("linear", "'rope_scaling' must be an object"),
                                           ({"type": "linear", "factor": 0.5}, "got 0.5")])
def test_rope_scaling_as_transformers_validates_it(capsys, tmp_path, rope, expected):
    from memplan.catalog import get_model_profile

    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(get_model_profile("llama-2-7b").hf_config, rope_scaling=rope)))
    assert expected in _one_error_line(capsys, "estimate", str(path))
    path.write_text(json.dumps(dict(get_model_profile("llama-2-7b").hf_config,
                                    rope_scaling={"type": "linear", "factor": 2.0})))
    assert run_cli(capsys, "estimate", str(path))[0] == 0
