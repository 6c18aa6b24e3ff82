"""Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", arXiv 2205.05198),
reproduced exactly by `--implementation megatron` for GPT-3 175B (a=96, h=12288, s=2048, L=96; t=8, b=1).

Table 2 (activation bytes per transformer layer, 16-bit):
  no parallelism                 sbh (34 + 5as/h)
  tensor parallel (baseline)     sbh (10 + 24/t + 5as/(ht))
  tensor + sequence parallel     sbh (34/t + 5as/(ht))
  TP + selective recompute       sbh (10 + 24/t)
  TP + SP + selective recompute  sbh (34/t)
  full recompute                 sbh (2)
"""
from __future__ import annotations

import pytest

from memplan.catalog import resolve_model
from memplan.memory.activations import activations
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import Workload, get_recipe

A, H, S, L, T, B = 96, 12288, 2048, 96, 8, 1
SBH = S * B * H


def gpt3(tp=1, sp=False, recompute="none", pp=1, virtual=1, micro_batch=B, grad_accum=64) -> TrainingSetup:
    # grad_accum: micro-batches per step; the paper's pipelines run many more than p (their Table 3: 64+)
    return TrainingSetup(
        model=resolve_model("gpt3-175b"), recipe=get_recipe("fp16-mixed"),
        layout=Layout(gpus=tp * pp, tp=tp, pp=pp, sequence_parallel=sp, virtual_stages=virtual,
                      micro_batch=micro_batch, recompute=recompute, grad_accum=grad_accum),
        workload=Workload(seq=S, attention="eager", implementation="megatron"))


# Table 2 rows, multiplied out by hand in integers (sbh * (coefficient) with a*s/h = 16 for GPT-3 175B)
TABLE2 = [
    ("no parallelism", dict(), SBH * 34 + 5 * A * S * S * B),
    ("tensor parallel", dict(tp=T), SBH * 10 + SBH * 24 // T + 5 * A * S * S * B // T),
    ("tensor + sequence parallel", dict(tp=T, sp=True), SBH * 34 // T + 5 * A * S * S * B // T),
    ("TP + selective recompute", dict(tp=T, recompute="selective"), SBH * 10 + SBH * 24 // T),
    ("TP + SP + selective recompute", dict(tp=T, sp=True, recompute="selective"), SBH * 34 // T),
    ("full recompute", dict(tp=T, recompute="full"), 2 * SBH),
]


@pytest.mark.parametrize("label,kw,expected", TABLE2, ids=[r[0] for r in TABLE2])
def test_table2_per_layer_bytes_exactly(label, kw, expected):
    assert activations(gpt3(**kw)).layer == expected


def test_the_papers_stated_ratio_5as_over_h_is_80_for_gpt3():
    # Sec. 4.1: "for GPT-3 ... 5as/h = 80": the attention's s^2 terms are 80/34 of the rest
    no_tp = activations(gpt3()).layer
    assert no_tp == SBH * (34 + 80)
    assert 5 * A * S // H == 80


def test_figures_in_gib_for_gpt3_per_layer():
    # 34sbh + 5as^2b = 2,868,903,936 bytes (2.67 GiB) per layer; SP + selective: 106,954,752 (0.0996 GiB)
    assert activations(gpt3()).layer == 2_868_903_936
    assert activations(gpt3(tp=T, sp=True, recompute="selective")).layer == 106_954_752


def test_pipeline_first_stage_holds_all_layers_worth_eq5():
    # Sec. 4.2.3: with 1F1B the first stage keeps p micro-batches of L/p layers: L layers' worth in total, so the
    # layer term of eq. (5) is independent of p: sbhL/t (34 + 5as/h) for TP+SP
    acts = activations(gpt3(tp=T, sp=True, pp=8))
    assert acts.layers == L // 8 and acts.in_flight == 8
    assert acts.in_flight * acts.layers * acts.layer == L * (SBH * 34 // T + 5 * A * S * S * B // T)


def test_pipeline_in_flight_never_exceeds_the_micro_batches_of_a_step():
    # Megatron-LM schedules.py (1F1B): num_warmup_microbatches = min(pp - rank - 1, num_microbatches), so with
    # m < p micro-batches per step the first stage holds m of them, not p.
    for m in (1, 2, 4):
        assert activations(gpt3(tp=T, sp=True, pp=8, grad_accum=m)).in_flight == m
    assert activations(gpt3(tp=T, sp=True, pp=8, grad_accum=8)).in_flight == 8


def test_interleaved_schedule_factor():
    # Sec. 4.2.3: interleaving with m model chunks multiplies the first stage by 1 + (p - 1) / (p m)
    p, m = 8, 2
    acts = activations(gpt3(tp=T, sp=True, pp=p, virtual=m))
    assert acts.in_flight == pytest.approx(p * (1 + (p - 1) / (p * m)))


def test_output_layer_bytes_sec_4_3():
    # Sec. 4.3: final layer norm and output projection inputs 2sbh each, fp32 logits 4sbv: 4sbh/t (1 + v/h)
    acts = activations(gpt3(tp=T, sp=True))
    v = 50257
    assert acts.head == 4 * SBH // T + 4 * S * B * v // T
