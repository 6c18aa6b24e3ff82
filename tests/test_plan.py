"""`memplan plan`: the search respects the engines' rules, prunes only what cannot fit, finds what brute force
finds, and --min-gpus is the fewest."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import memplan.catalog as catalog
from memplan.cli.options import build_setup
from memplan.errors import MemplanError
from memplan.memory.estimate import estimate_memory
from memplan.perf.plan import _setup_for, enumerate_layouts, gpu_counts_upto, plan
from memplan.perf.time import StepModel, optimizer_bytes_per_param, resolve_efficiency, resolve_links

A100_40 = catalog.get_gpu("a100-40gb")


@pytest.fixture(scope="module")
def xl():
    return build_setup(model="gpt2-xl", gpus=32, seq=1024)


@pytest.fixture(scope="module")
def xl_plan(xl):
    return plan(xl, A100_40, global_batch=256, top=8, tokens=1e10)


def test_candidates_obey_the_layout_rules(xl, xl_plan):
    a = xl.model.arch
    assert xl_plan.candidates
    for c in xl_plan.candidates:
        L = c.layout
        assert L.dp * L.tp * L.pp == 32
        assert L.micro_batch * L.grad_accum * L.dp == 256
        assert a.n_heads % L.tp == 0 and L.tp <= 8 and a.n_layers % L.pp == 0
        assert L.pp == 1 or L.zero <= 1
        assert L.offload_params == "none" or L.zero == 3
        assert c.fits and c.memory_required_bytes <= A100_40.memory_bytes
    steps = [c.step_seconds for c in xl_plan.candidates]
    assert steps == sorted(steps)
    assert xl_plan.why and xl_plan.why[0].startswith("best:")
    assert xl_plan.evaluated >= len(xl_plan.candidates)


def _brute_force(setup, gpu, gpus, batch):
    """Every layout, its full memory estimate and step time: what the lazy search must agree with."""
    links = resolve_links(gpu)
    from memplan.perf.time import peak_for

    eff = resolve_efficiency(gpu, peak_for(gpu, setup.recipe.compute))
    sm = StepModel(setup.model, setup.recipe, gpu, setup.seq, links, eff, "dp", setup.layout.gpus_per_node)
    rows = []
    for row in enumerate_layouts(setup, gpus, batch):
        tp, pp, dp, zero, oo, op, mb, ga, rc = row
        est = estimate_memory(_setup_for(setup, gpus, row), gpu)
        bound = sm.memory_lower_bound(tp, pp, dp, zero, oo, op, optimizer_bytes_per_param(setup))
        step = sm.evaluate(gpus, tp, pp, zero, mb, ga, rc, oo, op, tp > 1)[0]
        rows.append((row, est, bound, step))
    return rows


def test_pruning_bound_never_exceeds_the_full_estimate_and_best_matches_brute_force(xl, xl_plan):
    rows = _brute_force(xl, A100_40, 32, 256)
    for row, est, bound, _ in rows:
        assert bound <= est.per_gpu.model_states + 1, row  # + 1: rounding of sharded byte counts
    fitting = [step for _, est, _, step in rows if est.fits]
    assert xl_plan.candidates[0].step_seconds == pytest.approx(min(fitting))
    assert xl_plan.evaluated == len(rows)


def test_min_gpus_is_the_fewest():
    setup = build_setup(model="llama-2-7b", seq=2048, precision="bf16-mixed")
    gpu = catalog.get_gpu("a10")
    # 64 GB of CPU RAM per node rules out offloading a 7B model's 12 B/param of optimizer state, so more GPUs are
    # needed than one; brute force over every smaller count must find nothing that fits.
    cpu = 64 * 10**9
    res = plan(setup, gpu, global_batch=64, min_gpus=True, max_gpus=64, top=1, tokens=1e9, cpu_memory_bytes=cpu)
    n = res.min_gpus
    assert n > 1 and res.candidates[0].layout.gpus == n
    smaller = [c for c in gpu_counts_upto(1, 64, 8) if c < n]
    for fewer in smaller:
        for row in enumerate_layouts(setup, fewer, 64):
            est = estimate_memory(_setup_for(setup, fewer, row), gpu)
            assert not (est.fits and est.cpu.total <= cpu), (fewer, row)


def test_by_cost_ranks_gpu_seconds_across_counts():
    setup = build_setup(model="gpt2-medium", gpus=8, seq=1024)
    res = plan(setup, A100_40, global_batch=512, gpus=[8, 16, 32, 64], by="cost", top=6, tokens=1e10)
    costs = [c.step_seconds * c.layout.gpus for c in res.candidates]
    assert costs == sorted(costs)
    assert [c.cost for c in res.candidates] == sorted(c.cost for c in res.candidates)
    by_time = plan(setup, A100_40, global_batch=512, gpus=[8, 16, 32, 64], top=1, tokens=1e10)
    assert by_time.candidates[0].step_seconds <= res.candidates[0].step_seconds


def test_nothing_fits_is_a_clear_error():
    setup = build_setup(model="gpt3-175b", gpus=1, seq=2048, precision="fp16-mixed")
    # With CPU offload a 175B model's GPU share fits a T4; its 175e9 x 12+ bytes of host state need a node with
    # ~2 TB of RAM, so with 512 GB per node nothing fits.
    with pytest.raises(MemplanError, match="no strategy fits"):
        plan(setup, catalog.get_gpu("t4"), global_batch=8, tokens=1e9, cpu_memory_bytes=512 * 10**9)


def test_cli_json_candidates_best_first_without_torch():
    code = ("import sys\n"
            "from memplan.cli import main\n"
            "rc = main(['plan', 'gpt2', '--gpu', 'a100-80gb', '--gpus', '16', '--global-batch', '512', '--seq', "
            "'1024', '--json'])\n"
            "assert rc == 0 and 'torch' not in sys.modules, (rc, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    steps = [c["step_seconds"] for c in data["candidates"]]
    assert steps and steps == sorted(steps)
    assert {"layout", "memory_required_bytes", "mfu", "days"} <= set(data["candidates"][0])
