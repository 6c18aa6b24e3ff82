"""Issue 18, item 6: no traceback from any input.  One test per crash class the fuzz corpus found, so each stays
fixed whatever seed the fuzz suite (tests/test_fuzz.py) runs."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memplan.errors import MemplanError
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys, *args) -> str:
    code, out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out[:300], err[-500:])
    errors = [x for x in lines if x.startswith("memplan: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-800:]
    line = errors[0]
    assert len(line) < 700 and "validation error" not in line and "Error" not in line.split(":", 2)[-1], line
    return line


def setup_error(capsys, tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    line = one_error_line(capsys, "estimate", "llama-2-7b", "--setup", str(path))
    assert name in line, line
    return line


# ---- setup-file readers ---------------------------------------------------------------------------------------
BIG = "1" + "0" * 5000  # over Python's 4,300-digit int() limit: a ValueError from the parser


@pytest.mark.parametrize("name, text", [
    ("accelerate.yaml", f"distributed_type: FSDP\nnum_processes: {BIG}\n"),
    ("train.toml", f"[parallelism]\ndata_parallel_shard_degree = {BIG}\n"),
    ("ds.json", f'{{"train_micro_batch_size_per_gpu": {BIG}}}'),
    ("pretrain_gpt.sh", f"torchrun --nproc_per_node {BIG} pretrain_gpt.py --micro-batch-size 1\n"),
    ("setup.yaml", f"model: {{name: x}}\nlayout: {{gpus: {BIG}}}\n"),
])
def test_a_5000_digit_integer_in_any_reader_is_one_line(capsys, tmp_path, name, text):
    line = setup_error(capsys, tmp_path, name, text)
    assert "digits" in line or "whole number" in line, line


def test_unicode_digits_are_not_whole_numbers(capsys, tmp_path):
    """'²'.isdigit() is True and int('²') a ValueError; '٣' is read by int() as 3: neither is a Megatron size."""
    for digit in ("\u00b2", "\u0663"):
        line = setup_error(capsys, tmp_path, "pretrain_gpt.sh",
                           f"torchrun --nproc_per_node 8 pretrain_gpt.py --tensor-model-parallel-size {digit}\n")
        assert "--tensor-model-parallel-size: expected a whole number" in line
    line = setup_error(capsys, tmp_path, "t.toml", "[activation_checkpoint]\nmode = 'selective'\n"
                                                   "selective_ac_option = '\u00b2'\n")
    assert "selective_ac_option" in line


@pytest.mark.parametrize("value, shown", [("NaN", "NaN"), ("Infinity", "Infinity"), ("1e400", "Infinity"),
                                          ("-Infinity", "-Infinity")])
@pytest.mark.parametrize("key", ["train_micro_batch_size_per_gpu", "zero_optimization.reduce_bucket_size",
                                 "zero_optimization.offload_optimizer.ratio"])
def test_non_finite_numbers_in_a_deepspeed_config_name_the_field(capsys, tmp_path, key, value, shown):
    data = '{"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "ratio": 0.5}, ' \
           '"reduce_bucket_size": 5e8}, "train_micro_batch_size_per_gpu": 2}'
    parts = key.split(".")
    text = data.replace(f'"{parts[-1]}": ' + {"train_micro_batch_size_per_gpu": "2", "reduce_bucket_size": "5e8",
                                              "ratio": "0.5"}[parts[-1]], f'"{parts[-1]}": {value}')
    line = setup_error(capsys, tmp_path, "ds_config.json", text)
    assert f"{key} is {shown}" in line, line


@pytest.mark.parametrize("name, text, field", [
    ("ds_config.json", '{"train_micro_batch_size_per_gpu": [4], "zero_optimization": {"stage": 3}}',
     "train_micro_batch_size_per_gpu"),
    ("ds_config.json", '{"zero_optimization": {"stage": 3, "offload_optimizer": {"device": ["cpu"]}}}',
     "offload_optimizer.device"),
    ("accelerate.yaml", "distributed_type: FSDP\nnum_processes: {a: 1}\n", "num_processes"),
    ("axolotl.yml", "base_model: x\nmicro_batch_size: [2]\nsequence_len: 2048\n", "micro_batch_size"),
    ("train.toml", "[model]\nname = 'llama3'\nflavor = '8B'\nconverters = 5\n[training]\nlocal_batch_size = 1\n",
     "model.converters"),
    ("training_args.json", '{"per_device_train_batch_size": "four", "optim": "adamw_torch"}',
     "per_device_train_batch_size"),
    ("pretrain_gpt.sh", "torchrun --nproc_per_node 8 x.py --optimizer sgd --sgd-momentum lots\n", "--sgd-momentum"),
    ("training_args.json", '{"per_device_train_batch_size": 1, "fsdp": [1, "offload"], "optim": "adamw_torch"}',
     "fsdp"),
])
def test_wrong_types_in_reader_fields_name_the_field(capsys, tmp_path, name, text, field):
    assert field in setup_error(capsys, tmp_path, name, text)


def test_a_huge_string_value_is_shortened_in_the_message(capsys, tmp_path):
    line = setup_error(capsys, tmp_path, "accelerate.yaml", "distributed_type: FSDP\nnum_processes: '"
                       + "x" * 10_000 + "'\n")
    assert "characters" in line and len(line) < 400


@pytest.mark.parametrize("name, text", [
    ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("deep2.yaml", "".join(" " * i + "k:\n" for i in range(200))),
    ("deep.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n"),
    ("deep.json", '{"a": ' + "[" * 5000 + "]" * 5000 + "}"),
])
def test_deep_nesting_is_refused_before_a_parser_recurses(capsys, tmp_path, name, text):
    line = setup_error(capsys, tmp_path, name, text)
    assert "deep" in line, line


def test_setups_read_structured_shares_the_bounded_parser(tmp_path):
    """setups._read_structured (memplan's own setup files, read before the engine readers) had a second,
    unguarded parser: a deep YAML was a RecursionError and a 5,000-digit TOML integer a ValueError there."""
    from memplan.setups import _read_structured

    for name, text in (("a.yaml", "a: " + "[" * 3000 + "]" * 3000), ("a.toml", f"a = {BIG}"),
                       ("a.json", '{"a": NaN}'), ("b.yaml", "a: .inf\n")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(MemplanError):
            _read_structured(str(path))


def test_a_megatron_variable_expansion_bomb_is_refused_quickly(capsys, tmp_path):
    import time

    chain = "A=xxxxxxxx\n" + "".join(f"{chr(66 + i)}=${chr(65 + i)}${chr(65 + i)}${chr(65 + i)}${chr(65 + i)}\n"
                                     for i in range(20))
    t0 = time.perf_counter()
    line = setup_error(capsys, tmp_path, "bomb.sh", chain + "torchrun --nproc_per_node 8 x.py "
                                                            "--micro-batch-size $U\n")
    assert "expands to over" in line and time.perf_counter() - t0 < 5
    # a script that only defines the chain and never uses a big word is still bounded in all
    many = "A=" + "x" * 60_000 + "\n" + "torchrun --nproc_per_node 8 x.py " + " ".join(["$A"] * 200) + "\n"
    assert "expands to over" in setup_error(capsys, tmp_path, "many.sh", many)


def test_a_15_mib_launch_script_is_refused_at_once(capsys, tmp_path):
    import time

    path = tmp_path / "huge.sh"
    path.write_text("--x 1 " * (15 * 2**20 // 6))
    t0 = time.perf_counter()
    line = one_error_line(capsys, "estimate", "llama-2-7b", "--setup", str(path))
    assert "the limit is 1 MiB" in line and time.perf_counter() - t0 < 5


def test_a_launch_script_just_under_the_limit_reads_in_linear_time(tmp_path):
    import time

    from memplan.setupfiles._source import MAX_BYTES
    from memplan.setupfiles.megatron import tokens

    line = "torchrun --nproc_per_node 8 x.py --micro-batch-size 2 --lr 1e-4 \\\n"
    text = line * (MAX_BYTES // len(line) - 1)
    t0 = time.perf_counter()
    assert len(tokens(text)) > 100_000
    assert time.perf_counter() - t0 < 20  # ~1 s on one free core; minutes before


def test_a_reader_error_is_one_line_even_for_a_multiline_value(tmp_path):
    from memplan.setupfiles import read_setup_file

    path = tmp_path / "accelerate.yaml"
    path.write_text("distributed_type: FSDP\nnum_processes: |\n  eight\n  processes\n")
    with pytest.raises(MemplanError) as err:
        read_setup_file(path)
    assert "\n" not in str(err.value) and "num_processes" in str(err.value)


# ---- quantization_config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("q, field", [
    ({"quant_method": "fp8", "weight_block_size": [0, 0]}, "weight_block_size"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128, 1]}, "weight_block_size"),
    ({"quant_method": "awq", "group_size": 0}, "group_size"),
    ({"quant_method": "awq", "group_size": "x"}, "group_size"),
    ({"quant_method": "gptq", "group_size": -5}, "group_size"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 4, "type": "int", "strategy": "group", "group_size": 0}}}}, "group_size"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "block", "block_structure": "0x0"}}}}, "block_structure"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "weird"}}}}, "strategy"),
    ({"quant_method": "bitsandbytes", "llm_int8_skip_modules": 5}, "module names"),
])
def test_quantization_block_and_group_sizes_of_zero_are_one_line(capsys, tmp_path, q, field):
    from memplan.catalog import get_model_profile

    cfg = dict(get_model_profile("qwen3-0.6b").hf_config, quantization_config=q)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert field in one_error_line(capsys, "estimate", str(path), "--mode", "inference", "-g", "h100-sxm")


def test_gptq_group_size_minus_one_is_still_a_whole_row(tmp_path):
    from memplan.spec.quantization import from_hf_config

    q = from_hf_config({"quant_method": "gptq", "bits": 4, "group_size": -1})
    assert q.group_size is None and q.strategy == "group"


# ---- derived counts and the time/plan extremes --------------------------------------------------------------------
def test_the_405b_8192_gpu_layout_answers(capsys):
    """dp 64 x tp 8 x pp 16, grad-accum 32: the DOES NOT FIT hint doubled the GPUs past Layout's 2^20 bound and
    pydantic's ValidationError came out as a traceback."""
    code, out, err = run_cli(capsys, "time", "llama-3.1-405b", "--gpu", "h100-sxm", "--gpus", "8192", "--tp", "8",
                             "--pp", "16", "-B", "2048", "-b", "1", "--seq", "8192", "-t", "15T")
    assert code == 0, err
    assert "dp64 tp8 pp16" in out and "ga32" in out and "days" in out


def test_a_does_not_fit_verdict_above_2_19_gpus_answers(capsys):
    code, out, err = run_cli(capsys, "estimate", "llama-3.1-405b", "-g", "t4", "-n", str(2**20), "--tp", "8",
                             "--pp", "16", "-s", "131072", "--json")
    assert code == 0, err
    assert json.loads(out)["fits"] is False


def test_layout_replace_past_a_bound_is_a_memplan_error_naming_the_flags():
    from memplan.spec.layout import Layout

    with pytest.raises(MemplanError, match=r"--gpus .*derived: --gpus 2097152"):
        Layout(gpus=2**20).replace(gpus=2**21)


def test_thousands_of_alternating_layers_answer_in_seconds(capsys):
    import time

    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "estimate", "gemma-2-9b", "--layers", "5000", "-g", "h100-sxm")
    assert code == 0, err
    assert time.perf_counter() - t0 < 60  # minutes before (the hint's 400 full estimates of 5,000 layer groups)


