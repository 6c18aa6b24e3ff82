"""The Python API: the same objects the CLI prints, every docstring example runs, unknown keywords are refused."""
from __future__ import annotations

import doctest
import json

import pytest

import memplan
from memplan.errors import MemplanError
from tests.helpers import cli_json


def test_every_docstring_example_runs():
    import memplan.api

    result = doctest.testmod(memplan.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("name", ["estimate", "estimate_inference", "compare", "time", "plan", "profile",
                                  "build_setup"])
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
