"""The time model against published, measured runs, at the default efficiencies (no per-row tuning).

Megatron-LM 2021 Table 1 (10 TFLOP/s per GPU) and Korthikanti et al. 2022 Table 5 (8 iteration times): the setups
are in tests/published_runs.py with their sources.  profiles/efficiency/a100.json's two in-training scales were
calibrated on the 9 rows in published_runs.CALIBRATION; the other 9 are held out and asserted on their own.
BLOOM-176B is held out entirely.  The planner, given each paper's constraints (its recompute choice and its
engine's capabilities), is asked where the paper's layout ranks.
"""
from __future__ import annotations

import pytest

from memplan.catalog import get_gpu
from memplan.perf.plan import plan
from memplan.answers.time import estimate_time
from memplan.setups import training_setup
from tests.published_runs import (BLOOM, CALIBRATION, HELD_OUT, MEGATRON_2021, PUBLISHED, SEQ,
                                  error_percent, megatron_gpt, predict, predict_bloom, setup_of)

A100 = get_gpu("a100-80gb")


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    return {r.name: error_percent(r, predict(r)[0]) for r in PUBLISHED}


def _stats(errs: list[float]) -> tuple[float, float]:
    a = [abs(e) for e in errs]
    return sum(a) / len(a), max(a)


def test_the_18_published_values_at_default_efficiencies(errors):
    mean, worst = _stats(list(errors.values()))
    assert len(errors) == 18
    assert mean <= 5.0, errors
    assert worst <= 10.0, errors


def test_the_held_out_half_on_its_own(errors):
    # the 9 values the calibration never saw: 3.6B, 18.4B, 76.1B, 310.1B, 1T of Table 1 and all four SP +
    # selective-recompute runs of Table 5
    assert set(HELD_OUT) | set(CALIBRATION) == set(errors) and not set(HELD_OUT) & set(CALIBRATION)
    mean, worst = _stats([errors[n] for n in HELD_OUT])
    assert mean <= 5.0 and worst <= 10.0, {n: errors[n] for n in HELD_OUT}


@pytest.mark.parametrize("table", ["megatron2021-t1", "korthikanti2022-t5"])
def test_each_table_on_its_own(errors, table):
    mean, worst = _stats([errors[r.name] for r in PUBLISHED if r.table == table])
    assert mean <= 5.0 and worst <= 10.0


def test_eq3_is_what_the_megatron_rows_count():
    # Narayanan et al. 2021 eq. 3 (hardware FLOPs, recompute included): the TFLOP/s compared is the estimate's own
    from memplan.perf.flops import megatron_flops_per_iteration

    r = MEGATRON_2021[6]
    value, est = predict(r)
    eq3 = megatron_flops_per_iteration(r.global_batch, SEQ, r.layers, r.hidden, 51200)
    assert value == pytest.approx(eq3 / est.step_seconds / r.gpus / 1e12, rel=1e-9)


def test_flash_attention_would_be_wrong_for_these_runs():
    # The 2021/2022 code materialised the s x s scores (no FlashAttention yet): the same walk with a flash kernel
    # is far too fast on the small models, where the scores dominate (1.7B: ~40% of the step is the core).
    r = MEGATRON_2021[0]
    eager = predict(r)[0]
    flash = estimate_time(setup_of(r).model_copy(update={"workload": setup_of(r).workload.model_copy(
        update={"attention": "flash"})}), A100, steps=1, execution=r.execution, with_memory=False)
    assert flash.achieved_tflops_per_gpu > 1.25 * eager
    assert abs(error_percent(r, flash.achieved_tflops_per_gpu)) > 25


def test_bloom_176b_held_out():
    # 104.70 s per iteration (tr11-176B-ml README, iteration 85376).  Predicted ~11% fast; not modelled: the
    # launcher's CUDA_LAUNCH_BLOCKING=1, DeepSpeed's pipeline-engine overheads, Omni-Path's real efficiency.
    seconds, est = predict_bloom()
    err = error_percent(BLOOM, seconds)
    assert -15.0 < err < 0.0, err
    assert est.walk.stages[0].layers == 5 and est.walk.stages[-1].layers == 5  # [embed|5], 6 x 10, [5|embed]


def test_gpt3_175b_at_an_achieved_140_tflops_is_34_days():
    # Narayanan et al. 2021 sec. 5.1: 300B tokens, 1024 A100s, batch 1536, 140 TFLOP/s per GPU measured end to
    # end: "about 34 days".  Eq. 3's hardware FLOPs / 140 TFLOP/s = 31.47 s per step x 95,368 steps = 34.7 days.
    setup = training_setup("gpt3-175b", gpus=1024, tp=8, pp=8, recompute="full", seq=2048)
    est = estimate_time(setup, A100, tokens=300e9, global_batch=1536, achieved_tflops=140, with_memory=False)
    assert 32 <= est.days <= 36
    assert est.achieved_tflops_per_gpu == pytest.approx(140.0)
    assert est.step_seconds == pytest.approx(est.hardware_flops_per_token * 1536 * 2048 / 1024 / 140e12)
    assert est.predicted_step_seconds > 0 and "op walk" in est.assumptions[0]


