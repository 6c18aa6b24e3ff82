"""Activation rows people read: named by what the tensors are (measure/trace/names.py, applied at trace time), the aten
detail kept in `detail` for --json and --verbose; sizes without scientific notation; sources only under --verbose;
the --setup reading as a short table."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from memplan.cli import cli
from memplan.measure.trace.names import role, row_name

PROFILES = Path(__file__).resolve().parent.parent / "profiles" / "implementations"
TRACED = sorted(PROFILES.glob("hf-*.json"))
SHOWN = ("layer", "checkpoint", "embedding", "head", "forward_only")  # the regions the table lists row by row
ATEN = re.compile(r"_unsafe_view|new_empty|nll_loss|aten|saved by|@|_to_copy|native_|_softmax|addmm|\bmm\b|\bbmm\b")
MAIN = ("llama", "qwen2", "gemma3", "mixtral", "gpt2", "bert")


def _rows(path: Path):
    prof = json.loads(path.read_text())
    for region in SHOWN:
        for row in prof.get(region, []):
            yield region, row


def test_every_family_has_a_traced_profile():
    assert len(TRACED) >= 19


@pytest.mark.parametrize("path", TRACED, ids=lambda p: p.stem)
def test_shown_rows_carry_no_aten_names(path):
    bad = [(region, row["name"]) for region, row in _rows(path) if ATEN.search(row["name"])]
    assert bad == []
    assert all(row.get("detail") for _, row in _rows(path)), "every traced row keeps its aten detail"


@pytest.mark.parametrize("family", MAIN)
def test_main_families_name_every_row(family):
    path = PROFILES / f"hf-{family.replace('_', '-')}.json"
    fallback = sorted({row["name"] for _, row in _rows(path) if row["name"].startswith("other")})
    assert fallback == []


@pytest.mark.parametrize("args, want", [
    (("layer", "self_attn", "_softmax.default", "_softmax.default @ model.layers.0.self_attn", "a*b*s*s"),
     "attention probabilities (softmax)"),
    (("layer", "input_layernorm", "rsqrt.default", "rsqrt.default @ model.layers.0.input_layernorm", "b*s"),
     "norm statistics (rsqrt)"),
    (("layer", "input_layernorm", "mul.Tensor", "mul.Tensor @ model.layers.0.self_attn.q_proj", "b*s*h"),
     "attention input (norm output)"),
    (("layer", "post_attention_layernorm", "mul.Tensor", "mul.Tensor @ model.layers.0.mlp.gate_proj", "b*s*h"),
     "MLP input (norm output)"),
    (("layer", "mlp.gate_proj", "mm.default", "_unsafe_view.default @ model.layers.0.mlp.act_fn", "b*s*f"),
     "gate output (activation input)"),
    (("layer", "mlp.act_fn", "silu.default", "_unsafe_view.default @ model.layers.0.mlp", "b*s*f"),
     "activation output"),
    (("layer", "mlp", "mul.Tensor", "mul.Tensor @ model.layers.0.mlp.down_proj", "b*s*f"), "MLP down input"),
    (("layer", "self_attn", "clone.default", "clone.default @ model.layers.0.self_attn.o_proj", "b*s*q"),
     "attention output (o_proj input)"),
    (("head", "", "_log_softmax.default", "_log_softmax.default @ ", "b*s*V"), "fp32 log-softmax (loss)"),
    (("forward_only", "lm_head", "mm.default", "", "b*s*V"), "logits"),
    (("layer", "mlp.gate", "_softmax.default", "_softmax.default @ model.layers.0.mlp.gate", "b*s*E"),
     "MoE router probabilities"),
    (("layer", "some.thing_new", "foo.default", "", "b*s*h"), "other (thing_new)"),
])
def test_row_name_table(args, want):
    assert row_name(*args) == want


def test_dropout_masks_and_roles():
    assert row_name("layer", "attn", "native_dropout.default", "native_dropout.default @ transformer.h.0.attn",
                    "a*b*s*s", floating=False, tags=frozenset({"dropout"})) == "attention dropout mask"
    assert row_name("layer", "mlp.dropout", "native_dropout.default", "", "b*s*h", floating=False,
                    tags=frozenset({"dropout"})) == "dropout mask"
    assert (role("attn.c_proj"), role("mlp.c_proj"), role("intermediate.dense"), role("output.dense"),
            role("attention.output.dense")) == ("o", "down", "up", "down", "o")


def _estimate(*args: str) -> str:
    res = CliRunner().invoke(cli, ["estimate", *args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("model", ["qwen2.5-7b", "llama-3.1-8b", "gpt2", "mixtral-8x7b"])
def test_the_table_reads(model):
    out = _estimate(model, "--gpu", "h100-sxm", "--seq", "4096")
    table = out.split("timeline of the step")[0]
    assert not re.search(r"\de-\d", out), "no scientific notation"
    acts = table.split("activations (saved for backward):")[1].split("temporaries:")[0]
    assert not ATEN.search(acts), acts
    assert not re.search(r"^\[\d+\]", out, re.M), "no footnotes by default"


def test_verbose_lists_sources_and_the_traced_ops():
    out = _estimate("qwen2.5-7b", "--gpu", "h100-sxm", "--seq", "4096", "--verbose")
    assert "sources:" in out and re.search(r"^\[1\] ", out, re.M)
    assert "activation rows, as traced" in out and "saved by" in out
    assert "other, " not in out  # nothing grouped


def test_json_keeps_the_detail_and_the_units_option_works():
    res = CliRunner().invoke(cli, ["estimate", "qwen2.5-7b", "--seq", "4096", "--json"])
    est = json.loads(res.output)
    acts = [c for c in est["components"] if c["category"] == "activations"]
    assert acts and all(c["detail"] for c in acts) and all(not ATEN.search(c["name"]) for c in acts)
    out = _estimate("qwen2.5-7b", "--gpu", "h100-sxm", "--seq", "4096", "--units", "GB")
    assert "size (GB)" in out and " GiB" not in out.split("timeline")[0].split("component")[1]


def test_setup_reading_is_a_short_table(tmp_path):
    ds = tmp_path / "ds_config.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2},
                              "bf16": {"enabled": True}, "steps_per_print": 10, "wall_clock_breakdown": False}))
    res = CliRunner().invoke(cli, ["estimate", "qwen2.5-7b", "--setup", str(ds), "--seq", "1024"])
    assert res.exit_code == 0, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    reading = err.split("\n\n")[0] if "ignored" in err else err
    assert re.search(r"^memplan:\s+zero\s+2\s+zero_optimization\.stage$", reading, re.M)
    assert "ignored 2 key(s) (--verbose lists them)" in reading
    assert all(len(line) <= 120 for line in reading.splitlines() if "setup file" not in line)
    if hasattr(res, "stderr"):  # every stderr line is memplan's own (the fuzz suite's invariant)
        assert all(line.startswith("memplan") for line in res.stderr.strip().splitlines())
    res = CliRunner().invoke(cli, ["estimate", "qwen2.5-7b", "--setup", str(ds), "--seq", "1024", "-v"])
    assert "steps_per_print (logging)" in res.output