@pytest.mark.parametrize("command", ["time", "plan"])
def test_a_kernel_scale_past_the_peak_is_refused_with_the_largest_that_is_not(capsys, command):
    args = ["llama-2-7b", "-g", "h100-sxm"] + (["-t", "1T"] if command == "time" else ["-B", "64", "-n", "8"])
    line = one_error_line(capsys, command, *args, "--kernel-scale", "2.5")
    assert "--kernel-scale 2.5" in line and "MFU over 100%" in line and "use --kernel-scale" in line
    scale = float(line.rsplit("use --kernel-scale ", 1)[1].split()[0])
    code, out, err = run_cli(capsys, command, *args, "--kernel-scale", str(scale), "--json")
    assert code == 0, err
    data = json.loads(out)
    mfu = data["mfu"] if command == "time" else data["candidates"][0]["mfu"]
    assert 0 < mfu <= 1


@pytest.mark.parametrize("fn, kw, keyword", [
    ("plan", dict(global_batch=64, max_gpus=math.inf, scale=True), "^max_gpus must"),
    ("plan", dict(global_batch=64, max_gpus=math.inf, min_gpus=True), "^max_gpus must"),
    ("plan", dict(global_batch=0), "^global_batch must"),
    ("plan", dict(global_batch=64, top=0), "^top must"),
    ("time", dict(global_batch=0, steps=10), "^global_batch must"),
    ("time", dict(global_batch=8, steps=-1), "^steps must"),
    ("time", dict(global_batch=8, steps=math.inf), "^steps must"),
    ("time", dict(global_batch=8.5, steps=10), "^global_batch must"),
])
def test_the_api_validates_counts_at_its_boundary(fn, kw, keyword):
    import signal

    import memplan

    def too_long(*_):
        raise AssertionError("no answer within 20 s (a loop on inf?)")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(20)
    try:
        with pytest.raises(MemplanError, match=keyword):
            getattr(memplan, fn)("llama-2-7b", "h100-sxm", **kw)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_days_and_cost_follow_from_the_step(capsys):
    from tests.fuzz.invariants import _time

    code, out, err = run_cli(capsys, "time", "llama-2-7b", "-g", "h100-sxm", "--steps", "100", "-B", "64", "-n",
                             "8", "--json")
    assert code == 0, err
    t = json.loads(out)
    assert _time(t) == [] and t["days"] > 0 and t["cost"] > 0


