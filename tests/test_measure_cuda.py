"""measure/cuda.py: PaLM MFU arithmetic by hand on cpu; the allocator/NVML path on a GPU (skipped without one)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from memplan.measure.cuda import median_seconds, model_flops_per_step, utilization  # noqa: E402
from tests.measure_archs import ARCHS, setup  # noqa: E402


def test_model_flops_follow_palm_appendix_b_by_hand():
    # tiny llama: 151,872 parameters, untied 512x64 input embedding (a lookup: no FLOPs) -> N = 119,104
    # per token 6N + 12*L*H*Q*T = 714,624 + 12*2*4*16*32 = 763,776; 2 x 32 tokens
    assert model_flops_per_step(ARCHS["llama"], micro_batch=2, seq=32) == 64 * 763_776


def test_model_flops_keep_a_tied_embedding_and_drop_learned_positions():
    # tiny gpt2: 136,960 parameters; tied (the LM head matmul uses it), learned positions 64x64 dropped
    n = 136_960 - 64 * 64
    assert model_flops_per_step(ARCHS["gpt2"], 1, 16) == 16 * (6 * n + 12 * 2 * 4 * 16 * 16)


@pytest.mark.parametrize("source", ["reference", "hf"])
def test_flop_counter_on_eager_attention_equals_palm_by_hand(source):
    # FlopCounterMode counts matmuls only: 6 x the 118,784 matmul weights (151,872 minus the 32,768 embedding
    # lookup and 320 norm weights) per token, plus QK^T and PV: 12*L*H*Q*T per token (PaLM appendix B)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from memplan.measure.runner import _Phases, _Step

    with FakeTensorMode():
        step = _Step(setup("llama", "fp32", micro_batch=2, seq=32, attention="eager"), "fake", source, None, 0)
        counter = FlopCounterMode(display=False)
        with counter:
            step.run(_Phases([]))
    assert counter.get_total_flops() == 64 * (6 * 118_784 + 12 * 2 * 4 * 16 * 32)


def test_utilization_and_median():
    assert utilization(989.4e12, 1.0, 989.4) == pytest.approx(1.0)
    assert utilization(None, 1.0, 989.4) is None and utilization(1e12, 1.0, None) is None
    assert median_seconds([3.0, 1.0, 2.0]) == 2.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_step_allocator_figures_bound_the_tensor_figures(tmp_path):
    from memplan.measure.runner import measure_training_step

    snap = tmp_path / "snap.pickle"
    r = measure_training_step(setup("llama", "bf16-mixed"), device="cuda", model_source="reference",
                              cuda_options={"timed_steps": 3, "snapshot": str(snap)})
    c = r.cuda
    # the allocator rounds every block up to 512 B, so it holds at least the tensor bytes
    assert r.peak_allocated >= r.tracked_peak
    assert c.reserved_peak_bytes >= r.peak_allocated
    assert c.step_seconds > 0 and len(c.step_seconds_all) == 3
    # PaLM's 6N counts norm weights too (not matmuls): within a few percent of what FlopCounterMode counts
    assert 0.85 * c.model_flops_per_step <= c.flops_per_step <= 1.15 * c.model_flops_per_step
    assert snap.stat().st_size > 0
    fake = measure_training_step(setup("llama", "bf16-mixed"), device="fake", model_source="reference")
    # same tensors on cuda and fake except the optimizer's implementation (foreach on cuda, for-loop on fake)
    assert r.weights == fake.weights and r.master_weights == fake.master_weights


class _FakeCuda:
    """Stands in for torch.cuda's allocator statistics, so the per-phase bookkeeping is tested without a GPU."""

    def __init__(self):
        self.peak = {"forward": 10, "loss": 12, "backward": 30, "optimizer_step": 20, "zero_grad": 8, "done": 8}
        self.phase = None

    def stats(self, _device=None):
        p = self.peak.get(self.phase, 0) << 20
        return {"allocated_bytes.all.peak": p, "reserved_bytes.all.peak": p + (4 << 20),
                "active_bytes.all.peak": p, "requested_bytes.all.peak": p - 100}


