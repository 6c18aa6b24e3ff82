"""Step time: the op walk's pieces checked against the papers they come from (GEMM shapes, pipeline bubbles,
collective volumes, overlap), end-to-end figures meaning what they say, measured records, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import memplan.catalog as catalog
from memplan.answers.time import estimate_time
from memplan.errors import MemplanError
from memplan.perf.ops import Context, LayerWalk
from memplan.perf.pipeline import one_f_one_b
from memplan.perf.time import build_step_model, gpu_hours_for
from memplan.setups import training_setup
from tests.helpers import run_cli
from tests.published_runs import megatron_gpt

A100 = catalog.get_gpu("a100-80gb")
H100 = catalog.get_gpu("h100-sxm")


def gpt_setup(layers=4, hidden=1024, heads=16, **kw):
    kw.setdefault("seq", 2048)
    return training_setup(megatron_gpt(layers, hidden, heads, seq=kw["seq"]), **kw)


# ---- published training times -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layers,hidden,heads,gpus,tp,pp,batch,tokens,tflops,paper_days,eq4_days", [
    # Narayanan et al. 2021 (Megatron-LM), sec. 5.1: GPT-3 175B, 300B tokens, 1024 A100s at 140 TFLOP/s: ~34 days.
    (96, 12288, 96, 1024, 8, 8, 1536, 300e9, 140.0, 34, 33.8),
    # ... and the 1T model (Table 1: 128 layers, h 25600, 160 heads), 450B tokens, 3072 GPUs at 163 TFLOP/s: ~84 days.
    (128, 25600, 160, 3072, 8, 64, 3072, 450e9, 163.0, 84, 83.9),
])
def test_megatron_training_days(layers, hidden, heads, gpus, tp, pp, batch, tokens, tflops, paper_days, eq4_days):
    est = estimate_time(gpt_setup(layers, hidden, heads, gpus=gpus, tp=tp, pp=pp, recompute="full"), A100,
                        tokens=tokens, global_batch=batch, achieved_tflops=tflops, with_memory=False)
    # The paper's eq. 4, 8TP/(nX), drops the s/6h attention term of eq. 3; with the paper's P (Table 1: 174.6B and
    # 1008B) it gives 33.8 and 83.9 days, printed as "about 34" and "about 84".
    P = {96: 174.6e9, 128: 1008e9}[layers]
    assert 8 * tokens * P / (gpus * tflops * 1e12) / 86400 == pytest.approx(eq4_days, abs=0.05)
    # end to end: the step takes hardware FLOPs / X and the run prints X; eq. 3 adds s/6h over eq. 4
    assert est.achieved_tflops_per_gpu == pytest.approx(tflops)
    assert est.days == pytest.approx(eq4_days * (1 + 2048 / (6 * hidden)), rel=0.01)
    assert abs(est.days - paper_days) / paper_days < 0.03
    assert est.layout.grad_accum == batch // (gpus // (tp * pp))
    assert est.step_source.startswith("--achieved-tflops") and est.predicted_step_seconds > 0


def test_llama_65b_gpu_hours():
    # Touvron et al. 2023 (LLaMA), sec. 2.4: 380 tokens/s/GPU on 2048 A100-80GB, 1.4T tokens, ~21 days;
    # Table 15: 1,022,362 GPU-hours. 1.4T is rounded: 1.4e12 / 380 / 3600 = 1,023,392 (0.1% above the table).
    assert gpu_hours_for(1.4e12, 380) == pytest.approx(1_022_362, rel=1.5e-3)
    assert gpu_hours_for(1.4e12, 380) / 2048 / 24 == pytest.approx(21, abs=0.2)


def test_mfu_and_measured_are_end_to_end():
    s = gpt_setup(gpus=1, micro_batch=8)
    est = estimate_time(s, A100, steps=10, mfu=0.5, with_memory=False)
    assert est.step_seconds == pytest.approx(est.flops_per_token * 8 * 2048 / (312e12 * 0.5))
    assert est.mfu == pytest.approx(0.5) and est.days == pytest.approx(10 * est.step_seconds / 86400)
    with pytest.raises(MemplanError, match="at most one"):
        estimate_time(s, A100, steps=1, mfu=0.4, achieved_tflops=100, with_memory=False)
    with pytest.raises(MemplanError, match="--achieved-tflops must be"):
        estimate_time(s, A100, steps=1, achieved_tflops=400, with_memory=False)


def test_measured_record_gives_the_step_and_the_walk_beside_it(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"measured": {"cuda": {"achieved_tflops": 150.0, "step_seconds": 0.9}}}))
    est = estimate_time(gpt_setup(gpus=1, micro_batch=8), A100, steps=1, measured=str(path), with_memory=False)
    assert est.achieved_tflops_per_gpu == pytest.approx(150.0) and est.measured_step_seconds == 0.9
    assert est.predicted_step_seconds == pytest.approx(est.walk.step_seconds)


# ---- the walk ------------------------------------------------------------------------------------------------------
def test_gemm_shapes_per_micro_batch_and_tp_shard():
    # Megatron (Shoeybi et al. 2019 sec. 3): QKV and fc1 column-parallel (N / tp), proj and fc2 row-parallel (K / tp);
    # backward: dgrad (M = tokens, N = in, K = out) and wgrad (M = in, N = out, K = tokens)
    m = megatron_gpt(2, 1024, 16).arch
    from memplan.perf.execution import execution_profile

    ctx = Context(micro_batch=2, seq=2048, tp=2, attention="eager")
    walk = LayerWalk(m, m.groups[0].layer, ctx, execution_profile("megatron-2022"))
    ph = walk.phases("none")
    T, h = 2 * 2048, 1024
    fwd = [(o.M, o.N, o.K) for o in ph.fwd if o.kind == "gemm"]
    assert fwd == [(T, 3 * h // 2, h), (T, h, h // 2), (T, 4 * h // 2, h), (T, h, 4 * h // 2)]
    bwd = [(o.M, o.N, o.K) for o in ph.bwd if o.kind == "gemm"]
    assert bwd[:2] == [(T, h, 3 * h // 2), (h, 3 * h // 2, T)]
    # the attention core as the 2021/2022 code ran it: batched Q K^T and P V over b x heads/tp
    core = [(o.M, o.N, o.K, o.batch) for o in ph.fwd if o.kind == "attention"]
    assert core == [(2048, 2048, 64, 2 * 8), (2048, 64, 2048, 2 * 8)]
    # full recompute = the forward again; selective = the attention core again (Korthikanti et al. sec. 4.2)
    assert len(walk.phases("full").recompute) == len(ph.fwd)
    assert {o.category for o in walk.phases("selective").recompute} == {"attention"}


def test_kernel_scale_scales_the_kernels():
    s = gpt_setup(layers=8, hidden=4096, heads=32, gpus=1, micro_batch=4)
    base = estimate_time(s, A100, steps=1, with_memory=False)
    fast = estimate_time(s, A100, steps=1, kernel_scale=1.5, with_memory=False)  # 2.0 would pass the dense peak
    assert fast.walk.gemm_seconds == pytest.approx(base.walk.gemm_seconds / 1.5, rel=0.01)
    assert fast.walk.memory_bound_seconds == pytest.approx(base.walk.memory_bound_seconds / 1.5, rel=0.02)
    assert any("--kernel-scale 1.5" in k.name for k in fast.kernels)
    assert any("gemm" in k.name.lower() and "NVIDIA" in k.source for k in base.kernels)  # curve with its source


def test_pipeline_schedule_formulas():
    # Narayanan et al. 2021 sec. 2.2: 1F1B takes (m + p - 1) steps of one micro-batch's stage time; interleaving
    # with v chunks per device divides the bubble by v
    step = one_f_one_b([1.0] * 4, [1.0] * 4, micro_batches=8, virtual_stages=1, send_seconds=0.0)
    assert step.seconds == pytest.approx(8 + 3) and step.bubble_seconds == pytest.approx(3)
    inter = one_f_one_b([1.0] * 4, [1.0] * 4, micro_batches=8, virtual_stages=2, send_seconds=0.0)
    assert inter.bubble_seconds == pytest.approx(1.5)
    # the busiest stage sets the pace
    uneven = one_f_one_b([1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 2.0], micro_batches=8, virtual_stages=1,
                         send_seconds=0.0)
    assert uneven.busiest == 3 and uneven.steady_seconds == pytest.approx(16)


def test_uneven_stages_and_the_lm_head_on_the_last_stage():
    s = gpt_setup(layers=8, hidden=1024, heads=16, gpus=4, pp=4, micro_batch=1, grad_accum=8)
    even = estimate_time(s, A100, steps=1, with_memory=False)
    stages = even.walk.stages
    assert [st.layers for st in stages] == [2, 2, 2, 2]
    assert even.walk.busiest_stage == 3  # the LM head and the loss
    lighter = estimate_time(s.model_copy(update={"layout": s.layout.replace(first_stage_layers=1,
                                                                            last_stage_layers=1)}),
                            A100, steps=1, with_memory=False)
    assert [st.layers for st in lighter.walk.stages] == [1, 3, 3, 1]
    assert lighter.walk.stages[-1].backward_seconds < stages[-1].backward_seconds


def test_tensor_parallel_overlap_follows_the_engine():
    # 2021: every TP all-reduce blocking; 2022: the column-parallel backward all-reduce under the wgrad GEMM
    s = gpt_setup(layers=4, hidden=4096, heads=32, gpus=8, tp=8, micro_batch=4, engine="megatron")
    old = estimate_time(s, A100, steps=1, execution="megatron-2021", with_memory=False).walk
    new = estimate_time(s, A100, steps=1, execution="megatron-2022", with_memory=False).walk
    assert old.tp_hidden_seconds == 0 and new.tp_hidden_seconds > 0
    assert new.tp_exposed_seconds < old.tp_exposed_seconds
    none = estimate_time(s, A100, steps=1, execution="megatron-2022", overlap="none", with_memory=False).walk
    assert none.tp_hidden_seconds == 0
    everything = estimate_time(s, A100, steps=1, overlap="all", with_memory=False)
    assert everything.walk.tp_exposed_seconds == 0 and everything.step_seconds <= none.step_seconds


def test_data_parallel_overlap_and_nics():
    # torch DDP: the all-reduce runs during the last micro-batch's backward, the last bucket exposed; a group with
    # g ranks per node drives g NICs (NCCL: one ring per NIC)
    s = gpt_setup(layers=12, hidden=2048, heads=16, gpus=16, micro_batch=4)
    est = estimate_time(s, A100, steps=1, execution="megatron-2021-torch-ddp", with_memory=False)
    dp = next(c for c in est.comm if c.parallelism == "dp")
    assert dp.link == "infiniband-hdr" and dp.group == 16
    assert dp.bandwidth_gbps == pytest.approx(8 * 25 * 0.9)  # 8 ranks per node x HDR x efficiency
    n = est.walk.stages[0]
    assert dp.exposed_seconds == pytest.approx(max(dp.seconds * 25e6 / (dp.bytes_per_step / (2 * 15 / 16)),
                                                   dp.seconds - n.backward_seconds), rel=1e-6)
    local = estimate_time(s, A100, steps=1, execution="megatron-2021", with_memory=False)
    assert next(c for c in local.comm if c.parallelism == "dp").exposed_seconds == pytest.approx(dp.seconds)
    inside = estimate_time(gpt_setup(layers=12, hidden=2048, heads=16, gpus=8, micro_batch=4), A100, steps=1,
                           with_memory=False)
    assert next(c for c in inside.comm if c.parallelism == "dp").link == "nvlink3"


def test_zero_volumes_follow_the_zero_paper():
    # Rajbhandari et al. 2020 sec. 7.2: DP and ZeRO-1/2 move 2 Psi per GPU, ZeRO-3 3 Psi (1.5x)
    vol = {}
    for z in range(4):
        s = gpt_setup(layers=4, hidden=2048, heads=16, gpus=16, zero=z, micro_batch=1)
        est = estimate_time(s, A100, steps=1, with_memory=False)
        vol[z] = sum(c.bytes_per_step for c in est.comm if c.parallelism == "dp")
    assert vol[1] == pytest.approx(vol[0]) and vol[2] == pytest.approx(vol[0])
    assert vol[3] == pytest.approx(1.5 * vol[0])


def test_offload_costs_pcie_traffic_and_the_cpu_optimizer_step():
    s = gpt_setup(layers=12, hidden=2048, heads=16, gpus=8, zero=1, offload_optimizer="cpu")
    est = estimate_time(s, H100, steps=1, cpu_bandwidth_gbps=100, with_memory=False)
    pcie = next(c for c in est.comm if c.name.startswith("optimizer offload"))
    cpu = next(c for c in est.comm if c.name.startswith("CPU optimizer step"))
    n = s.model.parameters.total
    assert pcie.link == "pcie5" and pcie.bytes_per_step == pytest.approx(n / 8 * (2 + 2), rel=1e-3)
    assert cpu.seconds == pytest.approx(28 * n / 100e9, rel=1e-3)


def test_global_batch_sets_accumulation_and_cost_uses_the_labelled_price():
    s = gpt_setup(layers=12, hidden=768, heads=12, gpus=16, micro_batch=4)
    est = estimate_time(s, H100, tokens=1e9, global_batch=512, with_memory=False)
    assert est.layout.grad_accum == 512 // (4 * 16) and est.steps == -(-int(1e9) // (512 * 2048))
    assert est.cost == pytest.approx(est.gpu_hours * H100.price_per_hour) and "labelled" in est.price_source
    with pytest.raises(MemplanError, match="not a multiple"):
        estimate_time(s, H100, tokens=1e9, global_batch=100, with_memory=False)
    with pytest.raises(MemplanError, match="--tokens"):
        estimate_time(s, H100, with_memory=False)


def test_a_layout_that_does_not_fit_says_so_first(capsys):
    code, out, err = run_cli(capsys, "time", "llama-2-70b", "--gpu", "a100-80gb", "--gpus", "8", "--tokens", "1B")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("DOES NOT FIT") and "memplan plan llama-2-70b" in first


# ---- bad input and records -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--kernel-scale", "0"), ("--kernel-scale", "nan"), ("--kernel-scale", "inf"),
                                        ("--achieved-tflops", "-1"), ("--cpu-bandwidth", "0")])
def test_bad_efficiencies_and_bandwidths_are_one_line(capsys, flag, value):
    code, _, err = run_cli(capsys, "time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B", flag, value)
    assert code == 2 and err.count("\n") <= 1 and flag in err and "Traceback" not in err


def test_system_records_of_the_wrong_kind_are_one_line(capsys, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"kind": "memplan.bench", "matmul": []}))
    code, _, err = run_cli(capsys, "time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B", "--system", str(bench))
    assert code == 2 and "not a memplan bench --system record" in err and err.count("\n") <= 1
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps(_system_record(device="cpu")))
    code, _, err = run_cli(capsys, "time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B", "--system", str(cpu))
    assert code == 2 and "not a GPU" in err
    bad = tmp_path / "bad.json"
    rec = _system_record()
    rec["gemms"][0]["seconds"] = -1
    bad.write_text(json.dumps(rec))
    code, _, err = run_cli(capsys, "time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B", "--system", str(bad))
    assert code == 2 and "seconds" in err and err.count("\n") <= 1


def _system_record(device="cuda", seconds=None):
    M, N, K = 4096, 3072, 1024
    t = seconds or 2 * M * N * K / 200e12
    return {"kind": "memplan.system", "created_utc": "2026-01-01T00:00:00+00:00", "device": device,
            "device_name": "NVIDIA A100-SXM4-80GB", "gpu_profile": "a100-80gb", "torch_version": "2.13.0",
            "dtype": "bf16", "gemms": [{"M": M, "N": N, "K": K, "dtype": "bf16", "seconds": t,
                                        "tflops": 2 * M * N * K / t / 1e12}],
            "bandwidth": [{"bytes": 2 * 2**30, "seconds": 2 * 2**30 / 1.8e12, "gbps": 1800.0}]}


def test_a_system_record_replaces_the_profile(tmp_path):
    path = tmp_path / "sys.json"
    path.write_text(json.dumps(_system_record()))
    s = gpt_setup(layers=2, hidden=1024, heads=16, gpus=1, micro_batch=2)
    sm_profile = build_step_model(s, A100)
    from memplan.perf.system import load_system

    sm = build_step_model(s, A100, system=load_system(str(path), A100))
    # the exact shape timed: its time over the profile's in-training factor
    measured = 2 * 4096 * 3072 * 1024 / 200e12
    assert sm.k.gemm_seconds(4096, 3072, 1024) == pytest.approx(measured / sm_profile.k.gemm_scale)
    # other shapes: the curve rescaled by the measured/curve ratio
    assert sm.k.gemm_scale != sm_profile.k.gemm_scale
    assert sm.k.mem_curve(4e9) == pytest.approx(1800 / 2039)
    est = estimate_time(s, A100, steps=1, system=str(path), with_memory=False)
    assert any("memplan bench --system record" in k.source for k in est.kernels)


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
        "print(json.dumps({k: d['layout'][k] for k in ('gpus', 'dp', 'tp', 'pp', 'zero', 'micro_batch',\n"
        "                                              'grad_accum', 'recompute')}))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert all(v is not None and (not isinstance(v, float) or math.isfinite(v)) for v in json.loads(out[0]).values())
    assert json.loads(out[1])["dp"] == 16
    assert out[2] == "False"


def test_cli_errors_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "memplan", "time", "gpt2", "--gpu", "a100-80gbb", "--steps", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "did you mean 'a100-80gb'" in proc.stderr


def test_unknown_execution_profile_has_a_did_you_mean(capsys):
    code, _, err = run_cli(capsys, "time", "gpt2", "--gpu", "a100-80gb", "--tokens", "1B", "--execution",
                           "megatron-202")
    assert code == 2 and "did you mean" in err


def test_lora_freezes_the_base_weights():
    # LoRA (Hu et al. 2021): the base takes no weight gradient, so its weight-gradient GEMMs do not run and only
    # the adapters' gradients are reduced and stepped
    import memplan

    full = memplan.time("llama-3-8b", gpu="a100-80gb", tokens=1e9, seq=2048, micro_batch=4)
    lora = memplan.time("llama-3-8b", gpu="a100-80gb", tokens=1e9, seq=2048, micro_batch=4, lora_rank=16)
    # forward (1) + dgrad (1) of the 2 + 1 GEMM passes of full training: about 2/3 of the GEMM time
    assert lora.walk.gemm_seconds == pytest.approx(full.walk.gemm_seconds * 2 / 3, rel=0.05)
    assert lora.walk.optimizer_seconds < 0.01 * full.walk.optimizer_seconds


# ---- at scale (issue 22): all-to-all per NIC, FP8 as it runs, interleaving over uneven layers -------------------
def _network(gpu=H100):
    from memplan.perf.comm import Network, resolve_links
    from memplan.perf.efficiency import efficiency_profile

    return Network(resolve_links(gpu), efficiency_profile(gpu), 8)


def test_all_to_all_over_nodes_leaves_through_each_gpus_own_nic():
    # EP 64 over 8 nodes of 8: each GPU sends 56/64 of its tokens to other nodes through its one 400 Gb/s NIC
    # (DGX H100: one ConnectX-7 per GPU), concurrently 7/64 over NVLink; not 8 NICs' worth, as a ring would get
    net = _network()
    nbytes = 470e6
    t = net.collective("all_to_all", nbytes, 64, 8) - net.inter_latency
    assert t == pytest.approx(56 / 64 * nbytes / net.nic, rel=1e-9)
    ring_like = 63 / 64 * nbytes / min(net.intra_busbw, 8 * net.nic)
    assert t > 6 * ring_like
    # inside a node it is NVLink's
    assert net.collective("all_to_all", nbytes, 8, 8) == pytest.approx(net.intra_latency + 7 / 8 * nbytes /
                                                                      net.intra_busbw)
    # the bus bandwidth the output shows for it is one NIC's, scaled by (n-1)/(n-ranks per node)
    assert net.all_to_all_busbw(64, 8) == pytest.approx(net.nic * 63 / 56)


def test_fp8_runs_the_linear_gemms_at_the_profiles_speedup_and_attention_at_bf16():
    from memplan.perf.efficiency import Kernels, efficiency_profile
    from memplan.spec.training import DType

    prof = efficiency_profile(H100)
    bf16, fp8 = Kernels(H100, DType.bf16), Kernels(H100, DType.fp8)
    big = (8192, 8192, 8192)
    ratio = bf16.gemm_seconds(*big) / fp8.gemm_seconds(*big, elem_bytes=1)
    assert ratio == pytest.approx(prof.fp8_gemm_speedup.value) and 1.5 < ratio < 1.7  # not the peaks' 2x
    assert fp8.flash_seconds(1e12, "fwd") == pytest.approx(bf16.flash_seconds(1e12, "fwd"))
    assert fp8.gemm_seconds(*big, high_precision=True) == pytest.approx(bf16.gemm_seconds(*big))


def test_fp8_adds_te_cast_transposes_and_keeps_the_router_bf16():
    s = training_setup("llama-3-8b", gpus=8, tp=1, micro_batch=1, grad_accum=1, seq=4096, precision="fp8-mixed")
    sm = build_step_model(s, H100)
    ctx = sm.context(s.layout)
    ph = LayerWalk(sm.model, sm.model.groups[0].layer, ctx, sm.ex).phases("none")
    casts = [o for o in ph.fwd if o.name.startswith("FP8 amax")]
    gemms = [o for o in ph.fwd if o.kind == "gemm"]
    assert casts and len(casts) == len(gemms)
    assert sum(o.nbytes for o in casts) == pytest.approx(sum(g.M * g.K * g.batch * 3 for g in gemms))
    assert any(o.name.startswith("FP8 amax") for o in ph.bwd)
    b = estimate_time(s.model_copy(update={"recipe": training_setup("llama-3-8b", gpus=8, seq=4096).recipe}), H100,
                      steps=1, with_memory=False)
    f = estimate_time(s, H100, steps=1, with_memory=False)
    assert f.walk.gemm_seconds < b.walk.gemm_seconds / 1.4 and f.walk.attention_seconds == pytest.approx(
        b.walk.attention_seconds, rel=1e-6)
    assert f.walk.memory_bound_seconds > b.walk.memory_bound_seconds


@pytest.mark.parametrize("model,gpus,pp,v,ends", [
    ("llama-3.1-405b", 1024, 8, 8, 15),   # Megatron-Bridge 405B recipe: 126 layers, (126 + 2) / (8 x 8) = 2 a chunk
    ("deepseek-v3", 256, 8, 4, None),     # 61 layers on pp 8 x v 4 (--pipeline-model-parallel-layout)
])
def test_interleaving_over_layers_that_do_not_divide_pp_x_v(model, gpus, pp, v, ends):
    kw = dict(ep=32) if model == "deepseek-v3" else dict(tp=8, cp=2, sequence_parallel=True)
    s = training_setup(model, gpus=gpus, pp=pp, virtual_stages=v, micro_batch=1, grad_accum=2 * pp, seq=4096,
                       engine="megatron", **kw)
    one = training_setup(model, gpus=gpus, pp=pp, virtual_stages=1, micro_batch=1, grad_accum=2 * pp, seq=4096,
                         engine="megatron", **kw)
    est = estimate_time(s, H100, steps=1, execution="megatron-core", with_memory=False)
    est1 = estimate_time(one, H100, steps=1, execution="megatron-core", with_memory=False)
    assert est.walk.bubble_seconds == pytest.approx(est1.walk.bubble_seconds / v, rel=1e-6)
    if ends:
        layers = [st.layers for st in est.walk.stages]
        assert layers[0] == layers[-1] == ends and sum(layers) == 126  # embedding and loss count as a layer


def test_planner_proposes_the_embedding_and_loss_accounted_interleaving():
    from memplan.perf.search.enumerate import _interleavable

    assert _interleavable(126, 8, 8) and _interleavable(126, 16, 8) and not _interleavable(126, 8, 5)
    assert _interleavable(96, 8, 4) and not _interleavable(61, 8, 4)


def test_plan_says_a_reference_that_does_not_fit_is_not_ranked():
    # issue 22: "rank 1 among the layouts that fit" was printed for a reference just called unfit
    from memplan.perf.plan import plan

    base = training_setup("gpt2-medium", gpus=16, seq=1024)
    unfit = training_setup("gpt2-medium", gpus=16, seq=1024, micro_batch=128, grad_accum=1, recompute="none").layout
    res = plan(base, catalog.get_gpu("a100-40gb"), global_batch=2048, top=3, reference=unfit)
    assert res.reference is not None and not res.reference.fits
    assert res.reference_rank is None
    line = next(w for w in res.why if w.startswith("reference ") and "s/step" in w)
    assert "does NOT fit" in line and "not ranked" in line and "rank " not in line.split("not ranked")[0]


def test_expert_gemms_are_rated_at_the_per_expert_token_count():
    # a grouped GEMM runs each expert's problem at its own shape's efficiency (issue 22: rated by the combined
    # size before): 16 local experts of M 8192, N 768, K 2048 take 16 x one such GEMM, slower than one GEMM of the
    # combined size
    from memplan.perf.cost import op_seconds
    from memplan.perf.efficiency import Kernels
    from memplan.perf.ops import Op
    from memplan.spec.training import DType

    k = Kernels(H100, DType.bf16)
    op = Op("expert up", "gemm", "gemm", M=8192, N=768, K=2048, batch=16, tag="expert_in")
    assert op_seconds(op, k, 2.0) == pytest.approx(16 * k.gemm_seconds(8192, 768, 2048))
    assert op_seconds(op, k, 2.0) > 1.05 * k.gemm_seconds(8192, 768, 2048, 16)
    tiny = Op("expert up", "gemm", "gemm", M=2, N=64, K=64, batch=64, tag="expert_in")  # below the sweep: combined
    assert op_seconds(tiny, k, 2.0) == pytest.approx(k.gemm_seconds(2, 64, 64, 64))


def test_deepep_sends_a_token_once_per_remote_node():
    # DeepSeek-V3 on EP 64 = 8 nodes: 256 experts, top-8.  The alltoall dispatcher sends 8 x 56/64 = 7 copies of a
    # token over the network; DeepEP one per remote node hit: 7 x (1 - C(224, 8) / C(256, 8)) = 4.6
    from math import comb

    net = _network()
    per_copy = 1e6
    nbytes = 8 * per_copy
    plain = net.collective("all_to_all", nbytes, 64, 8) - net.inter_latency
    dedup = net.node_deduplicated_all_to_all(nbytes, 64, 8, 8, 256)
    hit = 1 - comb(224, 8) / comb(256, 8)
    assert dedup == pytest.approx(7 * hit * per_copy / net.nic, rel=1e-9)
    assert dedup / plain == pytest.approx(7 * hit / 7, rel=1e-9) and 0.6 < dedup / plain < 0.7
    # the profile that runs it
    from memplan.perf.execution import execution_profile

    assert execution_profile("megatron-core-deepep").ep_dispatch == "deepep"
    assert execution_profile(None, "megatron").ep_dispatch == "alltoall"
    s = training_setup("deepseek-v3", gpus=256, pp=4, ep=64, micro_batch=1, grad_accum=8, seq=4096,
                       engine="megatron")
    a = estimate_time(s, H100, steps=1, execution="megatron-core", with_memory=False)
    d = estimate_time(s, H100, steps=1, execution="megatron-core-deepep", with_memory=False)
    assert d.walk.ep_exposed_seconds < 0.75 * a.walk.ep_exposed_seconds
    assert d.walk.gemm_seconds == pytest.approx(a.walk.gemm_seconds)


def test_the_moe_all_to_all_hides_under_a_paired_micro_batch_where_the_engine_does_it():
    # DualPipe / Megatron-Core's --overlap-moe-expert-parallel-comm: the execution profile megatron-core-moe-overlap
    s = training_setup("deepseek-v3", gpus=256, pp=4, ep=64, micro_batch=1, grad_accum=8, seq=4096,
                       engine="megatron")
    plain = estimate_time(s, H100, steps=1, execution="megatron-core-deepep", with_memory=False)
    paired = estimate_time(s, H100, steps=1, execution="megatron-core-moe-overlap", with_memory=False)
    assert paired.walk.ep_exposed_seconds < 0.5 * plain.walk.ep_exposed_seconds
    assert paired.step_seconds < plain.step_seconds
    assert paired.walk.gemm_seconds > plain.walk.gemm_seconds  # GEMMs slowed while the all-to-all shares the SMs


def test_efficiency_sources_are_cut_at_a_word_and_never_inside_a_parenthesis() -> None:
    """The text table lists each efficiency with its source shortened (the whole one is in --json): a cut
    mid-word or mid-number ('ratio 271.2/290 = 0.93...') read as a wrong figure."""
    import memplan
    from memplan.report.text import brief

    e = memplan.time("llama-3.1-8b", gpu="h100-sxm", gpus=8, zero=1, tokens=10e9)
    long = [k.source for k in e.kernels if len(k.source) > 150]
    assert len(long) >= 3, "the hopper profile holds sources longer than the table's width"
    for source in long:
        short = brief(source, 150)
        assert len(short) <= 150 and short.endswith(" ...")
        kept = short[:-4]
        assert source.startswith(kept) and source[len(kept)] in " ,;:=(", (kept, source)  # a cut between words
        assert kept.count("(") == kept.count(")"), kept
