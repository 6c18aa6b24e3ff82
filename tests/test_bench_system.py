"""`memplan bench --system MODEL`: the sweep times exactly the shapes the op walk prices, writes a validated
record, and `memplan time --system` takes it (a GPU's) or refuses it in one line (a CPU's, another kind)."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from memplan.perf.shapes import walk_shapes  # noqa: E402
from memplan.results.system import SystemRecord  # noqa: E402
from memplan.setups import training_setup  # noqa: E402
from tests.helpers import run_cli  # noqa: E402

TINY = ["gpt2", "--layers", "1", "--hidden", "64", "--heads", "2", "--seq", "64", "-b", "1", "--vocab", "512"]


def test_cpu_sweep_times_the_walks_shapes_and_time_refuses_a_cpu_record(capsys, tmp_path):
    out = tmp_path / "sys.json"
    code, stdout, err = run_cli(capsys, "bench", "--device", "cpu", "--system", *TINY, "--repeats", "2",
                                "--out", str(out), "--json")
    assert code == 0, err
    rec = SystemRecord.model_validate_json(out.read_text())
    assert rec.kind == "memplan.system" and rec.device == "cpu" and rec.dtype == "fp32"
    setup = training_setup("gpt2", layers=1, hidden=64, heads=2, seq=64, micro_batch=1, vocab=512)
    gemms, _ = walk_shapes(setup)
    assert {(g.M, g.N, g.K, g.batch) for g in rec.gemms} == {(g.M, g.N, g.K, g.batch) for g in gemms}
    for g in rec.gemms:  # 2 MNK FLOPs per GEMM
        assert g.tflops == pytest.approx(2 * g.M * g.N * g.K * g.batch / g.seconds / 1e12)
    assert rec.bandwidth and all(b.gbps == pytest.approx(b.bytes / b.seconds / 1e9) for b in rec.bandwidth)
    code, _, err = run_cli(capsys, "time", *TINY, "--gpu", "a100-80gb", "--tokens", "1M", "--system", str(out))
    assert code == 2 and "not a GPU" in err and err.count("\n") <= 1


def test_layout_flags_need_system(capsys):
    code, _, err = run_cli(capsys, "bench", "--device", "cpu", "--tp", "2")
    assert code == 2 and "--system MODEL" in err


@pytest.mark.slow
def test_collective_sweep_over_local_ranks(capsys):
    # two gloo ranks on the CPU: the same code path as NCCL over the GPUs of a node
    code, stdout, err = run_cli(capsys, "bench", "--device", "cpu", "--system", *TINY, "--repeats", "2",
                                "--nproc", "2", "--json")
    assert code == 0, err
    coll = {c["collective"]: c for c in json.loads(stdout)["collectives"]}
    assert "all_reduce" in coll and coll["all_reduce"]["ranks"] == 2
    c = coll["all_reduce"]
    assert c["busbw_gbps"] == pytest.approx(2 * (2 - 1) / 2 * c["bytes"] / c["seconds"] / 1e9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sweep_feeds_time(capsys, tmp_path):
    out = tmp_path / "sys.json"
    code, _, err = run_cli(capsys, "bench", "--system", "llama-3.1-8b", "--seq", "4096", "-b", "1", "--out", str(out))
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "time", "llama-3.1-8b", "--gpu", json.loads(out.read_text())["gpu_profile"],
                                "--seq", "4096", "-b", "1", "--tokens", "1B", "--system", str(out), "--json")
    assert code == 0, err
    assert any("memplan bench --system record" in k["source"] for k in json.loads(stdout)["kernels"])
