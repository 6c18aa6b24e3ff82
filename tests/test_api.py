"""The Python API: the same objects the CLI prints, every docstring example runs, unknown keywords are refused."""
from __future__ import annotations

import doctest
import json

import pytest

import memplan
from memplan.errors import MemplanError
from tests.helpers import cli_json


@pytest.mark.parametrize("name", ["estimate", "estimate_inference", "compare", "time", "plan", "profile",
                                  "build_setup", "load_setup", "save_setup", "models", "gpus"])
def test_the_package_exposes_the_api(name):
    assert callable(getattr(memplan, name))


def test_unknown_keyword_is_refused_with_did_you_mean():
    with pytest.raises(MemplanError, match="did you mean 'micro_batch'"):
        memplan.estimate("llama-2-7b", micro_bach=4)
    with pytest.raises(AttributeError):
        memplan.estimate_trainnig  # noqa: B018


def test_api_and_cli_give_the_same_object(capsys):
    kw = dict(gpu="a100-80gb", gpus=8, zero=3, micro_batch=4, seq=4096, recompute="full")
    api = json.loads(memplan.estimate("llama-2-7b", **kw).model_dump_json())
    cli = cli_json(capsys, "estimate", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "8", "--zero", "3",
                   "--micro-batch", "4", "--seq", "4096", "--recompute", "full")
    assert api == cli


def test_lora_through_the_api_is_the_lora_figure(capsys):
    lora = memplan.estimate("llama-3-8b", gpu="a100-80gb", lora_rank=16, seq=2048)
    full = memplan.estimate("llama-3-8b", gpu="a100-80gb", seq=2048)
    cli = cli_json(capsys, "estimate", "llama-3-8b", "--gpu", "a100-80gb", "--lora-rank", "16", "--seq", "2048")
    assert lora.setup.lora is not None and lora.per_gpu.required == cli["per_gpu"]["required"]
    assert lora.per_gpu.model_states < full.per_gpu.model_states / 5


def test_inference_mode_returns_a_serving_estimate():
    from memplan.results.inference import InferenceEstimate

    est = memplan.estimate("llama-3-70b", mode="inference", batch=32, context=4096, gpus=4, tp=4)
    assert isinstance(est, InferenceEstimate) and est.per_gpu.kv_cache > 0
    with pytest.raises(MemplanError, match="mode='inference'"):
        memplan.estimate("llama-3-70b", batch=32, context=4096)


def test_max_searches_return_numbers():
    est = memplan.estimate("llama-2-7b", gpu="h100-sxm", gpus=8, zero=3, seq=4096, max_micro_batch=True,
                           max_seq=True)
    assert est.max_micro_batch >= 1 and est.max_seq >= 4096
    with pytest.raises(MemplanError, match="need gpu"):
        memplan.estimate("llama-2-7b", max_micro_batch=True)


def test_every_docstring_example_runs_from_the_package():
    import memplan.api

    result = doctest.testmod(memplan.api, optionflags=doctest.ELLIPSIS, extraglobs={"memplan": memplan})
    assert result.attempted >= 30 and result.failed == 0


# ---- errors name the keyword (the CLI keeps the flag) ---------------------------------------------------------
@pytest.mark.parametrize("call,kwargs,expected", [
    ("estimate", dict(zero=5), "zero must be at most 3, got 5"),
    ("estimate", dict(micro_batch=0), "micro_batch must be a positive number, got 0"),
    ("estimate", dict(recompute="fulll"), "recompute must be one of 'none', 'selective', 'full' or 'selective-op', got 'fulll'"),
    ("estimate", dict(tp=True), "tp must be a whole number, got True"),
    ("estimate", dict(zero=2, offload_params="cpu"), "offload_params needs zero=3"),
    ("estimate", dict(precision=""), "precision must not be empty"),
    ("plan", dict(gpu="a100-80gb", global_batch=0), "global_batch must be at least 1, got 0"),
    ("plan", dict(gpu="a100-80gb", global_batch=8, scale=True, max_gpus=float("inf")), "max_gpus must be"),
    ("plan", dict(gpu="a100-80gb", global_batch=8, cpu_memory="12 parsecs"), "cpu_memory must be a size"),
    ("time", dict(gpu="a100-80gb", global_batch=8, steps=-1), "steps must be at least 1, got -1"),
    ("time", dict(gpu="a100-80gb", global_batch=8, tokens="lots"), "tokens must be a positive count"),
    ("time", dict(gpu="a100-80gb", global_batch=8, tokens=float("inf")), "tokens must be a positive count"),
    ("time", dict(gpu="a100-80gb", global_batch=8, price=float("nan"), tokens="1B"), "price must be a finite"),
])
def test_api_errors_name_the_keyword_not_the_flag(call, kwargs, expected):
    model = "gpt2" if call != "estimate" else "llama-2-7b"
    with pytest.raises(MemplanError) as info:
        getattr(memplan, call)(model, **kwargs)
    assert expected in str(info.value) and "--" not in str(info.value), str(info.value)


