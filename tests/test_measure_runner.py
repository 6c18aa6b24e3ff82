"""measure/runner.py: cpu and fake agree to the byte; recipes keep the bytes they promise; OOM is a result."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memplan.errors import MemplanError  # noqa: E402
from memplan.measure.models import build_model  # noqa: E402
from memplan.measure.runner import measure_training_step  # noqa: E402
from memplan.results.profile import CATEGORIES  # noqa: E402
from memplan.spec.model import count_parameters  # noqa: E402
from tests.measure_archs import ARCHS, setup  # noqa: E402

N_LLAMA = count_parameters(ARCHS["llama"]).total
N_TENSORS_LLAMA = 2 * 9 + 3  # per layer: q k v o gate up down + 2 norms; + embed, final norm, lm_head


@pytest.mark.parametrize("family,source,precision,optimizer,attention", [
    ("llama", "reference", "fp32", "adamw", "sdpa"),
    ("llama", "reference", "bf16-mixed", "adamw", "eager"),
    ("llama", "hf", "amp-bf16", "adamw", "sdpa"),
    ("gpt2", "hf", "bf16", "sgd-momentum", "sdpa"),
    ("qwen2", "hf", "fp16-mixed", "adamw", "sdpa"),
    ("gpt_neox", "hf", "amp-fp16", "adam", "eager"),
    ("mixtral", "hf", "bf16-mixed", "adafactor", "sdpa"),
])
def test_cpu_and_fake_agree_to_the_byte(family, source, precision, optimizer, attention):
    s = setup(family, precision, optimizer, attention=attention)
    cpu = measure_training_step(s, device="cpu", model_source=source)
    fake = measure_training_step(s, device="fake", model_source=source)
    # every byte figure agrees; only the sampled timeline may order frees of one teardown differently
    assert cpu.model_dump(exclude={"device", "timeline_bytes"}) == fake.model_dump(exclude={"device", "timeline_bytes"})
    assert max(cpu.timeline_bytes) == max(fake.timeline_bytes) == cpu.peak_allocated
    assert cpu.peak_allocated == sum(getattr(cpu, c) for c in
                                     ("weights", "master_weights", "gradients", "optimizer_states", "activations",
                                      "temporaries", "other"))


def test_model_states_of_bf16_mixed_adamw_are_2_2_4_8_bytes_per_parameter():
    r = measure_training_step(setup("llama", "bf16-mixed"), device="fake", model_source="reference")
    assert r.optimizer_impl == "for-loop"  # torch's choice on cpu (and for fake tensors)
    assert r.peak_phase == "optimizer_step"
    step = r.phase("optimizer_step").bytes
    assert step["weights"] == 2 * N_LLAMA
    assert step["gradients"] == 2 * N_LLAMA
    assert step["master_weights"] == 4 * N_LLAMA
    # exp_avg + exp_avg_sq in fp32, plus torch's 0-dim fp32 `step` counter per parameter tensor
    assert step["optimizer_states"] == 8 * N_LLAMA + 4 * N_TENSORS_LLAMA
    # MasterWeightsOptimizer materializes every fp32 grad at once (4 B/param); torch's for-loop AdamW
    # (_single_tensor_adam) adds sqrt(exp_avg_sq) and its quotient `denom` for the current tensor while the
    # previous iteration's `denom` is still bound: at most three fp32 tensors of the largest size (512x64)
    largest = 512 * 64
    assert 4 * N_LLAMA + 2 * 4 * largest <= step["temporaries"] <= 4 * N_LLAMA + 3 * 4 * largest


def test_fp32_sgd_has_no_optimizer_state_and_foreach_is_recorded():
    r = measure_training_step(setup("llama", "fp32", "sgd"), device="fake", model_source="reference",
                              optimizer_impl="foreach")
    assert r.optimizer_impl == "foreach"
    assert r.optimizer_states == 0
    assert r.phase("backward").bytes["weights"] == 4 * N_LLAMA


def test_full_recompute_keeps_fewer_activations():
    plain = measure_training_step(setup("llama", "fp32", seq=64), device="fake", model_source="hf")
    full = measure_training_step(setup("llama", "fp32", seq=64, recompute="full"), device="fake", model_source="hf")
    assert full.activations_at_backward_start < plain.activations_at_backward_start


def test_unmeasurable_setups_are_one_line_errors():
    with pytest.raises(MemplanError, match="fp8"):
        measure_training_step(setup("llama", "fp8-mixed"), device="fake", model_source="reference")
    with pytest.raises(MemplanError, match="lion-pytorch|lion"):
        import importlib.util

        if importlib.util.find_spec("lion_pytorch") is not None:
            pytest.skip("lion-pytorch is installed")
        measure_training_step(setup("llama", "fp32", "lion"), device="fake", model_source="reference")
    with pytest.raises(MemplanError, match="no CUDA device"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        measure_training_step(setup("llama"), device="cuda", model_source="reference")


def oom_in_backward_factory(spec):
    """A reference model whose last layer raises CUDA's OOM error during backward (simulated on cpu)."""
    module = build_model(spec, "reference").module

    def boom(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    module.layers[-1].mlp.register_full_backward_hook(boom)
    return module


def test_out_of_memory_is_a_result_with_its_phase():
    r = measure_training_step(setup("llama", "fp32"), device="cpu",
                              model_source="tests.test_measure_runner:oom_in_backward_factory")
    assert r.oom and r.oom_phase == "backward"
    assert "out of memory" in r.oom_message
    assert "warm-up" in " ".join(r.notes)  # the first step already fails
    # what was measured so far: the tensors still alive after the error, by category -- the fp32 weights, the
    # gradients accumulated before the failing layer's backward, no optimizer states (the step never got there)
    assert r.weights == 4 * r.parameters and r.optimizer_states == 0 and 0 < r.gradients < r.weights
    assert r.peak_allocated == sum(getattr(r, c) for c in CATEGORIES)


def test_find_max_micro_batch_bisects_against_a_capacity():
    from memplan.measure.runner import find_max_micro_batch

    capacity = measure_training_step(setup("llama", "fp32", micro_batch=3), device="fake",
                                     model_source="reference").peak_allocated
    best, tried = find_max_micro_batch(setup("llama", "fp32"), device="fake", model_source="reference",
                                       capacity_bytes=capacity)
    assert best == 3  # the peak grows with the batch: 3 fits exactly, 4 does not
    assert [r.micro_batch for r in tried] == [1, 2, 4, 3]


def test_megatron_fp32_main_grads_are_persistent_and_need_no_conversion():
    from memplan.spec.training import get_recipe

    s = setup("llama", "bf16-mixed")
    s = s.model_copy(update={"recipe": get_recipe("bf16-mixed", gradients="fp32")})
    r = measure_training_step(s, device="fake", model_source="reference")
    # Megatron's 18 B/param: 2 (bf16 weights) + 4 (fp32 main_grad, never freed) + 4 (master) + 8 (Adam)
    for phase in r.phases:
        assert phase.bytes["gradients"] == 4 * N_LLAMA, phase.name
    step = r.phase("optimizer_step").bytes
    # no 4 B/param fp32 grad conversion at the step: only the for-loop AdamW's (at most three) temporaries
    assert step["temporaries"] <= 3 * 4 * 512 * 64


def test_selective_recompute_drops_the_attention_core_from_saved_activations():
    # eager attention saves the [b, heads, s, s] scores and probabilities; checkpointing the core keeps only
    # its inputs (q, k, v), so the saved bytes must fall by at least one fp32 probability tensor per layer
    plain = measure_training_step(setup("llama", "fp32", attention="eager"), device="fake", model_source="reference")
    sel = measure_training_step(setup("llama", "fp32", attention="eager", recompute="selective"), device="fake",
                                model_source="reference")
    probs = 2 * 4 * 32 * 32 * 4  # micro-batch 2, 4 heads, 32 x 32, fp32
    assert plain.activations_at_backward_start - sel.activations_at_backward_start >= 2 * probs
