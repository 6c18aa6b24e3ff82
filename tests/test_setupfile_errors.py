"""A malformed or unsupported config file is one line naming the file (and the key or line), never a traceback.

The CLI prints a MemplanError as `memplan: error: <message>` with exit 2; here every failure must be one.
"""
from __future__ import annotations

import sys
import textwrap

import pytest

from memplan.errors import MemplanError
from memplan.setupfiles import _source, emit_setup, read_setup_file


def fails(path, match: str, **kw) -> str:
    with pytest.raises(MemplanError) as err:
        read_setup_file(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert str(path) in msg or path.name in msg, msg
    assert match in msg, msg
    return msg


def put(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.mark.parametrize("name, text, match", [
    ("ds.json", '{"zero_optimization": {"stage": 1,}}', "not valid JSON"),
    ("ds.json", '{"train_batch_size": 8, "train_batch_size": 16}', "appears twice"),
    ("a.yaml", "distributed_type: FSDP\nfsdp_config:\n  - [unclosed\n", "not valid YAML"),
    ("t.toml", "[training]\nseq_len = = 4\n", "not valid TOML"),
    ("ds.json", "[1, 2]", "not a mapping of settings"),
])
def test_syntax_errors_name_the_file_and_line(tmp_path, name, text, match):
    msg = fails(put(tmp_path, name, text), match)
    if "valid" in match:
        assert "line" in msg


@pytest.mark.parametrize("name, text, fmt, key", [
    ("ds.json", '{"zero_optimization": {"stage": "three"}}', None, "zero_optimization.stage"),
    ("ds.json", '{"zero_optimization": {"stage": 4}}', None, "zero_optimization.stage"),
    ("ds.json", '{"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}', None,
     "zero_optimization.offload_optimizer.device"),
    ("ds.json", '{"train_micro_batch_size_per_gpu": 0}', None, "train_micro_batch_size_per_gpu"),
    ("ds.json", '{"train_batch_size": 100, "train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 2}',
     None, "train_batch_size"),
    ("ds.json", '{"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": "yes please"}}', None, "bf16.enabled"),
    ("a.yaml", "compute_environment: LOCAL_MACHINE\nnum_processes: 8\n", "accelerate", "distributed_type"),
    ("a.yaml", "distributed_type: TPU_POD\n", None, "distributed_type"),
    ("a.yaml", "distributed_type: FSDP\nnum_processes: 6\nnum_machines: 4\n", None, "num_processes"),
    ("a.yaml", "distributed_type: FSDP\nfsdp_config:\n  fsdp_reshard_after_forward: HALF_SHARD\n", None,
     "fsdp_config.fsdp_reshard_after_forward"),
    ("t.toml", "[parallelism]\ndata_parallel_shard_degree = 0\n", "torchtitan", "data_parallel_shard_degree"),
    ("t.toml", "[parallelism]\npipeline_parallel_degree = 2\npipeline_parallel_schedule = 'Zigzag'\n", "torchtitan",
     "pipeline_parallel_schedule"),
    ("t.toml", "[activation_checkpoint]\nmode = 'sometimes'\n", "torchtitan", "activation_checkpoint.mode"),
    ("x.yml", "base_model: a/b\nadapter: lora\nsequence_len: 512\n", None, "lora_r"),
    ("x.yml", "base_model: a/b\nmicro_batch_size: 3\nbatch_size: 10\n", None, "batch_size"),
    ("x.yml", "base_model: a/b\nsequence_len: 512\ndeepspeed: configs/missing.json\n", None, "deepspeed"),
    ("args.json", '{"per_device_train_batch_size": 2, "bf16": true, "fp16": true}', None, "bf16"),
    ("args.json", '{"per_device_train_batch_size": 2, "fsdp": "full_shard everything"}', None, "fsdp"),
    ("run.sh", "torchrun --nproc-per-node $NGPU pretrain_gpt.py --tensor-model-parallel-size 2\n", None,
     "--nproc-per-node"),
    ("run.sh", "python pretrain_gpt.py --tensor-model-parallel-size $TP\n", None, "--tensor-model-parallel-size"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, name, text, fmt, key):
    fails(put(tmp_path, name, text), key, **({"format": fmt} if fmt else {}))


def test_files_that_are_not_config_files(tmp_path):
    fails(tmp_path / "missing.json", "does not exist")
    (tmp_path / "folder.json").mkdir()
    fails(tmp_path / "folder.json", "not a regular file")
    with pytest.raises(MemplanError, match="not a regular file"):
        read_setup_file("/dev/null")
    big = tmp_path / "huge.json"
    with open(big, "wb") as fh:  # sparse: no 17 MiB actually written
        fh.truncate(_source.MAX_BYTES + 1)
    fails(big, "the limit is 1 MiB")
    binary = tmp_path / "model.safetensors.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    fails(binary, "not UTF-8")


def test_unknown_format_and_undetectable_content(tmp_path):
    path = put(tmp_path, "x.json", '{"model": "llama-2-7b"}')
    fails(path, "cannot tell which engine")
    with pytest.raises(MemplanError, match=r"unknown config format 'deepspeeed'; did you mean 'deepspeed'"):
        read_setup_file(path, format="deepspeeed")
    with pytest.raises(MemplanError, match="unknown config format 'axolotl'"):
        emit_setup({"gpus": 8}, "axolotl")  # axolotl is read, not written


def test_bad_layouts_for_emitters():
    with pytest.raises(MemplanError, match=r"gpus 12 is not divisible by tp\*pp\*cp = 8"):
        emit_setup({"gpus": 12, "tp": 8}, "megatron")
    with pytest.raises(MemplanError, match="layout zero"):
        emit_setup({"gpus": 8, "zero": 5}, "deepspeed")
    with pytest.raises(MemplanError, match="layout micro_bach"):
        emit_setup({"gpus": 8, "micro_bach": 5}, "deepspeed")


def test_missing_parsers_say_what_to_install(tmp_path, monkeypatch):
    yaml_file = put(tmp_path, "a.yaml", "distributed_type: NO\n")
    toml_file = put(tmp_path, "t.toml", "[training]\nseq_len = 8\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    fails(yaml_file, "pip install pyyaml")
    with pytest.raises(MemplanError, match="pip install pyyaml"):
        emit_setup({"gpus": 2}, "accelerate")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    fails(toml_file, "pip install tomli")


def test_hostile_nesting_and_aliases(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # json's scanner would hit the recursion limit
    fails(deep, "levels deep")
    yaml_deep = tmp_path / "deep.yaml"
    yaml_deep.write_text("a: " + "[" * 5_000 + "]" * 5_000 + "\n")
    fails(yaml_deep, "nests too deeply")
    laughs = ["a0: &a0 {x: 1, y: 2}"] + [f"a{i}: &a{i} {{x: *a{i - 1}, y: *a{i - 1}}}" for i in range(1, 40)]
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text("\n".join(laughs) + "\ndistributed_type: NO\n")  # 2^40 settings if walked naively
    fails(bomb, "YAML aliases")
