"""`profile` and `bench`: environment checks before any work, out-of-memory as a result, refusals up front.

Out-of-memory errors are raised by small models built through --factory (the messages are torch's own: the
CPU allocator's RuntimeError, torch.OutOfMemoryError, Python's MemoryError), so nothing here needs the memory.
"""
from __future__ import annotations

import json
import sys

import pytest

torch = pytest.importorskip("torch")

from memplan.measure.models import build_model  # noqa: E402
from tests.helpers import run_cli  # noqa: E402

TINY = ["1", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "160", "--vocab", "512",
        "--max-positions", "64", "--seq", "32", "-b", "2"]
REF = TINY + ["--model-source", "reference"]
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)")
HERE = "tests.test_profile_reliability"


def oom_at_build(spec):
    raise RuntimeError(CPU_OOM)


def _raise_on_call(n: int, exc: BaseException):
    calls = [0]

    def hook(*_):
        calls[0] += 1
        if calls[0] >= n:
            raise exc
    return hook


def oom_in_measured_forward(spec):
    """Warm-up runs; the measured step's forward hits the CPU allocator's error in the last layer."""
    module = build_model(spec, "reference").module
    module.layers[-1].register_forward_pre_hook(_raise_on_call(2, RuntimeError(CPU_OOM)))
    return module


def memory_error_in_warmup(spec):
    module = build_model(spec, "reference").module
    module.layers[-1].register_forward_pre_hook(_raise_on_call(1, MemoryError()))
    return module


def oom_above_two_sequences(spec):
    module = build_model(spec, "reference").module

    def hook(_module, args):
        if args[0].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (simulated)")
    module.register_forward_pre_hook(hook)
    return module


def raises_value_error(spec):
    raise ValueError("the checkpoint has 3 heads\nsecond line")


def _one_line(code, out, err) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("memplan: error: ") and "Traceback" not in err, err
    return lines[-1]


def test_cuda_on_a_cpu_only_torch_says_how_to_install_a_cuda_build(capsys):
    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    for args in (["profile", *REF, "--device", "cuda"], ["bench", "--device", "cuda"]):
        line = _one_line(*run_cli(capsys, *args))
        assert "is a CPU-only build" in line and "--index-url https://download.pytorch.org/whl/cu128" in line


def test_missing_torch_and_transformers_are_one_line_with_the_install_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails as if not installed
    line = _one_line(*run_cli(capsys, "profile", *TINY, "--device", "fake", "--model-source", "hf"))
    assert "needs transformers, which is not installed: `pip install 'memplan[hf]'`" in line
    monkeypatch.setitem(sys.modules, "torch", None)
    for args in (["profile", *REF, "--device", "fake"], ["bench", "--device", "cpu"],
                 ["profile", *REF, "--device", "fake", "--nproc", "2", "--strategy", "zero3"]):
        line = _one_line(*run_cli(capsys, *args))
        assert "needs torch, which is not installed: `pip install torch`" in line


def test_unwritable_out_fails_before_anything_is_measured(capsys, tmp_path):
    (tmp_path / "x.json").write_text("{}")  # a file where --plot needs a folder
    for args in (["--out", "/proc/memplan.json"], ["--plot", str(tmp_path / "x.json" / "p.png")],
                 ["--out", str(tmp_path), "--force"]):
        code, out, err = run_cli(capsys, "profile", *REF, "--device", "fake", *args)
        _one_line(code, out, err)
        assert "building" not in err and "measured step" not in err, err
    code, out, err = run_cli(capsys, "bench", "--device", "cpu", "--size", "64", "--out", "/proc/b.json")
    _one_line(code, out, err)
    assert "matmul" not in err


@pytest.mark.parametrize("factory,phase", [("oom_at_build", "build"), ("oom_in_measured_forward", "forward"),
                                           ("memory_error_in_warmup", "forward")])
def test_out_of_memory_is_a_result_with_a_record(capsys, tmp_path, factory, phase):
    record = tmp_path / "run.json"
    code, out, err = run_cli(capsys, "profile", *TINY, "-p", "fp32", "--device", "cpu", "--factory",
                             f"{HERE}:{factory}", "--out", record)
    assert code == 0, err
    assert f"OUT OF MEMORY during {phase}" in out and f"OUT OF MEMORY during {phase}" in err
    assert "Traceback" not in err
    rec = json.loads(record.read_text())
    assert rec["oom"] is True and rec["measured"]["oom"] is True and rec["measured"]["oom_phase"] == phase
    assert rec["error_percent"] is None  # a step cut short has no peak to compare
    m = rec["measured"]
    if phase == "build":
        assert m["peak_allocated"] == 0 and m["phases"] == []
    else:  # what was alive when it failed, by category: at least the fp32 weights (151,872 parameters)
        assert m["weights"] == 4 * 151_872 and m["peak_allocated"] >= m["weights"]


