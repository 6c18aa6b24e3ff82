"""The one Layout: its checks, the pipeline stage split (uneven stages), expert-parallel groups."""
from __future__ import annotations

import pytest

from memplan.errors import MemplanError
from memplan.spec.layout import Layout


@pytest.mark.parametrize("n,pp,expected", [
    (32, 4, [8, 8, 8, 8]),
    (30, 4, [7, 8, 8, 7]),  # the ends (embeddings, LM head) take the shortfall, first before last
    (10, 3, [3, 4, 3]),
    (61, 8, [7, 7, 8, 8, 8, 8, 8, 7]),
])
def test_stage_layers_even_or_short_at_the_ends(n, pp, expected):
    got = Layout(gpus=pp, pp=pp).stage_layers(n)
    assert got == expected and sum(got) == n


def test_uneven_stages_as_megatron_takes_them():
    # Megatron-LM --decoder-first/last-pipeline-num-layers: the rest must split evenly over the middle stages
    lay = Layout(gpus=8, pp=8, first_stage_layers=3, last_stage_layers=3)
    assert lay.stage_layers(60) == [3] + [9] * 6 + [3]
    with pytest.raises(MemplanError, match="split evenly"):
        lay.stage_layers(61)
    assert Layout(gpus=4, pp=4).stage_bounds(30) == [(0, 7), (7, 15), (15, 23), (23, 30)]


def test_expert_parallel_groups():
    lay = Layout(gpus=64, tp=2, pp=2, ep=8)
    assert lay.dp == 16 and lay.expert_tp == 2 and lay.edp == 2  # 64 = pp 2 x etp 2 x ep 8 x edp 2
    assert Layout(gpus=64, tp=2, pp=2, ep=8, etp=1).edp == 4
    with pytest.raises(MemplanError, match="must divide"):
        Layout(gpus=8, ep=16)


@pytest.mark.parametrize("kw,match", [
    (dict(gpus=6, tp=4), "not divisible"),
    (dict(virtual_stages=2), "needs --pp > 1"),
    (dict(gpus=2, pp=2, zero=3), "--zero 0 or 1"),
    (dict(sequence_parallel=True), "needs --tp > 1"),
    (dict(offload_params="cpu", zero=2), "needs --zero 3"),
])
def test_combinations_no_engine_runs_are_refused(kw, match):
    with pytest.raises(MemplanError, match=match):
        Layout(**kw)


def test_replace_validates():
    with pytest.raises(MemplanError):
        Layout(gpus=8).replace(tp=3)
    assert Layout(gpus=8).replace(tp=2).dp == 4
