"""Property-based checks of the model-state arithmetic (hypothesis)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from memplan.memory.estimate import estimate_memory
from memplan.results.memory import MemoryEstimate
from memplan.spec.model import ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import get_optimizer, get_recipe

recipes = st.sampled_from(["fp32", "amp-bf16", "bf16-mixed", "fp16-mixed", "bf16", "fp8-mixed"])
optimizers = st.sampled_from(["adamw", "sgd", "sgd-momentum", "lion", "adamw-8bit", "adafactor"])
params = st.integers(min_value=10**6, max_value=2 * 10**12)
engines = st.sampled_from(["plain", "megatron", "fsdp", "deepspeed"])


def _est(n, recipe, opt, gpus, zero, engine="plain") -> MemoryEstimate:
    if engine == "megatron":
        zero = min(zero, 1)
    if engine == "fsdp" and zero == 1:
        zero = 2
    if engine == "deepspeed":
        zero = 2  # DeepSpeed's ZeRO-3 estimator needs an architecture (largest layer); a bare count has none
    setup = TrainingSetup(model=ModelSpec(name="m", total_parameters=n), recipe=get_recipe(recipe),
                          optimizer=get_optimizer(opt), layout=Layout(gpus=gpus, zero=zero, engine=engine))
    return estimate_memory(setup)


@settings(max_examples=150, deadline=None)
@given(params, recipes, optimizers, st.sampled_from([1, 2, 8, 64, 1024]))
def test_model_states_never_grow_with_zero_stage(n, recipe, opt, gpus):
    per_stage = [_est(n, recipe, opt, gpus, z).per_gpu.model_states for z in range(4)]
    assert per_stage == sorted(per_stage, reverse=True)


@settings(max_examples=150, deadline=None)
@given(params, recipes, optimizers, st.integers(0, 3), st.integers(0, 9))
def test_model_states_never_grow_with_gpu_count(n, recipe, opt, zero, log2_gpus):
    a = _est(n, recipe, opt, 2**log2_gpus, zero).per_gpu.model_states
    b = _est(n, recipe, opt, 2 ** (log2_gpus + 1), zero).per_gpu.model_states
    assert b <= a


@settings(max_examples=100, deadline=None)
@given(params, recipes, optimizers, st.sampled_from([1, 4, 16]), st.integers(0, 3), engines)
def test_parts_sum_to_totals(n, recipe, opt, gpus, zero, engine):
    e = _est(n, recipe, opt, gpus, zero, engine)
    g = e.per_gpu
    assert g.model_states == g.weights + g.gradients + g.master_weights + g.optimizer_states
    gpu_parts = sum(c.bytes for c in e.components if c.location == "gpu" and c.category not in
                    ("activations", "temporaries", "overheads", "kv_cache", "buffers"))
    assert gpu_parts == g.model_states + g.gathered_parameters
    assert g.required == g.peak_allocated + g.overheads
    for host in (e.cpu, e.nvme):
        assert host.total == sum(c.bytes for c in e.components if c.location == ("cpu" if host is e.cpu else "nvme"))


@settings(max_examples=50, deadline=None)
@given(params, recipes, optimizers, st.sampled_from([1, 8]), st.integers(0, 3))
def test_json_round_trips(n, recipe, opt, gpus, zero):
    e = _est(n, recipe, opt, gpus, zero)
    again = MemoryEstimate.model_validate_json(e.model_dump_json())
    assert again == e
