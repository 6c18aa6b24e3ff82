"""The step's timeline: which moment is the peak, the optimizer's temporaries per implementation, overheads,
the verdict, the searches and calibration."""
from __future__ import annotations

import json

import pytest

from memplan.catalog import get_gpu, resolve_model
from memplan.errors import MemplanError
from memplan.memory.calibration import load_calibration
from memplan.memory.estimate import estimate_memory
from memplan.memory.search import max_micro_batch, max_seq
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import Workload, get_optimizer, get_recipe

V7, H7 = 32000, 4096
N7 = 6_738_415_616  # Llama-2-7B


def setup(model="llama-2-7b", recipe="bf16", impl="foreach", b=1, s=4096, gpus=1, zero=0, opt="adamw", **w):
    return TrainingSetup(model=resolve_model(model), recipe=get_recipe(recipe), optimizer=get_optimizer(opt),
                         layout=Layout(gpus=gpus, zero=zero, micro_batch=b,
                                       **{k: w.pop(k) for k in list(w) if k in Layout.model_fields}),
                         workload=Workload(seq=s, optimizer_impl=impl, **w))


def phase(est, name):
    return next(p for p in est.timeline if p.name == name)


def test_for_loop_adamw_temporaries_are_a_tensor_twice_plus_the_one_before():
    # torch/optim/adam.py _single_tensor_adam: denom = (exp_avg_sq.sqrt() / bc2).add_(eps) -- sqrt and the
    # quotient of this tensor, while the previous tensor's denom is still bound. Llama's last two tensors are the
    # final norm (h) and lm_head (V x h): h + 2 V h elements of 2 bytes (bf16 states) -- the 524,296,192 B the
    # runner measures for this step.
    step = phase(estimate_memory(setup(impl="for-loop")), "optimizer_step")
    assert step.bytes["temporaries"] == 2 * (H7 + 2 * V7 * H7) == 524_296_192


def test_foreach_adamw_allocates_the_whole_group_once_and_fused_nothing():
    # _multi_tensor_adam: exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs) over the whole group
    assert phase(estimate_memory(setup(impl="foreach")), "optimizer_step").bytes["temporaries"] == 2 * N7
    assert "temporaries" not in phase(estimate_memory(setup(impl="fused")), "optimizer_step").bytes


def test_bf16_mixed_step_holds_2_2_4_8_plus_fp32_grads_plus_temporaries():
    est = estimate_memory(setup(recipe="bf16-mixed", impl="fused", s=512))
    assert est.peak_phase == "optimizer_step"
    # + the batch (int64 ids and targets) + the rotary tables' buffers (inv_freq, original_inv_freq: 64 fp32 each)
    # + the cuBLAS workspace, which the caching allocator hands out (max_memory_allocated counts it)
    cublas = next(c.bytes for c in est.components if c.name == "cuBLAS workspace")
    assert cublas == 32 * 2**20 and est.per_gpu.buffers == cublas  # CUBLAS_WORKSPACE_CONFIG ':4096:8' (sm90+)
    assert est.per_gpu.peak_allocated == (2 + 2 + 4 + 8 + 4) * N7 + 2 * 512 * 8 + 2 * 64 * 4 + cublas


def test_long_sequences_peak_at_the_start_of_backward():
    est = estimate_memory(setup(impl="fused", b=4))
    assert est.peak_phase == "backward"
    bwd = phase(est, "backward")
    assert bwd.bytes.get("gradients", 0) == 0  # set_to_none: no gradient exists yet
    assert bwd.bytes["activations"] == est.per_gpu.saved_activations
    assert est.per_gpu.activations == bwd.bytes["activations"]


def test_required_is_peak_plus_each_overhead_line_and_decides_fits():
    gpu = get_gpu("h100")
    est = estimate_memory(setup(recipe="bf16", impl="fused", s=1024, gpus=8, zero=3), gpu)
    lines = [c for c in est.components if c.category == "overheads"]
    names = {c.name for c in lines}
    assert {"CUDA context + libraries", "NCCL buffers"} <= names
    # the cuBLAS workspace is allocated through the caching allocator: inside peak_allocated, not an overhead
    assert "cuBLAS workspace" in {c.name for c in est.components if c.category == "buffers"}
    assert all(c.note for c in lines)
    assert est.per_gpu.required == est.per_gpu.peak_allocated + sum(c.bytes for c in lines)
    assert est.fits is (est.per_gpu.required <= gpu.memory_bytes)
    one = estimate_memory(setup(recipe="bf16", impl="fused", s=1024), gpu)
    assert "NCCL buffers" not in {c.name for c in one.components}


