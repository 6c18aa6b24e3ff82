"""measure/models.py: the module built from a ModelSpec has exactly memplan's parameter count."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from memplan.errors import MemplanError  # noqa: E402
from memplan.measure.models import build_model, hf_config, module_parameters  # noqa: E402
from memplan.spec.model import ModelSpec, count_parameters  # noqa: E402
from tests.measure_archs import ARCHS  # noqa: E402

pytest.importorskip("transformers")


@pytest.mark.parametrize("family", sorted(ARCHS))
def test_hf_module_has_memplans_parameter_count(family):
    built = build_model(ModelSpec(name=family, architecture=ARCHS[family]), "hf", check_count=False)
    assert module_parameters(built.module) == count_parameters(ARCHS[family]).total


@pytest.mark.parametrize("family", sorted(set(ARCHS) - {"mixtral", "bert"}))
def test_reference_module_has_memplans_parameter_count(family):
    built = build_model(ModelSpec(name=family, architecture=ARCHS[family]), "reference", check_count=False)
    assert module_parameters(built.module) == count_parameters(ARCHS[family]).total


def test_gpt2_small_hf_count_is_the_published_124m():
    # GPT-2 small (Radford et al. 2019; HF gpt2 config): 124,439,808 parameters with the tied LM head
    from memplan.spec.model import Architecture

    a = Architecture(family="gpt2", n_layers=12, hidden_size=768, n_heads=12, ffn_hidden_size=3072, mlp="gelu",
                     activation="gelu_new", norm="layernorm", norm_bias=True, vocab_size=50257, max_positions=1024,
                     position="learned", tied_embeddings=True, fused_qkv=True, qkv_bias=True, attn_out_bias=True,
                     mlp_bias=True)
    with torch.device("meta"):
        hf = build_model(ModelSpec(name="gpt2", architecture=a), "hf")
        ref = build_model(ModelSpec(name="gpt2", architecture=a), "reference")
    assert module_parameters(hf.module) == module_parameters(ref.module) == 124_439_808


def test_attention_implementation_reaches_the_hf_config():
    built = build_model(ModelSpec(name="l", architecture=ARCHS["llama"]), "hf", attention="eager")
    assert built.module.config._attn_implementation == "eager"


def test_weights_are_created_in_the_requested_dtype():
    built = build_model(ModelSpec(name="l", architecture=ARCHS["llama"]), "reference", dtype=torch.bfloat16)
    assert {p.dtype for p in built.module.parameters()} == {torch.bfloat16}


def test_unknown_family_and_unsupported_features_are_one_line_errors():
    a = ARCHS["llama"].model_copy(update={"family": "t5"})
    with pytest.raises(MemplanError, match="no Hugging Face mapping"):
        hf_config(a)
    with pytest.raises(MemplanError, match="no MoE"):
        build_model(ModelSpec(name="m", architecture=ARCHS["mixtral"]), "reference")


def test_count_mismatch_is_refused():
    # Llama's attention_bias puts a bias on o_proj too; an arch with q/k/v bias only cannot be built by HF Llama
    a = ARCHS["llama"].model_copy(update={"qkv_bias": True})
    with pytest.raises(MemplanError, match="parameters but memplan counts"):
        build_model(ModelSpec(name="l", architecture=a), "hf")


def tiny_factory(spec):
    return build_model(spec, "reference").module


def test_factory_source():
    built = build_model(ModelSpec(name="l", architecture=ARCHS["llama"]), "tests.test_measure_models:tiny_factory")
    assert built.source == "factory:tests.test_measure_models:tiny_factory"
    with pytest.raises(MemplanError, match="package.module:function"):
        build_model(ModelSpec(name="l", architecture=ARCHS["llama"]), "nocolon:")
