"""Capacity planning (`memplan serve`, `memplan.serve`): published serving benchmarks replayed at their concurrency,
the search, the inputs it refuses, and the API/CLI agreement.

The step model's efficiencies (memplan/perf/serving_time.py Efficiency) were fitted on the CALIBRATION rows only
(one sweep, one GPU); every HELD_OUT row is a prediction.  A held-out row outside 15% is kept, marked as a known
miss (strict xfail: if it starts passing, the table and docs/finetune-and-serve.md must be updated).
"""
from __future__ import annotations

import inspect
import json
import math

import click
import pytest
from click.testing import CliRunner

import memplan
from memplan import keywords as kw
from memplan.cli.group import cli
from memplan.errors import InputError

MUSHFIQ = ("https://mushfiqrahman.dev/benchmarking-mistral-7b-on-rtx-4090-vllm-concurrency-latency-and-capacity-"
           "planning/")
MUSGRAVE = "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on"
ACHATBOT = "https://github.com/ai-bot-pro/achatbot/pull/183"
NIM = "https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance.md"

# (id, source, model, gpu, engine, tp, concurrency, prompt, output, measured output tokens/s, note)
CALIBRATION = [
    ("4090-mistral-c4", MUSHFIQ, "mistral-7b", "rtx-4090", "vllm", 1, 4, 256, 128, 210, ""),
    ("4090-mistral-c8", MUSHFIQ, "mistral-7b", "rtx-4090", "vllm", 1, 8, 256, 128, 377, ""),
    ("4090-mistral-c16", MUSHFIQ, "mistral-7b", "rtx-4090", "vllm", 1, 16, 256, 128, 644, ""),
    ("4090-mistral-c32", MUSHFIQ, "mistral-7b", "rtx-4090", "vllm", 1, 32, 256, 128, 975, ""),
    ("4090-mistral-c48", MUSHFIQ, "mistral-7b", "rtx-4090", "vllm", 1, 48, 256, 128, 1190, ""),
]
HELD_OUT = [
    # "decode at one request per time runs at about 75 tokens/sec": 128 / (TTFT ~0.06 s + 127 / 75) = 73 tok/s
    ("a100-llama8b-c1", MUSGRAVE, "llama-3.1-8b", "a100-40gb", "vllm", 1, 1, 1024, 128, 73, "vLLM 0.23"),
    # "a 6.6x gain ... up to a concurrency of 8": 6.6 x 73 (derived from the post's ratio, not a printed figure)
    ("a100-llama8b-c8", MUSGRAVE, "llama-3.1-8b", "a100-40gb", "vllm", 1, 8, 1024, 128, 482, "vLLM 0.23"),
    # sglang.bench_serving, 160 prompts at --max-concurrency 32: 81,920 input / 163,840 output tokens
    ("h100-gptoss20b-c32-sglang", ACHATBOT, "gpt-oss-20b", "h100-sxm", "sglang", 1, 32, 512, 1024, 2765.4,
     "SGLang on Modal"),
    # NVIDIA NIM 1.8 (its own engine, not vLLM/SGLang: a reference for the physics, replayed as vLLM), FP8, TP2
    *[(f"h100x2-llama70b-fp8-c{c}-nim", NIM, "llama-3.3-70b", "h100-sxm", "vllm", 2, c, 5000, 500, m, "NIM 1.8")
      for c, m in ((1, 51.67), (5, 218.48), (25, 623.4), (50, 814.37))],
]
# held-out rows the model misses by more than 15% (prediction / measured - 1 when recorded) and why it may
KNOWN_MISS = {
    "a100-llama8b-c8": "-15%: prefill of the 1,024-token prompts counted fully serial to decode's memory time",
    "h100x2-llama70b-fp8-c1-nim": "+23%: NIM's ITL at one request is 18.6 ms, the step model's 15.8 ms",
    "h100-gptoss20b-c32-sglang": "+72%: measured mean TTFT 3.7 s of an 11.8 s request (cold start on Modal?) and "
                                 "the MXFP4 MoE kernel's efficiency on Hopper, neither of which the roofline knows",
}


def predicted(row) -> float:
    _, _, model, gpu, engine, tp, c, p, o, _, note = row
    extra = {"quantization": "fp8"} if "NIM" in note else {}
    plan = memplan.serve(model, gpu, engine=engine, tp=tp, concurrency=c, prompt=p, output=o, **extra)
    return (plan.best or plan.closest).output_tokens_per_s