def test_input_error_carries_the_field():
    with pytest.raises(memplan.InputError) as info:
        memplan.estimate("llama-2-7b", zero=5)
    assert info.value.field == "zero" and info.value.flag_message() == "--zero must be at most 3, got 5"
    assert isinstance(info.value, ValueError)  # a bad argument value, as Python code expects


def test_the_cli_keeps_the_flag_wording(capsys):
    from tests.helpers import run_cli

    code, _, err = run_cli(capsys, "estimate", "llama-2-7b", "--zero", "2", "--offload-params", "cpu")
    assert code == 2 and "--offload-params needs --zero 3" in err, err
    code, _, err = run_cli(capsys, "estimate", "llama-2-7b", "--zero", "5")
    assert code == 2 and "--zero" in err, err


# ---- results as a notebook shows them -------------------------------------------------------------------------
def test_a_result_is_one_line_and_renders_the_cli_table(capsys):
    from tests.helpers import run_cli

    est = memplan.estimate("llama-2-7b", gpu="a100-80gb", gpus=8, zero=3, micro_batch=4, seq=4096,
                           recompute="full")
    assert repr(est).startswith("MemoryEstimate(llama-2-7b on 8 x a100-80gb: ") and "\n" not in repr(est)
    assert str(est) == (f"llama-2-7b on 8 x a100-80gb: {est.per_gpu.required / 2**30:,.2f} GiB per GPU required, "
                        "fits, peak in backward")
    code, out, _ = run_cli(capsys, "estimate", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "8", "--zero", "3",
                           "--micro-batch", "4", "--seq", "4096", "--recompute", "full")
    assert code == 0 and est.table() == out.rstrip("\n")
    assert out.rstrip("\n") in est._repr_markdown_()
    html = est._repr_html_()
    assert html.startswith("<p><b>llama-2-7b") and "<pre" in html and "&lt;" not in html[:60]


@pytest.mark.parametrize("make", [
    lambda: memplan.estimate("llama-2-7b", gpu="a100-80gb", gpus=8, zero=3, seq=2048),
    lambda: memplan.compare("llama-2-7b", gpu="a100-80gb", gpus=8, seq=2048),
    lambda: memplan.estimate_inference("llama-3-8b", gpu="h100-sxm", batch=8, context=8192),
    lambda: memplan.time("gpt2", "a100-80gb", gpus=8, micro_batch=16, global_batch=512, seq=1024, tokens="1B"),
    lambda: memplan.plan("gpt2", "a100-80gb", gpus=8, global_batch=64, seq=1024, top=2),
], ids=["estimate", "compare", "inference", "time", "plan"])
def test_every_result_has_a_summary_a_table_and_rows(make, monkeypatch):
    import sys

    r = make()
    assert "\n" not in repr(r) and len(repr(r)) < 200
    assert r.table() and r.table() in r._repr_markdown_()
    rows = r.rows()
    assert rows and all(isinstance(x, dict) for x in rows)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="needs pandas: `pip install pandas`"):
        r.to_dataframe()


def test_to_dataframe_with_pandas():
    pd = pytest.importorskip("pandas")
    est = memplan.estimate("llama-2-7b", gpus=8, zero=3, seq=2048)
    df = est.to_dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == len(est.components) and df["bytes"].sum() > 0