# ---- writes ------------------------------------------------------------------------------------------------------
def test_save_setup_to_dev_stdout_appends_to_the_redirected_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("first line of the log\n")
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "memplan", "estimate", "gpt2", "--save-setup", "/dev/stdout",
                               "--force"], stdout=fh, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert text.startswith("first line of the log\n") and '"memplan_setup"' in text and "gpt2" in text


def test_a_stream_path_is_written_through_not_replaced(tmp_path):
    from memplan.report.files import stream_fd, write_new_file

    assert stream_fd("/dev/stdout") == 1 and stream_fd("/dev/stderr") == 2 and stream_fd("/dev/fd/5") == 5
    assert stream_fd("/proc/self/fd/7") == 7 and stream_fd(f"/proc/{os.getpid()}/fd/3") == 3
    assert stream_fd("/proc/1/fd/1") is None or os.getpid() == 1
    assert stream_fd(tmp_path / "x.json") is None
    target = tmp_path / "kept.txt"
    target.write_text("kept\n")
    with open(target, "a") as fh:
        write_new_file(f"/dev/fd/{fh.fileno()}", "appended\n", force=True)
    assert target.read_text() == "kept\nappended\n"
    with pytest.raises(MemplanError, match="not open"):
        write_new_file("/dev/fd/987", "x")