@pytest.mark.parametrize("row", CALIBRATION, ids=[r[0] for r in CALIBRATION])
def test_calibration_sweep_within_15_percent(row):
    assert abs(predicted(row) / row[9] - 1) <= 0.15


@pytest.mark.parametrize("row", [pytest.param(r, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISS[r[0]]))
                                 if r[0] in KNOWN_MISS else r for r in HELD_OUT], ids=[r[0] for r in HELD_OUT])
def test_held_out_benchmarks_within_15_percent(row):
    assert abs(predicted(row) / row[9] - 1) <= 0.15


def test_the_fitted_efficiencies_are_the_defaults_and_printed():
    from memplan.perf.serving_time import Efficiency

    e = Efficiency()
    assert (e.bandwidth, e.compute, e.overhead_s, e.serial) == (0.85, 0.60, 0.001, 1.0)
    plan = memplan.serve("llama-3.1-8b", "h100-sxm", rate=5, prompt=512, output=128, tp=1, max_num_seqs=256,
                         max_num_batched_tokens=2048)
    assert any("85% of peak memory bandwidth" in a for a in plan.assumptions)
    assert plan.unknowns and all(isinstance(u, str) for u in plan.unknowns)


# ---- the search -------------------------------------------------------------------------------------------------
def test_more_load_needs_more_gpus_and_the_best_meets_the_targets():
    small = memplan.serve("llama-3.1-8b", "h100-sxm", rate=2, prompt=1024, output=256, ttft_ms=1000, tpot_ms=50,
                          mode="aggregated", tp=1)
    big = memplan.serve("llama-3.1-8b", "h100-sxm", rate=80, prompt=1024, output=256, ttft_ms=1000, tpot_ms=50,
                        mode="aggregated", tp=1)
    assert small.meets_targets and big.meets_targets
    assert big.best.gpus > small.best.gpus
    b = big.best
    assert b.ttft_ms_p90 <= 1000 and b.tpot_ms_p90 <= 50
    assert math.isclose(b.output_tokens_per_s, 80 * 256, rel_tol=1e-6)


def test_no_layout_meets_is_a_result_with_the_closest():
    plan = memplan.serve("llama-3.3-70b", "l4", rate=1, prompt=1000, output=100, tpot_ms=2)
    assert plan.meets_targets is False and plan.best is None
    assert plan.closest is not None and "TPOT" in plan.why
    assert "NO LAYOUT MEETS THE TARGETS" in plan.table()


def test_pareto_rows_are_not_dominated():
    plan = memplan.serve("llama-3.1-8b", "h100-sxm", rate=10, prompt=1024, output=256, tp=2)
    rows = plan.pareto
    assert rows

    def key(r):
        return (-r.output_tokens_per_s_per_gpu, r.tpot_ms_p90, r.ttft_ms_p90)

    for r in rows:
        for o in rows:
            if o is not r:
                assert not all(a < b for a, b in zip(key(o), key(r)))


def test_disaggregated_gives_the_pd_ratio():
    plan = memplan.serve("llama-3.1-8b", "h100-sxm", rate=20, prompt=4096, output=256, ttft_ms=2000, tpot_ms=30,
                         mode="disaggregated", tp=2, max_num_seqs=256, max_num_batched_tokens=8192)
    r = plan.best or plan.closest
    assert r.mode == "disaggregated" and r.prefill_replicas >= 1
    p, d = map(int, r.pd_ratio.split(":"))
    assert p == r.prefill_replicas * r.prefill_tp and d == r.replicas * r.tp and r.gpus == p + d


def test_speculative_decoding_lowers_tpot_and_a_draft_costs_kv():
    base = dict(rate=4, prompt=1024, output=512, tp=1, max_num_seqs=256, max_num_batched_tokens=2048,
                mode="aggregated")
    plain = memplan.serve("llama-3.1-8b", "h100-sxm", **base)
    ngram = memplan.serve("llama-3.1-8b", "h100-sxm", num_speculative_tokens=3, acceptance_rate=0.7, **base)
    draft = memplan.serve("llama-3.1-8b", "h100-sxm", draft="qwen3-0.6b", num_speculative_tokens=3,
                          acceptance_rate=0.7, **base)
    row = lambda p: min(p.pareto, key=lambda r: r.gpus)  # noqa: E731
    assert ngram.speculation.tokens_per_step == pytest.approx((1 - 0.7 ** 4) / 0.3)
    assert row(ngram).tpot_ms_p50 < row(plain).tpot_ms_p50
    assert row(draft).tpot_ms_p50 > row(ngram).tpot_ms_p50  # the draft's own steps
    assert row(draft).kv_sequences < row(plain).kv_sequences  # its weights and KV come out of the pool
    assert draft.speculation.draft_weights_per_gpu > 0