# ---- the planner on the paper's rows -----------------------------------------------------------------------------
# Rows with >= 64 GPUs.  Where the walk ranks another tp/pp above the paper's, the reason is the same: the 2021
# code's tensor-parallel all-reduces are blocking (16% of the 18.4B step at tp 8), so smaller TP with an
# interleaved pipeline comes out faster; the paper did not measure those layouts for these rows.
DISAGREE = {"7.5B", "18.4B", "39.1B", "175B full recompute"}
PLAN_ROWS = [r for r in PUBLISHED if r.gpus >= 64]


@pytest.mark.parametrize("r", [pytest.param(r, id=r.name, marks=pytest.mark.xfail(
    strict=True, reason="the walk prefers smaller TP with interleaving (blocking TP all-reduces of the 2021 code)"))
    if r.name in DISAGREE else pytest.param(r, id=r.name) for r in PLAN_ROWS])
def test_plan_finds_the_papers_tp_and_pp(r):
    res = _plan_row(r)
    assert (r.tp, r.pp) in [(c.layout.tp, c.layout.pp) for c in res.candidates[:5]]


@pytest.mark.parametrize("r", PLAN_ROWS[3::4], ids=lambda r: r.name)
def test_plan_explains_the_rank_of_the_papers_layout(r):
    res = _plan_row(r)
    ref = res.reference
    assert ref is not None and ref.layout.tp == r.tp and ref.layout.pp == r.pp
    assert ref.layout.virtual_stages == r.virtual and ref.layout.micro_batch == r.micro_batch
    assert res.reference_rank >= 1 and ref.fits
    faster = [c for c in res.candidates if c.step_seconds < ref.step_seconds]
    assert res.reference_rank >= len(faster) + 1
    line = next(w for w in res.why if w.startswith("reference vs the best") or "planner's best" in w)
    assert "s" in line and (res.reference_rank == 1 or "%" in line)


def _plan_row(r):
    cached = _PLANS.get(r.name)
    if cached is None:
        model = megatron_gpt(r.layers, r.hidden, r.heads)
        base = training_setup(model, gpus=r.gpus, engine="megatron", precision="fp16-mixed", attention="eager",
                              implementation="megatron", seq=SEQ)
        cached = plan(base, A100, global_batch=r.global_batch, top=5, tokens=1e11, execution=r.execution,
                      fixed={"recompute": r.recompute, "sequence_parallel": r.sp}, reference=setup_of(r).layout)
        _PLANS[r.name] = cached
    return cached


_PLANS: dict = {}


# ---- at scale on H100 (issue 22) -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scale_errors() -> dict[str, float]:
    from tests.published_runs import H100_RUNS

    return {r.name: r.error_percent(r.predict()[0]) for r in H100_RUNS}


def test_the_h100_runs_are_priced_not_refused(scale_errors):
    # Llama 3's 126 layers on pp 16 x v 8 and DeepSeek-V3's 61 on pp 4 x v 8 do not divide: interleaving over
    # uneven layers (Megatron's --account-for-embedding/loss-in-pipeline-split, --pipeline-model-parallel-layout)
    from tests.published_runs import H100_RUNS

    assert len(scale_errors) == len(H100_RUNS) == 7


def test_the_h100_runs_at_default_efficiencies(scale_errors):
    # Held out entirely (no profile number was fitted on them).  Where it stands (docs/time-and-plan.md has the
    # table): Llama 3 405B ~23-32% fast (the interleaving depth is not stated; hopper.json's in-training scales are
    # transferred from A100), DeepSeek-V3 +14% / -4% (DeepEP's dispatch priced, its overlap not; the two rows
    # disagree with each other by 16% per micro-batch), Qwen3-30B-A3B ~9% fast, DeepSeek-V3 on 2,048 H800 with its
    # all-to-all overlapped (DualPipe) ~8% slow.
    mean, worst = _stats(list(scale_errors.values()))
    assert mean <= 20.0 and worst <= 35.0, scale_errors


@pytest.mark.xfail(strict=True, reason="issue 22's goal (mean |error| <= 5%, max <= 15% on published H100 runs) is "
                                       "not met yet: 16.1% mean, 32.3% max (docs/time-and-plan.md)")
def test_the_h100_runs_meet_the_issue_goal(scale_errors):
    mean, worst = _stats(list(scale_errors.values()))
    assert mean <= 5.0 and worst <= 15.0, scale_errors