def test_cuda_session_bookkeeping_without_a_gpu(monkeypatch):
    import memplan.measure.cuda as cuda_mod
    from memplan.measure.runner import _Phases, _Step

    fake = _FakeCuda()
    monkeypatch.setattr(torch.cuda, "memory_stats", fake.stats)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *_: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *_: 40 << 20)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H200")
    monkeypatch.setattr(cuda_mod, "nvml_info", lambda _i: {"driver": "560.35", "total": 150 << 30, "used": 600 << 20})
    step = _Step(setup("llama", "bf16-mixed"), "cpu", "reference", None, seed=0)
    session = cuda_mod.CudaSession(step, timed_steps=0, count_flops=False)
    session.times = [0.2, 0.1, 0.3]  # as CUDA events would have measured them

    class Tracking:  # switch the fake allocator's phase as the runner switches phases
        def set_phase(self, name):
            fake.phase = name

    phases = _Phases([session, Tracking()])  # the session closes the previous phase before the switch
    step.run(phases)
    session.after_measured_step(phases)
    assert session.phase_stats["backward"]["allocated"] == 30 << 20
    assert session.allocated_peak == 30 << 20  # the largest phase peak (backward), not the "done" tail
    assert session.reserved_peak == 34 << 20
    info = session.info()
    assert info.context_overhead_bytes == (600 - 40) << 20  # NVML used - reserved at the same moment
    assert info.step_seconds == 0.2  # the median
    assert info.peak_tflops == 989.4  # the H200 profile's dense bf16 peak, found by its device-name alias
    mf = model_flops_per_step(ARCHS["llama"], 2, 32)
    assert info.mfu == pytest.approx(mf / (0.2 * 989.4e12))


# ---- issue 25: what a first GPU run would hit, exercised on the CPU -----------------------------------------
class _Proc:
    def __init__(self, pid, used):
        self.pid, self.usedGpuMemory = pid, used


def _stub_nvml(monkeypatch, **raising):
    """pynvml's own functions, each either answering or raising its documented NVMLError subclass."""
    pynvml = pytest.importorskip("pynvml")
    import os

    mem = type("Mem", (), {"total": 80 << 30, "used": 5 << 30})()
    answers = {"nvmlInit": None, "nvmlShutdown": None, "nvmlDeviceGetHandleByUUID": "h",
               "nvmlDeviceGetHandleByIndex": "h", "nvmlSystemGetDriverVersion": b"580.159.04",
               "nvmlDeviceGetMemoryInfo": mem,
               "nvmlDeviceGetComputeRunningProcesses": [_Proc(1, 1 << 30), _Proc(os.getpid(), 900 << 20)]}
    for name, value in answers.items():
        if name in raising:
            code = raising[name]

            def fn(*_a, _code=code):
                raise pynvml.NVMLError(_code)  # NVMLError.__new__ returns the subclass for the code
        else:
            def fn(*_a, _v=value):
                return _v
        monkeypatch.setattr(pynvml, name, fn)
    return pynvml


def test_nvml_queries_refused_in_a_vm_are_notes_not_crashes(monkeypatch):
    from memplan.measure.cuda import nvml_info

    pynvml = pytest.importorskip("pynvml")
    codes = {"nvmlSystemGetDriverVersion": pynvml.NVML_ERROR_NOT_SUPPORTED,
             "nvmlDeviceGetMemoryInfo": pynvml.NVML_ERROR_NO_PERMISSION,
             "nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NOT_SUPPORTED,
             "nvmlShutdown": pynvml.NVML_ERROR_UNINITIALIZED}
    assert isinstance(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)
    _stub_nvml(monkeypatch, **codes)
    got = nvml_info(0, uuid="GPU-x")
    assert got["driver"] is None and got["total"] is None and got["used"] is None
    assert "driver version" in got["note"] and "running processes" in got["note"]


def test_nvml_uses_this_process_figure_never_the_device_wide_one(monkeypatch):
    import os

    from memplan.measure.cuda import nvml_info

    _stub_nvml(monkeypatch)
    got = nvml_info(0, uuid="GPU-x")
    assert got["used"] == 900 << 20 and got["device_used"] == 5 << 30 and got["driver"] == "580.159.04"
    pynvml = _stub_nvml(monkeypatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda _h: [_Proc(os.getpid() + 1, 1)])
    got = nvml_info(0, uuid="GPU-x")
    # before: `used` silently became the whole device's used memory; now absent, and said so
    assert got["used"] is None and got["device_used"] == 5 << 30 and "does not list this PID" in got["note"]