def test_ddp_keeps_a_bucket_copy_of_the_gradients():
    est = estimate_memory(setup(recipe="bf16", impl="fused", s=1024, gpus=8))
    bucket = next(c for c in est.components if c.name == "DDP gradient buckets")
    assert bucket.bytes == est.per_gpu.gradients == 2 * N7


def test_max_micro_batch_is_the_boundary():
    gpu = get_gpu("h100")
    st = setup(recipe="bf16", impl="fused", s=2048, gpus=8, zero=3)
    b = max_micro_batch(st, gpu)
    assert b >= 1
    at = st.model_copy(update={"layout": st.layout.replace(micro_batch=b)})
    over = st.model_copy(update={"layout": st.layout.replace(micro_batch=b + 1)})
    assert estimate_memory(at, gpu).fits and not estimate_memory(over, gpu).fits


def test_max_seq_is_the_boundary_and_learned_positions_cap_it():
    gpu = get_gpu("h100")
    st = setup(recipe="bf16", impl="fused", s=1024, gpus=8, zero=3, b=2)
    s = max_seq(st, gpu)
    fits = [estimate_memory(st.model_copy(update={"workload": st.workload.model_copy(update={"seq": n})}), gpu).fits
            for n in (s, s + 1)]
    assert fits == [True, False]
    assert max_seq(setup("gpt2", recipe="bf16", s=128), gpu) == 1024  # GPT-2's 1024 learned positions


def test_nothing_fits_gives_zero_and_no_architecture_is_an_error():
    tiny = get_gpu("t4")
    assert max_micro_batch(setup("llama-2-70b", recipe="bf16", s=4096), tiny) == 0
    bare = TrainingSetup(model=resolve_model("7B"))
    with pytest.raises(MemplanError, match="architecture"):
        max_micro_batch(bare, tiny)


def test_estimate_without_architecture_counts_model_states_only():
    est = estimate_memory(TrainingSetup(model=resolve_model("7B")))
    assert est.per_gpu.activations == 0 and any("no architecture" in n for n in est.notes)


def test_calibration_rejects_bad_records(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{\"measured\": {\"model\": 1}}")
    with pytest.raises(MemplanError, match="field measured.model must be a string, got 1 .*profile --out"):
        load_calibration(bad)
    with pytest.raises(MemplanError, match="does not exist"):
        load_calibration(tmp_path / "missing.json")


def test_calibration_with_its_own_run_reproduces_the_measured_activations(tmp_path):
    pytest.importorskip("torch")
    from memplan.measure.runner import measure_training_step
    from memplan.results.profile import ProfileRecord
    from tests.measure_archs import setup as tiny

    st = tiny("llama", "bf16", micro_batch=2, seq=32)
    m = measure_training_step(st, device="fake", optimizer_impl="foreach")
    rec = tmp_path / "run.json"
    rec.write_text(ProfileRecord(created_utc="now", measured=m).model_dump_json())
    cal = load_calibration(rec)
    est = estimate_memory(st, calibration=cal, kernels="cpu")
    assert phase(est, "backward").bytes["activations"] in range(m.activations_at_backward_start - 1,
                                                                 m.activations_at_backward_start + 2)
    assert any("calibrated with run.json" in n for n in est.notes)
    json.loads(est.model_dump_json())  # the estimate stays serializable


def test_gradient_accumulation_keeps_every_gradient_through_later_micro_batches():
    one = estimate_memory(setup(impl="fused", b=2))
    four = estimate_memory(setup(impl="fused", b=2, grad_accum=4))
    assert phase(one, "backward").bytes.get("gradients", 0) == 0
    assert phase(four, "backward").bytes["gradients"] == four.per_gpu.gradients == 2 * N7
    assert four.per_gpu.peak_allocated == one.per_gpu.peak_allocated + 2 * N7
