"""API types (issue 18): every keyword of memplan.estimate / estimate_inference / time / plan given a wrong type or
an odd value (inf, nan, -1, 0, a string, a list, True, 10^30, an object) either answers or raises MemplanError --
never TypeError, ValueError, ZeroDivisionError, OverflowError, pydantic's ValidationError or a loop.

Seeded sampling of (function, keyword, value): MEMPLAN_FUZZ_CASES (default 120 here) and MEMPLAN_FUZZ_SEED as in
tests/test_fuzz.py; `MEMPLAN_FUZZ_CASES=3000 pytest tests/test_fuzz_api.py -q` is the long run.
"""
from __future__ import annotations

import math
import os
import random
import signal

import pytest

from memplan.errors import MemplanError

_seed = os.environ.get("MEMPLAN_FUZZ_SEED", "13")
SEED = random.SystemRandom().randrange(10**6) if _seed == "random" else int(_seed)
CASES = int(os.environ.get("MEMPLAN_FUZZ_CASES", "120")) // 2 or 1  # half the cases tests/test_fuzz.py runs


class _Opaque:
    def __repr__(self) -> str:
        return "<an object>"


ODD = [math.inf, -math.inf, math.nan, -1, 0, 1.5, 10**30, "x", "8", "", [], [1], {}, {"a": 1}, True, False, None,
       _Opaque(), b"8", 2**63, -(10**30), 1e-300]

TRAINING = ["gpus", "gpus_per_node", "tp", "pp", "cp", "ep", "etp", "zero", "micro_batch", "grad_accum", "seq",
            "recompute", "attention", "precision", "optimizer", "offload_optimizer", "offload_params", "engine",
            "layers", "hidden", "heads", "kv_heads", "vocab", "ffn", "lora_rank", "lora_targets", "quantize_base",
            "virtual_stages", "first_stage_layers", "sequence_parallel", "weights_dtype", "states_dtype"]
SERVING = ["batch", "context", "prompt", "output", "kv_cache_dtype", "quantization", "gpu_memory_utilization",
           "max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size", "enforce_eager", "vllm_version",
           "prefill_chunk", "tp", "pp", "gpus", "engine", "int4_group"]
TIME = ["tokens", "steps", "global_batch", "mfu", "achieved_tflops", "kernel_scale", "price", "cpu_bandwidth",
        "overlap", "execution", "interconnect", "causal_flops", "gpus", "tp", "micro_batch", "seq"]
PLAN = ["global_batch", "top", "max_gpus", "min_gpus", "scale", "max_micro_batch", "by", "steps", "tokens",
        "kernel_scale", "cpu_memory", "price", "gpus", "seq"]
FUNCTIONS = {  # name -> (positional arguments, base keywords, keywords to vary)
    "estimate": (("gpt2", "a100-80gb"), {}, TRAINING),
    "estimate_inference": (("gpt2", "a100-80gb"), {}, SERVING),
    "time": (("gpt2", "a100-80gb"), {"tokens": 1e9}, TIME),
    "plan": (("gpt2", "a100-80gb"), {"global_batch": 8, "gpus": 8}, PLAN),
}


def case(index: int) -> tuple[str, str, object]:
    rng = random.Random(f"api:{SEED}:{index}")
    fn = rng.choice(sorted(FUNCTIONS))
    keyword = rng.choice(FUNCTIONS[fn][2])
    return fn, keyword, rng.choice(ODD)


@pytest.mark.parametrize("index", range(CASES), ids=lambda i: f"api{i:04d}")
def test_a_wrong_type_for_a_keyword_is_an_answer_or_one_memplan_error(index):
    import memplan

    fn, keyword, value = case(index)
    args, base, _ = FUNCTIONS[fn]
    kw = {**base, keyword: value}
    if fn == "time" and keyword == "steps":
        kw.pop("tokens")
        kw.setdefault("global_batch", 8)

    def too_long(*_):
        raise TimeoutError(f"memplan.{fn}(..., {keyword}={value!r}) gave no answer within 30 s")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(30)
    try:
        getattr(memplan, fn)(*args, **kw)
    except MemplanError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 700, text
        assert "validation error" not in text and "Traceback" not in text, text
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_every_keyword_listed_is_one_the_api_takes():
    """The lists above stay the API's: an unknown keyword would only test the did-you-mean."""
    import memplan

    for fn, (args, base, keywords) in FUNCTIONS.items():
        for keyword in keywords:
            kw = {**base, keyword: None}
            try:
                getattr(memplan, fn)(*args, **kw)
            except MemplanError as exc:
                assert "did you mean" not in str(exc).lower() and "unknown" not in str(exc).lower(), (fn, exc)
