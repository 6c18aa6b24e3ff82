"""Step time, days, GPU-hours and cost: published training times reproduced from their inputs, and the
communication/bubble arithmetic checked against the formulas of the papers it comes from."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import memplan.catalog as catalog
from memplan.errors import MemplanError
from memplan.perf import comm
from memplan.perf.time import estimate_time, gpu_hours_for
from memplan.spec.model import Architecture, ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import Workload, get_recipe

A100 = catalog.get_gpu("a100-80gb")
H100 = catalog.get_gpu("h100-sxm")


def gpt(layers: int, hidden: int, heads: int, vocab: int = 51200, seq: int = 2048) -> ModelSpec:
    return ModelSpec(name=f"gpt-{layers}x{hidden}", architecture=Architecture(
        n_layers=layers, hidden_size=hidden, n_heads=heads, ffn_hidden_size=4 * hidden, mlp="gelu",
        norm="layernorm", norm_bias=True, vocab_size=vocab, max_positions=seq, position="learned", qkv_bias=True,
        attn_out_bias=True, mlp_bias=True))


def setup(model: ModelSpec, gpus=1, tp=1, pp=1, zero=0, mb=1, ga=1, recompute="none", seq=2048, precision="bf16-mixed",
          **par) -> TrainingSetup:
    return TrainingSetup(model=model, recipe=get_recipe(precision),
                         layout=Layout(gpus=gpus, tp=tp, pp=pp, zero=zero, **par),
                         workload=Workload(micro_batch=mb, grad_accum=ga, seq=seq, recompute=recompute))


# ---- section 5: published figures ------------------------------------------------------------------------------

@pytest.mark.parametrize("layers,hidden,heads,gpus,tp,pp,batch,tokens,tflops,paper_days,eq4_days", [
    # Narayanan et al. 2021 (Megatron-LM), sec. 5.1: GPT-3 175B, 300B tokens, 1024 A100s at 140 TFLOP/s: ~34 days.
    (96, 12288, 96, 1024, 8, 8, 1536, 300e9, 140.0, 34, 33.8),
    # ... and the 1T model (Table 1: 128 layers, h 25600, 160 heads), 450B tokens, 3072 GPUs at 163 TFLOP/s: ~84 days.
    (128, 25600, 160, 3072, 8, 64, 3072, 450e9, 163.0, 84, 83.9),
])
def test_megatron_training_days(layers, hidden, heads, gpus, tp, pp, batch, tokens, tflops, paper_days, eq4_days):
    model = gpt(layers, hidden, heads)
    dp = gpus // (tp * pp)
    est = estimate_time(setup(model, gpus, tp, pp, recompute="full"), A100, tokens=tokens, global_batch=batch,
                        achieved_tflops=tflops, with_memory=False)
    compute_days = est.compute_seconds * est.steps / 86400
    # The paper's eq. 4, 8TP/(nX), drops the s/6h attention term of eq. 3; with the paper's P (Table 1: 174.6B and
    # 1008B) it gives 33.8 and 83.9 days, printed as "about 34" and "about 84".
    P = {96: 174.6e9, 128: 1008e9}[layers]
    assert 8 * tokens * P / (gpus * tflops * 1e12) / 86400 == pytest.approx(eq4_days, abs=0.05)
    # memplan counts every matmul (eq. 3): the attention term adds s/6h = 2.8% (175B) and 1.3% (1T).
    s_6h = 2048 / (6 * hidden)
    assert compute_days == pytest.approx(eq4_days * (1 + s_6h), rel=0.01)
    assert abs(compute_days - paper_days) / paper_days < 0.03
    assert est.layout.grad_accum == batch // dp


def test_llama_65b_gpu_hours():
    # Touvron et al. 2023 (LLaMA), sec. 2.4: 380 tokens/s/GPU on 2048 A100-80GB, 1.4T tokens, ~21 days;
    # Table 15: 1,022,362 GPU-hours. 1.4T is rounded: 1.4e12 / 380 / 3600 = 1,023,392 (0.1% above the table).
    assert gpu_hours_for(1.4e12, 380) == pytest.approx(1_022_362, rel=1.5e-3)
    assert gpu_hours_for(1.4e12, 380) / 2048 / 24 == pytest.approx(21, abs=0.2)


# ---- step time arithmetic -------------------------------------------------------------------------------------

def test_compute_time_is_flops_over_peak_times_efficiency():
    model = gpt(24, 2048, 16)
    est = estimate_time(setup(model, gpus=1, mb=8), A100, steps=10, mfu=0.5, with_memory=False)
    tokens = 8 * 2048
    assert est.compute_seconds == pytest.approx(est.hardware_flops_per_token * tokens / (312e12 * 0.5))
    assert est.step_seconds == est.compute_seconds  # one GPU: nothing to communicate
    assert est.mfu == pytest.approx(0.5)
    assert est.days == pytest.approx(10 * est.step_seconds / 86400)


def test_efficiency_sources():
    model = gpt(4, 512, 8)
    s = setup(model)
    default = estimate_time(s, H100, steps=1, with_memory=False)
    assert default.efficiency.value == H100.default_mfu and "hopper" in default.efficiency.source
    achieved = estimate_time(s, H100, steps=1, achieved_tflops=400, with_memory=False)
    assert achieved.efficiency.value == pytest.approx(400 / 989.4)
    with pytest.raises(MemplanError, match="at most one"):
        estimate_time(s, H100, steps=1, mfu=0.4, achieved_tflops=400, with_memory=False)
    with pytest.raises(MemplanError, match="--achieved-tflops must be"):
        estimate_time(s, H100, steps=1, achieved_tflops=2000, with_memory=False)


def test_measured_efficiency_from_a_profile_record(tmp_path):
    record = {"measured": {"cuda": {"achieved_tflops": 600.0}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record))
    est = estimate_time(setup(gpt(4, 512, 8)), H100, steps=1, measured=str(path), with_memory=False)
    assert est.efficiency.value == pytest.approx(600 / 989.4)


def test_bf16_on_volta_is_refused_with_a_hint():
    with pytest.raises(MemplanError, match="fp16-mixed"):
        estimate_time(setup(gpt(4, 512, 8)), catalog.get_gpu("v100-16gb"), steps=1, with_memory=False)


def test_pipeline_bubble_fraction():
    # Narayanan et al. 2021, sec. 2.2.1: 1F1B idles (p-1)/(m+p-1) of the step; interleaving divides the bubble by v.
    model = gpt(8, 1024, 8)
    est = estimate_time(setup(model, gpus=4, pp=4, ga=8), A100, steps=1, overlap="all", with_memory=False)
    assert est.bubble_seconds / (est.compute_seconds + est.bubble_seconds) == pytest.approx(3 / 11)
    inter = estimate_time(setup(model, gpus=4, pp=4, ga=8, virtual_stages=2), A100, steps=1, overlap="all",
                          with_memory=False)
    assert inter.bubble_seconds == pytest.approx(est.bubble_seconds / 2)


def test_zero_volumes_follow_the_zero_paper():
    # Rajbhandari et al. 2020, sec. 7.2: DP and ZeRO-1/2 move 2 Psi per GPU, ZeRO-3 3 Psi (1.5x). With n = 64:
    n, psi = 64, 1e9
    total = {z: sum(b for _, b, _, _ in comm.zero_volumes(z, n, 1, psi, 2, 2)) for z in range(4)}
    assert total[0] == pytest.approx(2 * psi * 2 * (n - 1) / n)
    assert total[1] == total[2] == pytest.approx(total[0])
    assert total[3] == pytest.approx(1.5 * total[0])
    # With gradient accumulation ZeRO-2 reduce-scatters every micro-batch, DDP once.
    assert sum(b for _, b, _, _ in comm.zero_volumes(0, n, 4, psi, 2, 2)) == pytest.approx(total[0])
    assert sum(b for _, b, _, _ in comm.zero_volumes(2, n, 4, psi, 2, 2)) == pytest.approx(
        psi * 2 * (n - 1) / n * (4 + 1))


def test_tensor_parallel_all_reduce_bytes():
    # Megatron (Shoeybi et al. 2019, fig. 4): 4 all-reduces of b x s x h per layer per micro-batch (2 fwd, 2 bwd),
    # ring all-reduce sends 2(t-1)/t of it; 6 with full recompute.
    model = gpt(4, 1024, 16)
    est = estimate_time(setup(model, gpus=8, tp=8, mb=2, ga=3), H100, steps=1, with_memory=False)
    tp_item = next(c for c in est.comm if c.parallelism == "tp")
    assert tp_item.bytes_per_step == pytest.approx(3 * 4 * 4 * 2 * 7 / 8 * (2 * 2048 * 1024 * 2))
    assert tp_item.link == "nvlink4" and tp_item.exposed_seconds == tp_item.seconds
    rc = estimate_time(setup(model, gpus=8, tp=8, mb=2, ga=3, recompute="full"), H100, steps=1, with_memory=False)
    assert next(c for c in rc.comm if c.parallelism == "tp").bytes_per_step == pytest.approx(
        tp_item.bytes_per_step * 6 / 4)


def test_links_follow_node_boundaries_and_overlap_is_explicit():
    model = gpt(12, 2048, 16)
    inside = estimate_time(setup(model, gpus=8), A100, steps=1, overlap="none", with_memory=False)
    across = estimate_time(setup(model, gpus=16), A100, steps=1, overlap="none", with_memory=False)
    assert inside.comm[0].link == "nvlink3" and across.comm[0].link == "infiniband-hdr"
    # ring all-reduce of bf16 gradients: 2 (n-1)/n x 2 bytes x N over the link (+ latency per ring step)
    n_params = model.parameters.total
    assert across.comm[0].bytes_per_step == pytest.approx(2 * 15 / 16 * 2 * n_params)
    assert across.comm[0].seconds == pytest.approx(2 * 15 / 16 * 2 * n_params / 25e9 + 30 * 5e-6)
    # overlap none: everything on the critical path; all: hidden up to compute time
    assert across.step_seconds == pytest.approx(across.compute_seconds + across.comm_seconds)
    hidden = estimate_time(setup(model, gpus=16), A100, steps=1, overlap="all", with_memory=False)
    assert hidden.step_seconds == pytest.approx(max(hidden.compute_seconds, hidden.comm_seconds))
    assert any("overlap=all" in a for a in hidden.assumptions)


def test_offload_costs_pcie_traffic_and_the_cpu_optimizer_step():
    # ZeRO-Offload (Ren et al. 2021): each GPU sends its gradient shard down and gets its parameter shard back over
    # PCIe; the node's CPU then updates all 8 shards, memory-bound at 28 bytes per parameter (see perf/time.py).
    model = gpt(12, 2048, 16)
    n_params = model.parameters.total
    est = estimate_time(setup(model, gpus=8, zero=1, offload_optimizer="cpu"), H100, steps=1, cpu_bandwidth_gbps=100,
                        with_memory=False)
    pcie = next(c for c in est.comm if c.name.startswith("optimizer offload"))
    cpu = next(c for c in est.comm if c.name.startswith("CPU optimizer step"))
    assert pcie.bytes_per_step == pytest.approx(n_params / 8 * (2 + 2)) and pcie.link == "pcie5"
    assert cpu.seconds == pytest.approx(28 * n_params / 100e9)
    assert any("28 bytes per parameter" in a for a in est.assumptions)


def test_global_batch_sets_accumulation_and_cost_uses_the_labelled_price():
    model = gpt(12, 768, 12)
    est = estimate_time(setup(model, gpus=16, mb=4), H100, tokens=1e9, global_batch=512, with_memory=False)
    assert est.layout.grad_accum == 512 // (4 * 16)
    assert est.steps == -(-int(1e9) // (512 * 2048))
    assert est.cost == pytest.approx(est.gpu_hours * H100.price_per_hour)
    assert "labelled default" in est.price_source
    mine = estimate_time(setup(model, gpus=16, mb=4), H100, tokens=1e9, global_batch=512, price=1.0,
                         with_memory=False)
    assert mine.cost == pytest.approx(mine.gpu_hours) and mine.price_source == "--price"
    with pytest.raises(MemplanError, match="not a multiple"):
        estimate_time(setup(model, gpus=16, mb=4), H100, tokens=1e9, global_batch=100, with_memory=False)
    with pytest.raises(MemplanError, match="--tokens"):
        estimate_time(setup(model, gpus=16, mb=4), H100, with_memory=False)


def test_cli_json_and_no_torch():
    code = (
        "import sys, json, io, contextlib\n"
        "from memplan.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['time', 'gpt2', '--gpus', '16', '--gpu', 'a100-80gb', '--steps', '400000',\n"
        "               '--global-batch', '512', '--seq', '1024', '-b', '32', '--json'])\n"
        "assert rc == 0, rc\n"
        "d = json.loads(buf.getvalue())\n"
        "print(json.dumps({k: d[k] for k in ('flops_per_token', 'tokens_per_second', 'step_seconds', 'days',\n"
        "                                     'gpu_hours', 'cost')}))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    keys = json.loads(out[0])
    assert all(v is not None for v in keys.values())
    assert out[1] == "False"


def test_cli_errors_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "memplan", "time", "gpt2", "--gpu", "a100-80gbb", "--steps", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "did you mean 'a100-80gb'" in proc.stderr