def test_prefix_cache_hits_cut_ttft():
    base = dict(rate=5, prompt=8192, output=128, tp=1, max_num_seqs=128, max_num_batched_tokens=2048,
                mode="aggregated")
    cold = memplan.serve("llama-3.1-8b", "h100-sxm", **base)
    warm = memplan.serve("llama-3.1-8b", "h100-sxm", prefix_hit_rate=0.75, **base)
    c, w = (min(p.pareto, key=lambda r: r.gpus) for p in (cold, warm))
    assert w.ttft_ms_p50 < c.ttft_ms_p50


def test_distribution_and_trace(tmp_path):
    dist = memplan.serve("llama-3.1-8b", "h100-sxm", rate=5, prompt=512, prompt_p90=2048, output=128,
                         output_p90=512, tp=1, mode="aggregated")
    assert dist.load.longest == 2560 and dist.load.source == "mean and p90 lengths"
    trace = tmp_path / "trace.csv"
    trace.write_text("prompt_tokens,output_tokens,arrival_s\n" + "".join(
        f"{100 + 10 * i},{50 + i},{0.5 * i}\n" for i in range(21)))
    plan = memplan.serve("llama-3.1-8b", "h100-sxm", trace=str(trace), tp=1, mode="aggregated")
    assert plan.load.rate == pytest.approx(2.0) and plan.load.prompt_mean == pytest.approx(200)
    jl = tmp_path / "trace.jsonl"
    jl.write_text("\n".join(json.dumps({"prompt_tokens": 300, "output_tokens": 30}) for _ in range(5)))
    assert memplan.serve("llama-3.1-8b", "h100-sxm", trace=str(jl), rate=3, tp=1).load.prompt_p90 == 300


