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
    assert c.flops_per_step >= c.model_flops_per_step * 0.5
    assert snap.stat().st_size > 0
    fake = measure_training_step(setup("llama", "bf16-mixed"), device="fake", model_source="reference")
    # same tensors on cuda and fake except the optimizer's implementation (foreach on cuda, for-loop on fake)
    assert r.weights == fake.weights and r.master_weights == fake.master_weights