def test_find_max_batch_counts_an_out_of_memory_as_does_not_fit(capsys):
    code, out, err = run_cli(capsys, "profile", *TINY, "-p", "fp32", "--device", "cpu", "--gpu", "h100-sxm",
                             "--factory", f"{HERE}:oom_above_two_sequences", "--find-max-batch", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["max_micro_batch"] == 2
    assert any(t["oom"] and t["micro_batch"] > 2 for t in d["tried"])


def test_sizes_no_machine_could_hold_are_refused_up_front(capsys, tmp_path):
    cfg = tmp_path / "huge" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 1_000_000,
                               "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                               "vocab_size": 32000, "max_position_embeddings": 4096}))
    line = _one_line(*run_cli(capsys, "profile", str(cfg), "--device", "fake", "--seq", "16"))
    # the config reader refuses it first (memplan/families/config.py MAX_LAYERS), naming the key and the bound
    assert "'num_hidden_layers' must be at most 16,384" in line and "got 1000000" in line
    code, out, err = run_cli(capsys, "profile", "llama-3.1-405b", "--device", "cpu", "--seq", "16")
    line = _one_line(code, out, err)
    assert "the estimated peak" in line and "over 2x this host's memory" in line and "--device fake" in line
    assert "building" not in err
    line = _one_line(*run_cli(capsys, "bench", "--device", "cpu", "--size", "1000000"))
    assert "bench --size 1000000: the matrices need" in line and "the largest n that fits is about" in line


def test_bench_out_of_memory_is_a_result(capsys, tmp_path, monkeypatch):
    import memplan.measure.bench as bench

    def oom(*a, **k):
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(bench, "matmul_bench", oom)
    out_file = tmp_path / "b.json"
    code, out, err = run_cli(capsys, "bench", "--device", "cpu", "--size", "64", "--repeats", "1", "--out",
                             out_file)
    assert code == 0, err
    assert "OUT OF MEMORY during matmul fp32 n=64" in out
    rec = json.loads(out_file.read_text())
    assert rec["oom"] is True and rec["oom_phase"] == "matmul fp32 n=64" and rec["matmul"] == []


def test_model_build_failures_are_one_line_naming_the_source(capsys, tmp_path):
    line = _one_line(*run_cli(capsys, "profile", *TINY, "--device", "fake", "--factory", f"{HERE}:raises_value_error"))
    assert line.endswith(f"--factory {HERE}:raises_value_error: the function raised ValueError: the checkpoint has "
                         "3 heads")
    pytest.importorskip("transformers")
    cfg = tmp_path / "act" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160,
                               "vocab_size": 512, "max_position_embeddings": 64, "hidden_act": "no_such_act"}))
    line = _one_line(*run_cli(capsys, "profile", str(cfg), "--device", "fake", "--seq", "16"))
    assert "no_such_act" in line  # transformers' KeyError, or the config reader's own refusal


def test_adafactor_under_fsdp2_is_refused_before_any_rank_starts(capsys):
    """transformers' Adafactor steps plain-tensor row/column statistics against FSDP2's DTensor parameters and
    raises "got mixed torch.Tensor and DTensor" inside the ranks; memplan refuses the pair up front."""
    for strategy in ("zero2", "zero3"):
        line = _one_line(*run_cli(capsys, "profile", *REF, "--optimizer", "adafactor", "--nproc", "2",
                                  "--strategy", strategy, "--device", "cpu"))
        assert "adafactor cannot step FSDP2's sharded (DTensor) parameters" in line and "--strategy ddp" in line


def attribute_error_in_forward(spec):
    """What a model code bug looks like (transformers 5.24's Llama4ForConditionalGeneration without a vision_config
    reads `outputs.image_outputs` from a text-only output): an AttributeError, not an out-of-memory."""
    module = build_model(spec, "reference").module
    module.layers[-1].register_forward_pre_hook(
        _raise_on_call(1, AttributeError("'MoeCausalLMOutputWithPast' object has no attribute 'image_outputs'")))
    return module


def test_a_step_that_raises_is_one_line_naming_the_model_and_phase(capsys):
    line = _one_line(*run_cli(capsys, "profile", *TINY, "-p", "fp32", "--device", "cpu", "--factory",
                              f"{HERE}:attribute_error_in_forward"))
    assert "the forward of " in line and "failed" in line and "(MoeCausalLMOutputWithPast has no image_outputs)" in line and "Error" not in line
