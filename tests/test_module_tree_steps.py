"""`memplan trace` of model types without a family file (MoE banks, short convolutions, Gated DeltaNet), checked
against real CPU training steps measured by memplan/measure/runner.py (the tracker test_validation.py
cross-checks with PyTorch's MemTracker), on configs other than
the traced one where the mixer's dims allow (its dims are constants of the rows: see activations.layer_sizes).

Slow: each case traces 32 variants (about a minute on 2 cores) before its steps.
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.test_module_tree import GDN, tiny  # noqa: E402

pytestmark = pytest.mark.slow

# (traced config, measured config): the measured one differs in widths, heads, layers and experts
CASES = {
    "lfm2": (tiny("lfm2", layer_types=["conv", "full_attention", "conv"]),
             tiny("lfm2", layer_types=["conv", "conv", "full_attention", "conv"], num_hidden_layers=4,
                  hidden_size=96, num_attention_heads=6, num_key_value_heads=2, intermediate_size=200,
                  vocab_size=300, head_dim=None)),
    "glm4_moe": (tiny("glm4_moe", num_hidden_layers=3),
                 tiny("glm4_moe", num_hidden_layers=4, first_k_dense_replace=2, hidden_size=96, num_attention_heads=6,
                      intermediate_size=160, moe_intermediate_size=48, n_routed_experts=6, vocab_size=300)),
    "minimax_m2": (tiny("minimax_m2"),
                   tiny("minimax_m2", num_hidden_layers=4, hidden_size=96, num_attention_heads=6, head_dim=16,
                        intermediate_size=64, num_local_experts=6, vocab_size=300)),
    # Gated DeltaNet's own dims stay the traced config's (constants of its rows); the rest differs
    "qwen3_next": (tiny("qwen3_next", **GDN),
                   tiny("qwen3_next", **{**GDN, "layer_types": ["linear_attention", "linear_attention",
                                                                "full_attention", "linear_attention"]},
                        num_hidden_layers=4, hidden_size=96, num_attention_heads=6, moe_intermediate_size=48,
                        num_experts=6, shared_expert_intermediate_size=64, vocab_size=300)),
}
STEPS = [("fp32", 2, 32), ("bf16-mixed", 4, 48), ("amp-bf16", 2, 64)]


@pytest.fixture(scope="module", params=sorted(CASES))
def traced(request, tmp_path_factory):
    from memplan.cli import main
    from memplan.memory.implementations import ImplementationProfile

    model_type = request.param
    folder = tmp_path_factory.mktemp(model_type)
    traced_cfg, measured_cfg = CASES[model_type]
    (folder / "config.json").write_text(json.dumps({k: v for k, v in traced_cfg.items() if v is not None}))
    out = folder / "rows.json"
    assert main(["trace", str(folder), "--out", str(out), "--workers", "1"]) == 0
    return model_type, ImplementationProfile.model_validate_json(out.read_text()), \
        {k: v for k, v in measured_cfg.items() if v is not None}


@pytest.mark.parametrize("precision,batch,seq", STEPS)
def test_traced_rows_match_a_cpu_step_within_2_percent(traced, monkeypatch, precision, batch, seq):
    import memplan.memory.activations as activations
    import memplan.memory.timeline as timeline
    from memplan.measure.runner import measure_training_step
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.memory.estimate import estimate_memory
    from memplan.spec.layout import Layout
    from memplan.spec.model import ModelSpec
    from memplan.spec.setup import TrainingSetup
    from memplan.spec.training import Workload, get_optimizer, get_recipe

    model_type, prof, cfg = traced
    monkeypatch.setattr(activations, "implementation_for", lambda s: prof)
    monkeypatch.setattr(timeline, "implementation_for", lambda s: prof)
    spec = ModelSpec(name=f"tiny-{model_type}", architecture=read_module_tree(cfg), hf_config=cfg)
    setup = TrainingSetup(model=spec, recipe=get_recipe(precision), optimizer=get_optimizer("adamw"),
                          layout=Layout(micro_batch=batch),
                          workload=Workload(seq=seq, attention="sdpa", optimizer_impl="for-loop"))
    measured = measure_training_step(setup, device="cpu", optimizer_impl="for-loop")
    est = estimate_memory(setup, kernels="cpu")
    peak = max(p.peak_bytes for p in measured.phases)
    by_phase = {p.name: p.total for p in est.timeline}
    estimated = max(by_phase[p.name] for p in measured.phases)
    assert abs(estimated - peak) <= 0.02 * peak, (model_type, precision, estimated, peak)
    assert est.peak_phase == measured.peak_phase, (model_type, precision)
