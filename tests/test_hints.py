"""A DOES NOT FIT names a change that fits: applying the hint's flags gives an estimate that fits."""
from __future__ import annotations

import shlex

import pytest

import memplan
from memplan.setups import training_setup
from tests.helpers import run_cli


def _apply(change: str) -> dict:
    words = shlex.split(change)
    out, i = {}, 0
    while i < len(words):
        key = words[i].lstrip("-").replace("-", "_")
        out[key] = int(words[i + 1]) if words[i + 1].isdigit() else words[i + 1]
        i += 2
    return out


@pytest.mark.parametrize("model,kw", [
    ("llama-2-7b", dict(gpus=8, seq=4096, micro_batch=16)),
    ("llama-2-70b", dict(gpus=16, seq=4096)),
    ("mixtral-8x7b", dict(gpus=8, seq=8192, micro_batch=2)),
])
def test_the_hint_fits_when_applied(model, kw):
    est = memplan.estimate(model, gpu="a100-80gb", **kw)
    assert est.fits is False and est.hint
    change = est.hint.split(" (")[0]
    fixed = memplan.estimate(model, gpu="a100-80gb", **{**kw, **_apply(change)})
    assert fixed.fits


def test_cli_says_what_would_fit(capsys):
    code, out, _ = run_cli(capsys, "estimate", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "8", "--seq", "4096",
                           "-b", "16")
    assert code == 0 and "DOES NOT FIT" in out and "would fit with: --" in out


def test_max_micro_batch_zero_says_what_alone_exceeds_the_gpu():
    est = memplan.estimate("llama-2-7b", gpu="a100-80gb", seq=4096, max_micro_batch=True)
    assert est.max_micro_batch == 0
    assert any("model states alone" in n and "exceed" in n for n in est.notes)
    training_setup("llama-2-7b")  # the builder itself is fine