def test_concurrent_save_setup_one_wins_the_other_gets_one_line(tmp_path):
    """Two processes writing the same --save-setup path at once: one writes it, the other is refused in one line
    (its setup kept under a free name beside it, or refused up front); the file is never torn."""
    script = textwrap.dedent("""
        import sys
        from memplan.cli import main
        sys.exit(main(["estimate", sys.argv[1], "--save-setup", "same.json"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    for attempt in range(2):
        for f in tmp_path.iterdir():
            f.unlink()
        procs = [subprocess.Popen([sys.executable, "-c", script, model], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=env) for model in ("gpt2", "pythia-160m")]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes in ([0, 0], [0, 2]), results
        data = json.loads((tmp_path / "same.json").read_text())  # complete JSON: not torn
        assert data["model"] in ("gpt2", "pythia-160m")
        for code, err in results:
            if code == 2:
                errors = [x for x in err.splitlines() if x.startswith("memplan: error:")]
                assert len(errors) == 1 and "Traceback" not in err, err
        if codes == [0, 0]:  # the second run found the first one's file only after its up-front check
            assert any("this result is in" in err for _, err in results) or \
                len(list(tmp_path.glob("same*.json"))) == 1
        leftovers = [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
        assert leftovers == []


def test_trace_never_writes_into_the_installed_profiles(tmp_path, monkeypatch):
    """`memplan trace FOLDER --force` where FOLDER is named like a shipped profile wrote over the shipped
    profile; the default target is now $MEMPLAN_PROFILES or the user catalog ($MEMPLAN_HOME/profiles)."""
    import click

    from memplan.catalog import profiles_dir
    from memplan.cli import trace as trace_cli

    monkeypatch.delenv("MEMPLAN_PROFILES", raising=False)
    monkeypatch.setenv("MEMPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    shipped = Path(str(profiles_dir())) / "implementations" / "hf-llama.json"
    before = shipped.read_bytes() if shipped.exists() else None
    seen = {}

    def fake_check(target, force, what):
        seen["target"] = Path(target)
        raise MemplanError("stop here")

    monkeypatch.setattr(trace_cli, "_need_packages", lambda: None)
    monkeypatch.setattr("memplan.report.files.check_writable", fake_check)
    folder = tmp_path / "llama-2-7b"
    folder.mkdir()
    from memplan.catalog import get_model_profile

    (folder / "config.json").write_text(json.dumps(get_model_profile("llama-2-7b").hf_config))
    with pytest.raises(MemplanError, match="stop here"):
        trace_cli.trace_command.callback(config=str(folder), out=None, force=True, workers=1, as_json=False)
    assert seen["target"].parent == tmp_path / "home" / "profiles" / "implementations"
    assert seen["target"].name.startswith("hf-llama-")
    assert (shipped.read_bytes() if shipped.exists() else None) == before
    del click


# ---- Ctrl-C during start-up ---------------------------------------------------------------------------------------
def test_the_console_script_installs_the_sigint_handler_as_memplan_cli_is_imported(tmp_path):
    """The console script imports memplan.cli before it calls run(): the handler is in place from that import
    on, so a Ctrl-C in the rest of start-up (click, pydantic, the command's imports) prints no traceback."""
    wrapper = tmp_path / "memplan"
    wrapper.write_text("import signal\nimport memplan.cli\nfrom memplan import interrupt\n"
                       "print(signal.getsignal(signal.SIGINT) is interrupt._abort)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(wrapper)], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    # (compared with the handler the process started with: a background job's SIGINT starts ignored)
    lib = subprocess.run([sys.executable, "-c", "import signal; before = signal.getsignal(signal.SIGINT); "
                          "import memplan.cli; print(signal.getsignal(signal.SIGINT) is before)"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert lib.stdout.strip() == "True", lib.stderr  # a library import leaves Python's handler alone


def test_ctrl_c_early_in_start_up_prints_one_line(tmp_path):
    """SIGINT delivered while memplan is still importing (right after the handler): one line, exit 130."""
    wrapper = tmp_path / "memplan"
    wrapper.write_text("import os, signal, sys\nimport memplan.cli\nos.kill(os.getpid(), signal.SIGINT)\n"
                       "import click, pydantic\nsys.exit(memplan.cli.run())\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(wrapper), "gpus"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 130 and out.stderr == "memplan: aborted\n" and "Traceback" not in out.stderr


# ---- config folders stay data ------------------------------------------------------------------------------------
def test_a_config_folder_is_data_never_code_and_nothing_opens_a_socket(capsys, tmp_path, monkeypatch):
    """A config folder with remote code (auto_map, modeling_*.py, __init__.py) and a setup file that points at it:
    memplan reads the JSON and never imports or runs a file of the folder, and opens no network socket."""
    import socket

    from memplan.catalog import get_model_profile

    def no_network(*args, **kwargs):
        raise AssertionError(f"a network socket was opened: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "EXECUTED"
    code = f"open({str(marker)!r}, 'w').write('imported')\n"
    for name in ("__init__.py", "modeling_evil.py", "configuration_evil.py", "setup.py"):
        (folder / name).write_text(code)
    cfg = dict(get_model_profile("qwen3-0.6b").hf_config, auto_map={
        "AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "axolotl.yml").write_text(f"base_model: x\nbase_model_config: {folder}\nmicro_batch_size: 1\n"
                                          "sequence_len: 512\n")
    monkeypatch.chdir(tmp_path)
    for args in (["estimate", str(folder), "--json"], ["estimate", str(folder), "--mode", "inference", "-g", "h100-sxm"],
                 ["models", str(folder)], ["estimate", "gpt2", "--setup", "axolotl.yml"],
                 ["time", str(folder), "-g", "h100-sxm", "-t", "1e9"]):
        run_cli(capsys, *args)
    assert not marker.exists()
    assert not any(m.startswith(("modeling_evil", "configuration_evil")) for m in sys.modules)


def test_an_error_quoting_a_huge_value_stays_one_short_line(capsys, tmp_path):
    from memplan.catalog import get_model_profile

    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(get_model_profile("gpt2").hf_config, model_type="x" * 20_000)))
    line = one_error_line(capsys, "estimate", str(path))
    assert "characters" in line and len(line) < 700


def test_a_config_json_whole_number_of_30_digits_names_its_field(capsys, tmp_path):
    from memplan.catalog import get_model_profile

    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(get_model_profile("gpt2").hf_config, n_embd=10**30)))
    line = one_error_line(capsys, "estimate", str(path))
    assert "n_embd" in line and "31 digits" in line
    path.write_text(json.dumps(dict(get_model_profile("gpt2").hf_config, note="12345678901234567890123")))
    assert run_cli(capsys, "estimate", str(path))[0] == 0  # digits inside a string are text


@pytest.mark.parametrize("args", [["time", "llama-2-7b", "-g", "a100-80gb", "-t", "nan", "-n", "8"],
                                  ["time", "llama-2-7b", "-g", "h100-sxm", "-t", "1T", "--kernel-scale", "2.5"],
                                  ["plan", "llama-2-7b", "-g", "h100-sxm", "-B", "64", "-n", "8", "--kernel-scale", "2.5"]])
def test_a_refused_time_or_plan_writes_no_save_setup(capsys, tmp_path, args):
    target = tmp_path / "saved.json"
    one_error_line(capsys, *args, "--save-setup", str(target))
    assert not target.exists()
