"""Multi-rank profiles through torch.distributed on CPU (gloo, loopback only) and the fake process group.

What ZeRO promises is what each rank holds; these tests run real ranks and check it against the analytic estimate
(memory/states.py) and the engines' exact layouts (memory/shard_layout.py, worked by hand below).  Bounded work:
a 2-layer, 64-wide decoder (151,872 parameters), micro-batch 2 x 32 tokens, 2 warm-up steps + 1 measured step; the
strategies of one world size share one process group (one spawn).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from memplan.measure.distributed import DistributedRequest, profile_distributed_many  # noqa: E402
from memplan.memory import shard_layout  # noqa: E402
from memplan.memory.estimate import estimate_memory  # noqa: E402
from memplan.spec.tensors import parameter_tensors  # noqa: E402
from memplan.spec.layout import Layout  # noqa: E402
from tests.helpers import run_cli  # noqa: E402
from tests.measure_archs import ARCHS, setup  # noqa: E402

ARCH = ARCHS["llama"]
N = 151_872  # count_parameters of the tiny llama: checked below against the built module
FP32 = 4
ADAM_STATES = 2


def _shapes() -> list[tuple[int, ...]]:
    """Every parameter tensor of the architecture (parameter_tensors lists one row per role with a count)."""
    return [t.shape for t in parameter_tensors(ARCH) for _ in range(t.count)]


def _requests(world: int, strategies, device: str = "cpu", **kw) -> list[DistributedRequest]:
    return [DistributedRequest(setup=setup("llama"), strategy=s, nproc=world, device=device,
                               model_source="reference", **kw) for s in strategies]


@pytest.fixture(scope="module")
def w2():
    return {p.strategy: p for p in profile_distributed_many(_requests(2, ("ddp", "zero1", "zero3")))}


@pytest.fixture(scope="module")
def w4():
    return {p.strategy: p for p in profile_distributed_many(_requests(4, ("ddp", "zero1", "zero3")))}


@pytest.fixture(scope="module")
def fake64():
    (p,) = profile_distributed_many(_requests(64, ("zero3",), device="fake", fake_ranks=[0, 53, 63]))
    return p


# ---------------------------------------------------------------------------------------------------------
# the layouts, by hand
# ---------------------------------------------------------------------------------------------------------
def test_fsdp_layout_by_hand():
    # a (160, 64) weight at W=64: torch.chunk rows of ceil(160/64)=3; every rank stores 3 rows (padded),
    # ranks 0..52 own 3 rows (159), rank 53 owns the last 1, ranks 54.. own none
    assert shard_layout.fsdp_padded_shard_elements([(160, 64)], 64) == 3 * 64
    assert [shard_layout.fsdp_local_shard_elements([(160, 64)], 64, r) for r in (0, 52, 53, 54, 63)] == \
        [192, 192, 64, 0, 0]
    assert shard_layout.fsdp_padded_shard_elements([(64,)], 64) == 1  # a norm weight: one element per rank


def test_zero1_partition_by_hand():
    # largest first to the least-loaded rank: 10 -> r0, 7 -> r1, 5 -> r1 (7 < 10), 3 -> r0 (10 < 12)
    assert shard_layout.zero1_partition_elements([3, 10, 5, 7], 2) == [13, 12]
    # more ranks than tensors: some ranks own nothing
    assert shard_layout.zero1_partition_elements([4, 4], 3) == [4, 4, 0]


def test_tiny_model_size():
    assert sum(math.prod(s) for s in _shapes()) == N


# ---------------------------------------------------------------------------------------------------------
# per-rank model states vs the estimate (gloo, W = 2 and 4)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [2, 4])
def test_ddp_and_zero3_states_equal_the_estimate(world, w2, w4):
    profiles = w2 if world == 2 else w4
    for strategy in ("ddp", "zero3"):
        p = profiles[strategy]
        assert p.world_size == world and len(p.ranks) == world and p.parameters == N
        for r in p.ranks:
            for f in ("weights", "gradients", "optimizer_states", "model_states"):
                # no padding: every dim 0 of the tiny llama (512, 64, 32, 160) divides by 2 and 4
                assert getattr(r.measured, f) == getattr(r.estimated, f), (strategy, r.rank, f)
    ddp = profiles["ddp"].ranks[0].measured
    assert (ddp.weights, ddp.gradients, ddp.optimizer_states) == (N * FP32, N * FP32, N * FP32 * ADAM_STATES)
    z3 = profiles["zero3"].ranks[0].measured
    assert z3.weights == N * FP32 // world and z3.optimizer_states == N * FP32 * ADAM_STATES // world


@pytest.mark.parametrize("world", [2, 4])
def test_zero1_states_are_the_greedy_partition(world, w2, w4):
    p = (w2 if world == 2 else w4)["zero1"]
    parts = shard_layout.zero1_partition_elements([math.prod(s) for s in _shapes()], world)
    got = [r.measured.optimizer_states for r in sorted(p.ranks, key=lambda r: r.rank)]
    assert got == [n * FP32 * ADAM_STATES for n in parts]
    assert sum(got) == N * FP32 * ADAM_STATES  # every state once, over all ranks
    est = p.ranks[0].estimated.optimizer_states
    assert est == math.ceil(N * FP32 * ADAM_STATES / world)  # the estimate's even split is the mean
    for r in p.ranks:  # weights and gradients are not sharded by ZeRO-1
        assert (r.measured.weights, r.measured.gradients) == (N * FP32, N * FP32)
        assert (r.measured.weights, r.measured.gradients) == (r.estimated.weights, r.estimated.gradients)


def test_ddp_buckets_are_a_second_copy_of_the_gradients(w2):
    # the reference decoder's rotary tables (cos, sin: 64 positions x 16 dims, fp32) are broadcast from rank 0 in
    # every forward through one flat copy, alive beside the buckets
    rotary = 2 * 64 * 16 * FP32
    for r in w2["ddp"].ranks:
        assert r.measured.communication_buffers == N * FP32 + rotary
        assert r.estimated.communication_buffers == N * FP32  # memory/overheads.py "DDP gradient buckets"


def test_losses_agree_across_strategies(w2, w4):
    """Same seed, same per-rank batches: DDP, ZeRO-1 and FSDP must train identically.  Only the summation order
    of the gradient reduction differs (allreduce vs reduce-scatter, ~1e-7 relative in fp32); a wrong average or
    a lost shard moves the step-3 loss by > 1e-3."""
    for profiles in (w2, w4):
        ref = profiles["ddp"].losses
        assert len(ref) == 3 and ref[2] < ref[0]  # it trains
        for s in ("zero1", "zero3"):
            assert profiles[s].losses[0] == ref[0]  # the same weights and data before any update
            assert profiles[s].losses == pytest.approx(ref, rel=1e-6, abs=0)


# ---------------------------------------------------------------------------------------------------------
# fake process group: W = 64 in one process
# ---------------------------------------------------------------------------------------------------------
def test_fake_pg_w64_matches_analytic_zero3_shards(fake64):
    W = 64
    padded = shard_layout.fsdp_padded_shard_elements(_shapes(), W)
    # by hand for the tiny llama: embed/lm_head (512, 64) -> 8 rows each; q, o (64, 64) -> 1 row; k, v (32, 64) ->
    # 1 row; gate, up (160, 64) -> 3 rows; down (64, 160) -> 1 row of 160; norms (64,) -> 1 element
    per_layer = 2 * 64 + 2 * 64 + 2 * 3 * 64 + 160 + 2 * 1
    assert padded == 2 * 8 * 64 + 2 * per_layer + 1
    est = estimate_memory(setup("llama").model_copy(update={"layout": Layout(gpus=W, zero=3, engine="fsdp")}))
    # --engine fsdp counts FSDP's dim-0 padding: ceil(d0/W) rows of every parameter, not ceil(N/W)
    assert est.per_gpu.weights == est.per_gpu.gradients == padded * FP32 > math.ceil(N * FP32 / W)
    # the fullest rank (0) holds states for ceil(d0/W) rows of every parameter: the padded count
    assert est.per_gpu.optimizer_states == padded * FP32 * ADAM_STATES
    assert {r.rank for r in fake64.ranks} == {0, 53, 63}
    for r in fake64.ranks:
        m = r.measured
        assert m.weights == m.gradients == padded * FP32
        assert r.estimated.weights == est.per_gpu.weights
        assert r.difference["weights"] == 0
        local = shard_layout.fsdp_local_shard_elements(_shapes(), W, r.rank)
        assert m.optimizer_states == local * FP32 * ADAM_STATES
        assert m.local_parameters == local
    assert sum(shard_layout.fsdp_local_shard_elements(_shapes(), W, r) for r in range(W)) == N
    assert fake64.losses == [] and fake64.launcher == "fake"


# ---------------------------------------------------------------------------------------------------------
# torchrun, zero2, the CLI
# ---------------------------------------------------------------------------------------------------------
TINY_FLAGS = ["gpt2", "--layers", "2", "--hidden", "64", "--heads", "4", "--ffn", "256", "--vocab", "512",
              "--max-positions", "64", "--seq", "32", "--micro-batch", "2", "-p", "fp32", "--device", "cpu",
              "--model-source", "reference"]


@pytest.fixture(scope="module")
def torchrun_zero2():
    from memplan.measure.distributed import free_port

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "memplan", "profile",
           *TINY_FLAGS, "--strategy", "zero2", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_torchrun_zero2_shards_weights_at_rest(torchrun_zero2):
    d = torchrun_zero2
    assert d["launcher"] == "torchrun" and d["world_size"] == 2 and [r["rank"] for r in d["ranks"]] == [0, 1]
    n = d["parameters"]
    for r in d["ranks"]:
        m, e = r["measured"], r["estimated"]
        assert set(m) >= {"weights", "gradients", "optimizer_states", "peak_allocated", "communication_buffers"}
        assert set(e) >= {"weights", "gradients", "optimizer_states", "peak_allocated"}
        # FSDP2 reshard_after_forward=False: stored parameters sharded like zero3, and every unsharded parameter
        # alive at once between forward and backward
        assert m["weights"] == m["gradients"] == n * FP32 // 2 and m["optimizer_states"] == n * FP32
        assert m["gathered_parameters"] == n * FP32
        assert e["gradients"] == m["gradients"] and e["optimizer_states"] == m["optimizer_states"]


def test_estimate_fsdp_zero2_weights_are_sharded(torchrun_zero2):
    r = torchrun_zero2["ranks"][0]
    assert r["estimated"]["weights"] == r["measured"]["weights"]


def test_cli_fake_json_fields(capsys):
    code, out, err = run_cli(capsys, "profile", *TINY_FLAGS[:-4], "--model-source", "reference", "--device", "fake",
                             "--nproc", "8", "--strategy", "zero3", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["kind"] == "memplan.profile.distributed" and d["world_size"] == 8
    assert [r["rank"] for r in d["ranks"]] == [0, 7]
    for r in d["ranks"]:
        assert {"rank", "measured", "estimated", "difference", "explanations"} <= set(r)


@pytest.mark.parametrize("flags, message", [
    (["--strategy", "zero1", "-p", "bf16-mixed"], "ZeroRedundancyOptimizer has no fp32 master"),
    (["--strategy", "ddp", "--mixed-precision"], "--mixed-precision maps the recipe onto FSDP"),
    (["--nproc", "2", "--zero", "2"], "--strategy decides ZeRO"),
    (["--strategy", "ddp", "--device", "fake", "--nproc", "8"], "--device fake emulates FSDP"),
])
def test_cli_bad_combinations(capsys, flags, message):
    args = TINY_FLAGS[:TINY_FLAGS.index("-p")] + ["--model-source", "reference"]
    code, out, err = run_cli(capsys, "profile", *args, *flags)
    assert code == 2 and message in err and "Traceback" not in err


def test_single_rank_fsdp_follows_gathered_parameters():
    """W=1 FSDP (the single-GPU ZeRO-3 path) skips the all-gather and copies shards into the unsharded
    parameters (_fsdp_param_group.py wait_for_unshard, world_size == 1): still followed, still exact."""
    (p,) = profile_distributed_many(_requests(1, ("zero3",), device="fake"))
    (r,) = p.ranks
    assert (r.measured.weights, r.measured.gradients, r.measured.optimizer_states) == \
        (N * FP32, N * FP32, N * FP32 * ADAM_STATES)
    root = 2 * 512 * 64 + 64  # embeddings, untied LM head, final norm
    block = N - root
    block //= 2
    # FSDP2 gathers the root group (not resharded before the blocks run) and one block at a time here
    assert r.measured.gathered_parameters == (root + block) * FP32


# ---------------------------------------------------------------------------------------------------------
# issue 25: an out-of-memory on a rank is a result; spawned ranks meet without a TCP port
# ---------------------------------------------------------------------------------------------------------
def _oom_on_measured_step(monkeypatch):
    import memplan.measure.distributed as d

    real = d._RankStep.run

    def run(self, phases):
        if phases.observers:  # the measured step (warm-up steps run without observers)
            phases("forward")
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
        return real(self, phases)

    monkeypatch.setattr(d._RankStep, "run", run)


def test_oom_on_a_fake_rank_is_a_result_not_a_traceback(monkeypatch):
    _oom_on_measured_step(monkeypatch)
    (p,) = profile_distributed_many(_requests(2, ("zero3",), device="fake"))
    assert any("OUT OF MEMORY during forward: CUDA out of memory. Tried to allocate 2.00 GiB" in n for n in p.notes)
    assert p.ranks[0].measured.weights > 0  # what was measured up to then


def test_oom_on_a_gloo_rank_skips_the_loss_all_reduce(monkeypatch, tmp_path):
    import torch.distributed as dist

    from memplan.measure import distributed as d

    _oom_on_measured_step(monkeypatch)
    calls = []
    real_all_reduce = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (calls.append(t.numel()), real_all_reduce(t, *a, **k)))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        (req,) = _requests(1, ("ddp",))
        rec = d.run_rank(req, 0, 1, torch.device("cpu"))
    finally:
        dist.destroy_process_group()
    assert rec.oom and rec.oom_phase == "forward" and rec.losses == []
    # DDP's own all-reduces of warm-up buckets aside, the last one is the 1-element OOM agreement, not the losses
    assert calls[-1] == 1


def test_spawned_ranks_meet_through_a_file_store(monkeypatch):
    import torch.multiprocessing as mp

    from memplan.measure import distributed as d

    seen = {}

    class Stop(Exception):
        pass

    def start(fn, args, nprocs, join, start_method):
        seen["init"] = args[1]
        raise Stop

    monkeypatch.setattr(mp, "start_processes", start)
    with pytest.raises(Stop):
        d._spawn(_requests(2, ("ddp",)), 2)
    assert seen["init"].startswith("file://") and seen["init"].endswith("rendezvous")
