"""`memplan plan`: the search respects the engines' rules, prunes only what cannot fit, finds what brute force
finds, searches interleaving, uneven stages, SP, CP and EP, and --min-gpus is the fewest."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import memplan.catalog as catalog
from memplan.cli.options import build_setup
from memplan.errors import MemplanError
from memplan.memory.estimate import estimate_memory
from memplan.perf.plan import DEFAULT_CPU_MEMORY_BYTES, gpu_counts_upto, plan
from memplan.perf.search.enumerate import enumerate_layouts
from memplan.perf.search.prune import model_state_bound
from memplan.perf.time import build_step_model
from memplan.spec.execution import Supports
from memplan.spec.layout import Layout

A100_40 = catalog.get_gpu("a100-40gb")


@pytest.fixture(scope="module")
def xl():
    return build_setup(model="gpt2-xl", gpus=32, seq=1024)


@pytest.fixture(scope="module")
def xl_plan(xl):
    return plan(xl, A100_40, global_batch=256, top=8, tokens=1e10)


def test_candidates_obey_the_layout_rules(xl, xl_plan):
    a = xl.model.arch.first.attention
    assert xl_plan.candidates
    for c in xl_plan.candidates:
        L = c.layout
        assert L.dp * L.tp * L.pp * L.cp == 32 and L.micro_batch * L.grad_accum * L.dp == 256
        assert a.heads % L.tp == 0 and L.tp <= 8
        assert L.pp == 1 or L.zero <= 1
        assert L.offload_params == "none" or L.zero == 3
        assert c.fits and c.memory_required_bytes <= A100_40.memory_bytes
        assert Layout.model_validate(L.model_dump()) == L  # a valid, frozen Layout
    steps = [c.step_seconds for c in xl_plan.candidates]
    assert steps == sorted(steps) and [c.rank for c in xl_plan.candidates] == list(range(1, len(steps) + 1))
    assert xl_plan.why[0].startswith("best:") and all(c.why for c in xl_plan.candidates)
    assert xl_plan.cpu_memory_bytes == DEFAULT_CPU_MEMORY_BYTES
    assert any("CPU RAM per node" in a for a in xl_plan.assumptions)


def test_pruning_bound_never_exceeds_the_full_estimate_and_best_matches_brute_force():
    setup = build_setup(model="gpt2-medium", gpus=8, seq=1024)
    res = plan(setup, A100_40, global_batch=64, top=1, tokens=1e9)
    sm = build_step_model(setup, A100_40)
    best = None
    count = 0
    for L in enumerate_layouts(setup.model.arch, setup.layout, 8, 64, 1024, supports=sm.ex.supports):
        count += 1
        est = estimate_memory(setup.model_copy(update={"layout": Layout.model_validate(L.model_dump())}), A100_40)
        bound = model_state_bound(setup, sm.stages(L)[1], L)
        assert bound <= est.per_gpu.model_states + 1, L  # + 1: rounding of sharded byte counts
        if est.fits and est.cpu.total <= DEFAULT_CPU_MEMORY_BYTES:
            step = sm.evaluate(L).step
            best = step if best is None else min(best, step)
    assert res.evaluated == count
    assert res.candidates[0].step_seconds == pytest.approx(best)


def test_the_search_covers_interleaving_uneven_stages_sp_cp_and_ep():
    llama = build_setup(model="llama-2-7b", gpus=64, seq=32768)
    layouts = list(enumerate_layouts(llama.model.arch, llama.layout, 64, 64, 32768))
    assert any(L.virtual_stages > 1 for L in layouts)
    assert any(L.first_stage_layers is not None for L in layouts)
    assert any(L.sequence_parallel for L in layouts) and any(L.tp > 1 and not L.sequence_parallel for L in layouts)
    assert any(L.cp > 1 for L in layouts)
    assert {L.recompute for L in layouts} == {"none", "selective", "full"}
    moe = build_setup(model="mixtral-8x7b", gpus=64, seq=4096)
    assert any(L.ep > 1 for L in enumerate_layouts(moe.model.arch, moe.layout, 64, 64, 4096))
    # uneven pipelines of a layer count pp does not divide (the ends take the shortfall)
    odd = build_setup(model="llama-2-13b", gpus=64, seq=4096)  # 40 layers
    assert any(40 % L.pp for L in enumerate_layouts(odd.model.arch, odd.layout, 64, 64, 4096))


def test_an_engine_version_limits_the_search():
    # Megatron-LM of 2021 had no sequence parallelism, selective recompute or distributed optimizer
    setup = build_setup(model="gpt2-xl", gpus=64, seq=1024, engine="megatron")
    sup = Supports(sequence_parallel=False, recompute=["none", "full"], zero=[0], uneven_stages=False)
    layouts = list(enumerate_layouts(setup.model.arch, setup.layout, 64, 512, 1024, supports=sup))
    assert layouts and not any(L.sequence_parallel or L.recompute == "selective" or L.zero for L in layouts)
    assert all(48 % L.pp == 0 for L in layouts)


def test_min_gpus_is_the_fewest():
    setup = build_setup(model="llama-2-7b", seq=2048, precision="bf16-mixed")
    gpu = catalog.get_gpu("a10")
    # 64 GB of CPU RAM per node rules out offloading a 7B model's 12 B/param of optimizer state, so more GPUs are
    # needed than one; brute force over every smaller count must find nothing that fits.
    cpu = 64 * 10**9
    res = plan(setup, gpu, global_batch=64, min_gpus=True, max_gpus=64, top=1, tokens=1e9, cpu_memory_bytes=cpu)
    n = res.min_gpus
    assert n > 1 and res.candidates[0].layout.gpus == n
    sm = build_step_model(setup, gpu)
    for fewer in [c for c in gpu_counts_upto(1, 64, 8) if c < n]:
        for L in enumerate_layouts(setup.model.arch, setup.layout, fewer, 64, 2048, supports=sm.ex.supports):
            if model_state_bound(setup, sm.stages(L)[1], L) > gpu.memory_bytes:
                continue
            est = estimate_memory(setup.model_copy(update={"layout": Layout.model_validate(L.model_dump())}), gpu)
            assert not (est.fits and est.cpu.total <= cpu), (fewer, L)


def test_by_cost_ranks_gpu_seconds_across_counts():
    setup = build_setup(model="gpt2-medium", gpus=8, seq=1024)
    res = plan(setup, A100_40, global_batch=512, gpus=[8, 16, 32, 64], by="cost", top=6, tokens=1e10)
    costs = [c.step_seconds * c.layout.gpus for c in res.candidates]
    assert costs == sorted(costs)
    by_time = plan(setup, A100_40, global_batch=512, gpus=[8, 16, 32, 64], top=1, tokens=1e10)
    assert by_time.candidates[0].step_seconds <= res.candidates[0].step_seconds


def test_cpu_ram_per_node_drops_layouts_and_says_so():
    # 13B on 8 x A10 (24 GB) fits only with the optimizer in CPU RAM: ~190 GB per node
    setup = build_setup(model="llama-2-13b", gpus=8, seq=2048)
    res = plan(setup, catalog.get_gpu("a10"), global_batch=32, tokens=1e9, top=2)
    assert res.cpu_memory_bytes == DEFAULT_CPU_MEMORY_BYTES
    need = res.candidates[0].cpu_memory_bytes
    assert need > 0 and all(c.cpu_memory_bytes <= DEFAULT_CPU_MEMORY_BYTES for c in res.candidates)
    with pytest.raises(MemplanError, match="need more than .* of CPU RAM per node"):
        plan(setup, catalog.get_gpu("a10"), global_batch=32, tokens=1e9, top=2, cpu_memory_bytes=need // 2)


def test_nothing_fits_is_a_clear_error():
    setup = build_setup(model="gpt3-175b", gpus=1, seq=2048, precision="fp16-mixed")
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
    first = data["candidates"][0]
    assert {"layout", "memory_required_bytes", "mfu", "days", "why"} <= set(first)
    assert {"gpus", "dp", "tp", "pp", "zero", "micro_batch", "grad_accum", "recompute"} <= set(first["layout"])


def test_reference_flag_ranks_the_given_layout(capsys):
    from tests.helpers import run_cli

    code, out, err = run_cli(capsys, "plan", "gpt2-medium", "--gpu", "a100-40gb", "--gpus", "16", "-B", "128",
                             "--seq", "1024", "--tp", "2", "-b", "4", "--reference", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["reference"]["layout"]["tp"] == 2 and d["reference_rank"] >= 1
    assert any(w.startswith("reference") for w in d["why"])