def test_tf32_is_read_through_the_new_api_once_it_was_used():
    from memplan.measure.cuda import set_tf32_matmul, tf32_matmul_enabled

    matmul = torch.backends.cuda.matmul
    restore = set_tf32_matmul(True)
    try:
        assert tf32_matmul_enabled() is True
        if hasattr(matmul, "fp32_precision"):
            with pytest.raises(RuntimeError):  # the legacy read this fixes (torch >= 2.9)
                matmul.allow_tf32  # noqa: B018
        inner = set_tf32_matmul(False)
        assert tf32_matmul_enabled() is False
        inner()
        assert tf32_matmul_enabled() is True
    finally:
        restore()
    assert tf32_matmul_enabled() is False


def test_causal_sdpa_flops_are_the_triangle_not_the_square():
    # FlopCounterMode counts the full s x s square for a causal fused kernel (flop_counter.sdpa_flop_count);
    # the spy takes off what the kernel skips: s(s+1)/2 of s^2 query-key pairs remain
    from torch.utils.flop_counter import FlopCounterMode

    from memplan.measure.cuda import AttentionSpy

    b, h, s, d = 2, 4, 64, 16
    q, k, v = (torch.randn(b, h, s, d, device="meta") for _ in range(3))
    counter, spy = FlopCounterMode(display=False), AttentionSpy()
    with counter, spy:
        torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True)
    full = 2 * (2 * b * h * s * s * d)  # QK^T and PV
    assert counter.get_total_flops() == full
    assert full - spy.causal_excess_flops == full * (s + 1) // (2 * s)
    assert spy.kernels == {"efficient": 1}
    spy2 = AttentionSpy()
    with spy2:  # not causal: nothing taken off
        torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False)
    assert spy2.causal_excess_flops == 0


def test_peak_phase_and_peak_bytes_come_from_the_allocator(monkeypatch):
    import memplan.measure.cuda as cuda_mod
    from memplan.measure.runner import _Phases, _Step

    fake = _FakeCuda()
    fake.peak["optimizer_step"] = 50  # the allocator peaks in the optimizer step (e.g. foreach temporaries)
    monkeypatch.setattr(torch.cuda, "memory_stats", fake.stats)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *_: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    step = _Step(setup("llama", "bf16-mixed"), "cpu", "reference", None, seed=0)
    session = cuda_mod.CudaSession(step, timed_steps=0, count_flops=False)

    class Tracking:
        def set_phase(self, name):
            fake.phase = name

    step.run(_Phases([session, Tracking()]))
    session._close_phase()
    assert session.peak_phase == "optimizer_step"


def test_expected_sdpa_kernel_follows_the_torch_release():
    from memplan.measure.cuda import expected_sdpa_kernels, library_versions

    bf16, fp32 = torch.bfloat16, torch.float32
    assert expected_sdpa_kernels("cuda", bf16, gqa=True, mask=False) == ("flash", "cudnn")
    assert expected_sdpa_kernels("cuda", bf16, gqa=False, mask=True) == ("efficient", "cudnn")
    # the memory-efficient kernel has no GQA before torch 2.13: fp32 GQA runs the math path (s x s per layer)
    assert expected_sdpa_kernels("cuda", fp32, gqa=True, mask=False, torch_version="2.11.0+cu130") == ("math",)
    assert expected_sdpa_kernels("cuda", fp32, gqa=True, mask=False, torch_version="2.13.0") == ("efficient",)
    assert expected_sdpa_kernels("cuda", fp32, gqa=False, mask=False, torch_version="2.11.0") == ("efficient",)
    v = library_versions()
    assert v["torch"] == torch.__version__ and v["allocator_config"]


def test_allocated_beyond_the_tracked_tensors_is_said(monkeypatch):
    # the cuBLAS workspaces live in the caching allocator (max_memory_allocated includes them): the session says how
    # much the allocator holds beyond the tensors the tracker counts
    import memplan.measure.cuda as cuda_mod
    from memplan.measure.runner import _Phases, _Step

    fake = _FakeCuda()
    for name, fn in {"memory_stats": fake.stats, "reset_peak_memory_stats": lambda *_: None,
                     "synchronize": lambda *_: None, "current_device": lambda: 0,
                     "memory_reserved": lambda *_: 40 << 20, "memory_allocated": lambda *_: (64 << 20) + 1000}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    monkeypatch.setattr(cuda_mod, "nvml_info", lambda _i: {})
    step = _Step(setup("llama", "bf16-mixed"), "cpu", "reference", None, seed=0)
    session = cuda_mod.CudaSession(step, timed_steps=0, count_flops=False)
    session.after_measured_step(_Phases([]), tracked_bytes=1000)
    assert session.untracked_bytes == 64 << 20
    assert any("64.0 MiB" in n and "cuBLAS" in n for n in session.notes)
