"""Every byte field of a LoRA/QLoRA estimate is >= 0 (issue 13, item 6), and the breakdown still adds up.

What a frozen base does not save (memory/lora.py `lora_activation_adjustment`) comes off the rows that hold it
(implementation-profile rows name what they hold: `holds`), instead of negative "not saved" rows; the saved rows
then add up to per_gpu.saved_activations exactly, for the hand-written hf and megatron profiles alike (a traced
profile without `holds` says in a note what no row shows).  The totals themselves are pinned by the measured LoRA
steps of tests/test_lora.py.
"""
from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

CASES = [
    ["llama-2-7b", "--lora-rank", "16"],
    ["llama-2-7b", "--lora-rank", "64", "--quantize-base", "nf4"],
    ["llama-2-7b", "--lora-rank", "16", "--recompute", "selective"],
    ["llama-2-7b", "--lora-rank", "16", "--attention", "eager", "--lora-targets", "o_proj"],
    ["llama-2-7b", "--lora-rank", "16", "--pp", "2", "-n", "2", "--grad-accum", "8"],
    # Megatron's fused norm keeps no normalised x: nothing of it can come off
    ["llama-2-7b", "--lora-rank", "16", "--implementation", "megatron"],
    # parallel residual: attention and MLP read one norm output, saved once and dropped once
    ["falcon-7b", "--lora-rank", "64", "--lora-targets", "o", "--quantize-base", "int8"],
    ["gpt2", "--lora-rank", "8"],
    ["bert-base", "--lora-rank", "8"],
    ["gemma-2-9b", "--lora-rank", "16", "--lora-targets", "all-linear"],
    ["qwen3-0.6b", "--lora-rank", "8", "-b", "4"],
]


# the hand-written profiles (the hf family's traced profile, profiles/implementations/hf-<family>.json, is the default
# when there is one; the alias `transformers` names profiles/implementations/hf.json itself)
HAND_WRITTEN = ["--implementation", "transformers"]


def _hand_written(args):
    return args if "--implementation" in args else [*args, *HAND_WRITTEN]


def _estimate(capsys, args):
    code, out, err = run_cli(capsys, "estimate", *args, "--gpu", "a100-80gb", "--json")
    assert code == 0, err
    return json.loads(out)


def _byte_fields(estimate: dict):
    for i, c in enumerate(estimate["components"]):
        yield f"components[{i}] {c.get('name', '')}", c["bytes"]
    for k, v in estimate["per_gpu"].items():
        if isinstance(v, int):
            yield f"per_gpu.{k}", v
    for phase in estimate.get("timeline", []):
        for k, v in phase["bytes"].items():
            yield f"timeline[{phase['name']}].{k}", v


@pytest.mark.parametrize("profile", ["default", "hand-written"])
@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_no_byte_field_of_a_lora_estimate_is_negative(capsys, args, profile):
    est = _estimate(capsys, args if profile == "default" else _hand_written(args))
    negative = [(name, v) for name, v in _byte_fields(est) if v < 0]
    assert negative == []


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_the_saved_rows_add_up_to_the_saved_activations(capsys, args):
    est = _estimate(capsys, _hand_written(args))
    saved_rows = [c for c in est["components"] if c["category"] == "activations"
                  and c["name"].split(":")[0].split(" [")[0] in ("layer", "embedding", "head")]
    assert sum(c["bytes"] for c in saved_rows) == est["per_gpu"]["saved_activations"]
    assert not any("in no row above" in n for n in est["notes"])


def test_a_reduced_row_says_what_was_not_saved(capsys):
    rows = {c["name"]: c for c in _estimate(capsys, ["llama-2-7b", "--lora-rank", "16", *HAND_WRITTEN])["components"]}
    full = {c["name"]: c for c in _estimate(capsys, ["llama-2-7b", *HAND_WRITTEN])["components"]}
    # q,v adapted: the shared attention-norm output stays, the MLP-norm output goes (PEFT's default targets)
    norm_out = "layer: norm outputs (inputs of the QKV and MLP linears)"
    assert rows[norm_out]["bytes"] * 2 == full[norm_out]["bytes"]
    assert "LoRA: 32.0 MiB per layer not saved" in rows[norm_out]["note"]
    gated = "layer: gated product (down_proj input)"
    assert rows[gated]["bytes"] == 0 and "down_proj" in rows[gated]["note"]
    assert rows["head: final norm output (LM head input)"]["bytes"] == 0
    assert not any("not saved" in name for name in rows)  # no row of its own, negative or not


def test_megatron_rows_never_lose_what_they_never_kept(capsys):
    """Megatron's profile has no normalised-x row (its fused norm saves the input and statistics): LoRA takes off the
    same as under the hf profile except the RMSNorm's normalised x of every layer (2 norms x h per token, bf16) and of
    the final norm (h per token), and layer 0's rsqrt (4 B per token), which no Megatron row holds."""
    def lora_saves_less(implementation):  # "transformers": hf.json, the hand-written hf profile
        base = ["llama-2-7b", "--implementation", implementation]
        return (_estimate(capsys, base)["per_gpu"]["saved_activations"]
                - _estimate(capsys, [*base, "--lora-rank", "16"])["per_gpu"]["saved_activations"])

    tokens, h, layers = 4096, 4096, 32
    assert lora_saves_less("transformers") - lora_saves_less("megatron") == \
        layers * tokens * 2 * h * 2 + tokens * h * 2 + tokens * 4