# ---- bad input: one line, exit 2 ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--rate", "0"], "--rate"),
    (["--rate", "1", "--max-model-len", "512"], "--max-model-len is 512"),
    (["--rate", "1", "--concurrency", "4"], "--concurrency"),
    ([], "--rate is needed"),
    (["--rate", "1", "--prompt-p90", "10"], "--prompt-p90 must be at least"),
    (["--rate", "1", "--acceptance-rate", "0.5"], "--num-speculative-tokens"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "memplan", "serve", "llama-3.1-8b", "-g", "h100-sxm", "--prompt",
                          "1000", "--output", "100", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


def test_lengths_beyond_the_model_and_api_errors_name_keywords():
    with pytest.raises(InputError, match="positions"):
        memplan.serve("llama-3.1-8b", "h100-sxm", rate=1, prompt=200_000, output=10)
    with pytest.raises(InputError, match="^max_model_len is 512"):
        memplan.serve("llama-3.1-8b", "h100-sxm", rate=1, prompt=1000, output=100, max_model_len=512)
    with pytest.raises(InputError, match="rate must be"):
        memplan.serve("llama-3.1-8b", "h100-sxm", rate=0, prompt=1, output=1)


# ---- the CLI and the API agree --------------------------------------------------------------------------------
def test_api_keywords_are_the_serve_flags_with_the_same_bounds():
    cmd = cli.get_command(click.Context(cli), "serve")
    flags = {}
    for p in cmd.params:
        name = p.name if isinstance(p, click.Argument) else \
            next(o for o in p.opts if o.startswith("--"))[2:].replace("-", "_")
        flags[name] = p
    api = set(inspect.signature(memplan.serve).parameters)
    assert api == set(flags) - {"plot", "force", "json"}
    from memplan.cli.types import BoundedInt

    for name in api & set(flags):
        t = flags[name].type
        if isinstance(t, BoundedInt):
            field = kw.field_of("serve", name)
            lo = next(m.ge for m in field.metadata if getattr(m, "ge", None) is not None)
            hi = next(m.le for m in field.metadata if getattr(m, "le", None) is not None)
            assert (t.minimum, t.maximum) == (lo, hi), name
        elif isinstance(t, click.Choice):
            import typing

            assert set(map(str, typing.get_args(kw._non_none(kw.field_of("serve", name).annotation)))) == \
                set(t.choices), name


def test_cli_prints_the_table_json_and_plot(tmp_path):
    runner = CliRunner()
    args = ["serve", "llama-3.1-8b", "-g", "h100-sxm", "--rate", "8", "--prompt", "1024", "--output", "256",
            "--tpot-ms", "40", "--ttft-ms", "800", "--tp", "1", "--mode", "aggregated"]
    out = runner.invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "Best: aggregated" in out.output and "Pareto" in out.output and "What this cannot know" in out.output
    js = runner.invoke(cli, args + ["--json"])
    data = json.loads(js.output)
    assert data["meets_targets"] is True and data["best"]["tp"] == 1
    pytest.importorskip("matplotlib")
    png = tmp_path / "pareto.png"
    res = runner.invoke(cli, args + ["--plot", str(png)])
    assert res.exit_code == 0 and png.stat().st_size > 0


def test_nothing_starts_is_a_result_naming_the_largest_tp_tried():
    plan = memplan.serve("llama-3.1-405b", "a100-40gb", rate=1, prompt=1000, output=100, max_gpus=4,
                         max_num_seqs=64, max_num_batched_tokens=2048)
    assert plan.best is None and plan.closest is None and "TP4" in plan.why
    assert "No layout" in plan.table()


def test_sglang_plans_with_its_own_token_pool_and_flag_names():
    plan = memplan.serve("qwen3-8b", "h100-sxm", engine="sglang", rate=10, prompt=2000, output=300, ttft_ms=800,
                         tpot_ms=30, tp=1, max_num_seqs=128, max_num_batched_tokens=4096, mode="aggregated")
    assert plan.engine == "sglang" and plan.meets_targets
    assert "--max-running-requests 128 --chunked-prefill-size 4096" in plan.table()


def test_a_replica_gets_slower_with_load_and_saturates():
    from memplan.perf.batching import Load, aggregated
    from memplan.perf.serving_time import step_cost
    from memplan.answers.inference import estimate_inference
    from memplan.setups import resolve_gpu, serving_setup

    gpu = resolve_gpu("h100-sxm")
    setup = serving_setup("llama-3.1-8b", prompt=1024, output=256, max_num_seqs=256, max_num_batched_tokens=2048)
    est = estimate_inference(setup, gpu, max_batch=True)
    cost = step_cost(setup, gpu, est.weights, est.kv_layers)
    load = Load(1024, 256, 1024, 256)
    # batch 1 decode is the weights over the achieved bandwidth plus the step overhead
    one = cost.step(1, 1152)
    assert one == pytest.approx(est.weights.total / (gpu.memory_bandwidth_gbps * 1e9 * 0.85) + 0.001, rel=0.05)
    states = [aggregated(cost, load, r, 256, 2048, est.vllm.concurrency_at_context) for r in (1, 4, 8, 12)]
    stable = [s for s in states if s.stable]
    assert len(stable) >= 2
    for a, b in zip(stable, stable[1:]):
        assert b.tpot_p50 >= a.tpot_p50 and b.ttft_p50 >= a.ttft_p50 and b.running > a.running
    assert not aggregated(cost, load, 1000, 256, 2048, est.vllm.concurrency_at_context).stable


def test_the_best_layout_says_what_a_replica_holds_and_how_much_is_used():
    """The text names the seats (max_num_seqs, fewer when the KV cache holds fewer sequences of the mean context)
    and the share in use; it printed '41.2 sequences decoding per replica of 772.0 the KV holds; utilisation 8%'."""
    from memplan.report.capacity import capacity_table

    for rate, prompt in ((20, 1024), (200, 4096)):
        plan = memplan.serve("llama-3.1-8b", gpu="h100-sxm", rate=rate, prompt=prompt, output=256)
        best = plan.best
        seats = min(best.max_num_seqs, best.kv_sequences)
        text = capacity_table(plan)
        assert f"{seats:,.0f} seats per replica (max_num_seqs {best.max_num_seqs}; the KV cache holds " \
               f"{best.kv_sequences:,.0f} sequences of the mean context), {best.running / seats:.0%} in use" in text
        assert "utilisation" not in text and "the KV holds" not in text