def test_the_json_is_unchanged_by_the_views():
    est = memplan.estimate("llama-2-7b", gpus=8, zero=3, seq=2048)
    data = json.loads(est.model_dump_json())
    assert "rows" not in data and "table" not in data and data["model"] == "llama-2-7b"


# ---- what the CLI had and the API lacked ----------------------------------------------------------------------
def test_setup_files_round_trip(tmp_path):
    est = memplan.estimate("llama-2-7b", gpus=8, zero=3, micro_batch=2, seq=4096)
    path = memplan.save_setup(str(tmp_path / "run.json"), est)
    with pytest.raises(MemplanError, match="force=True"):
        memplan.save_setup(path, est)
    loaded = memplan.load_setup(path)
    assert loaded.format == "memplan" and loaded["zero"] == 3 and loaded["micro_batch"] == 2
    again = memplan.estimate(**loaded)
    assert again.per_gpu.required == est.per_gpu.required
    assert memplan.estimate(setup=path, zero=2).setup.layout.zero == 2  # keywords override the file
    assert memplan.save_setup(path, memplan.build_setup("gpt2"), force=True) == path
    with pytest.raises(memplan.InputError, match="setup must be a TrainingSetup"):
        memplan.save_setup(str(tmp_path / "x.json"), 42)


def test_plan_emit_writes_the_engine_file(tmp_path):
    target = tmp_path / "ds_config.json"
    p = memplan.plan("gpt2", "a100-80gb", gpus=8, global_batch=64, seq=1024, top=1, emit="deepspeed",
                     emit_to=str(target))
    data = json.loads(target.read_text())
    assert p.candidates and data["train_micro_batch_size_per_gpu"] == p.candidates[0].layout.micro_batch
    with pytest.raises(MemplanError, match="emit_to needs emit"):
        memplan.plan("gpt2", "a100-80gb", global_batch=64, emit_to=str(target))


def test_model_and_gpu_listings():
    models, gpus = memplan.models(), memplan.gpus()
    assert {"llama-2-7b", "gpt2"} <= {r["name"] for r in models}
    h100 = next(r for r in gpus if r["name"] == "h100-sxm")
    assert h100["memory_bytes"] > 79 * 2**30 and h100["bf16_tflops"] > 900
    assert "| name" in models._repr_markdown_() and "<table>" in gpus._repr_html_()


def test_an_api_call_inside_a_users_click_command_is_still_an_api_call():
    import click
    from click.testing import CliRunner

    @click.command()
    def tool():
        try:
            memplan.estimate("llama-2-7b", zero=5)
        except memplan.InputError as exc:
            click.echo(str(exc))

    assert CliRunner().invoke(tool).output.strip() == "zero must be at most 3, got 5"


def test_the_python_api_doc_runs():
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0


def test_a_validation_error_becomes_the_input_error_of_its_field():
    from pydantic import ValidationError

    from memplan.field_errors import input_error
    from memplan.setups import one_line
    from memplan.spec.layout import Layout

    with pytest.raises(ValidationError) as info:
        Layout(zero=5)
    err = input_error(info.value)
    assert isinstance(err, memplan.InputError) and err.field == "zero"
    assert str(err) == one_line(info.value) == "--zero must be at most 3, got 5"
    assert err.keyword_message() == "zero must be at most 3, got 5"


def test_plan_pins_the_layout_keywords_given_as_the_cli_does(capsys):
    from memplan.cli.plan import PINNABLE

    assert memplan.api.PINNABLE == PINNABLE
    api = memplan.plan("llama-2-7b", "a100-80gb", gpus=16, global_batch=64, seq=4096, tp=2, top=3)
    assert {c.layout.tp for c in api.candidates} == {2}
    cli = cli_json(capsys, "plan", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "16", "-B", "64", "--seq", "4096",
                   "--tp", "2", "--top", "3")
    assert cli["candidates"] == json.loads(api.model_dump_json())["candidates"]


def test_a_profile_result_is_one_line_too():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    r = memplan.profile("gpt2", device="fake", micro_batch=1, seq=128, layers=2)
    assert repr(r).startswith("ProfileResult(gpt2") and "measured peak" in repr(r) and "\n" not in repr(r)
    assert "measured (GiB)" in r.table() and r.rows()[0]["category"] == "weights"
