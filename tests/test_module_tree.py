"""measure/trace/module_tree.py: layers of a model_type without a family file, read from transformers' modules.

Each claimed model type is built by transformers (real CPU tensors, not memplan's reading) and its parameters
summed; the reading must count exactly as many, group by group where the layers differ.  A mixer or block the
reader cannot name is refused in one line naming the module.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from memplan.errors import MemplanError  # noqa: E402

# small widths; each model type keeps its own config class's defaults for everything else
SMALL = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128, head_dim=16, num_hidden_layers=3, n_routed_experts=8,
             num_local_experts=8, num_experts=8, moe_num_experts=8, num_experts_per_tok=2, first_k_dense_replace=1,
             shared_expert_intermediate_size=48, max_position_embeddings=128)


def tiny(model_type: str, **extra) -> dict:
    """The config class's defaults at SMALL widths (per-layer lists dropped: the class rebuilds them)."""
    cfg = tf.AutoConfig.for_model(model_type).to_dict()
    out = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in (
        "transformers_version", "architectures", "layer_types", "num_attention_heads_per_layer", "mlp_layer_types",
        "dtype")}
    out.update({k: v for k, v in SMALL.items() if k in out})
    out.update(extra, model_type=model_type)
    return out


def built_parameters(config: dict) -> int:
    from memplan.measure.models import build_hf_config

    return sum(p.numel() for p in build_hf_config(config).module.parameters())


# MoE model types without a family file: routed experts as 3-D banks, raw or Linear routers, router biases
# (Ernie 4.5's moe_statics), shared experts (+ gate), first-k dense layers
MOE = ["glm4_moe", "minimax_m2", "olmoe", "granitemoe", "granitemoeshared", "phimoe", "ernie4_5_moe",
       "hunyuan_v1_moe", "cohere2_moe", "exaone_moe", "sarvam_moe", "solar_open", "hy_v3"]


@pytest.mark.parametrize("model_type", MOE)
def test_moe_layers_count_as_the_module_tree(model_type):
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.spec.model import count_parameters

    cfg = tiny(model_type)
    m = read_module_tree(cfg)
    assert m.moe
    assert count_parameters(m).total == built_parameters(cfg)


def test_glm4_moe_reads_dense_then_moe_groups_with_shared_experts():
    from memplan.measure.trace.module_tree import read_module_tree

    m = read_module_tree(tiny("glm4_moe"))
    dense, moe = (g.layer.ffn for g in m.groups)
    assert [g.count for g in m.groups] == [1, 2] and not dense.moe
    assert (moe.experts, moe.top_k, moe.intermediate_size, moe.shared_intermediate_size) == (8, 2, 32, 32)
    assert not moe.router_bias  # Glm4MoeTopkRouter.e_score_correction_bias is a buffer, not a parameter
    assert m.module_names["router"] == "mlp.gate" and m.module_names["shared"] == "mlp.shared_experts."


def test_router_bias_and_linear_routers_are_read():
    from memplan.measure.trace.module_tree import read_module_tree

    ernie = read_module_tree(tiny("ernie4_5_moe")).groups[-1].layer.ffn
    assert ernie.router_bias  # Ernie4_5_MoeStatics.e_score_correction_bias, a parameter (1, E)
    phimoe = read_module_tree(tiny("phimoe")).groups[-1].layer.ffn
    assert phimoe.router_is_module and not phimoe.router_bias


def test_a_depthwise_convolution_is_not_called_an_moe_bank():
    from memplan.measure.trace.moe_tree import expert_banks

    conv = torch.nn.Module()
    conv.conv1d = torch.nn.Conv1d(8, 8, 4, groups=8)
    assert expert_banks(conv) == {}


# token mixers that are not attention, per layer kind (layer_types / attn_layer_indices make the groups)
GDN = dict(linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
           layer_types=["linear_attention", "full_attention", "linear_attention"])
MAMBA = dict(mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_expand=2)
MIXERS = {
    "lfm2": (dict(layer_types=["conv", "full_attention", "conv"]), "short_conv"),
    "qwen3_next": (GDN, "gated_deltanet"),
    "qwen3_5_text": (GDN, "gated_deltanet"),
    "qwen3_5_moe_text": (GDN, "gated_deltanet"),
    "bamba": (dict(MAMBA, attn_layer_indices=[1]), "mamba2"),
    "granitemoehybrid": (dict(MAMBA, layer_types=["mamba", "attention", "mamba"]), "mamba2"),
    "falcon_h1": (dict(MAMBA, mamba_d_ssm=128), "mamba2"),
}


@pytest.mark.parametrize("model_type", sorted(MIXERS))
def test_hybrid_layers_count_as_the_module_tree(model_type):
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.spec.model import count_parameters

    extra, kind = MIXERS[model_type]
    cfg = tiny(model_type, **extra)
    m = read_module_tree(cfg)
    assert {g.layer.mixer.kind for g in m.groups if g.layer.mixer is not None} == {kind}
    assert count_parameters(m).total == built_parameters(cfg)


def test_hybrid_layer_kinds_follow_the_layer_pattern():
    from memplan.measure.trace.module_tree import read_module_tree

    m = read_module_tree(tiny("qwen3_next", **GDN))
    gdn, attn, _ = (g.layer for g in m.groups)
    assert gdn.attn is None and attn.mixer is None and attn.attention.output_gate  # Qwen3NextAttention's gate
    assert (gdn.mixer.heads, gdn.mixer.key_heads, gdn.mixer.key_dim, gdn.mixer.value_dim, gdn.mixer.conv_kernel) \
        == (4, 2, 16, 16, 4)
    # the recurrent state per sequence: conv (2*key + value channels x kernel), (heads_v, dk, dv) in fp32
    assert gdn.mixer.state_elems(64) == ((2 * 32 + 64) * 4, 4 * 16 * 16)
    with pytest.raises(MemplanError, match="Gated DeltaNet .* has no attention"):
        gdn.attention  # noqa: B018 - attention-only consumers refuse a mixer layer in one line
    falcon = read_module_tree(tiny("falcon_h1", **MAMBA, mamba_d_ssm=128)).first
    assert falcon.attn is not None and falcon.mixer.kind == "mamba2"  # parallel attention + SSM
    assert not falcon.mixer.gated_norm  # FalconH1Config.mamba_rms_norm defaults to False: no norm


@pytest.mark.parametrize("model_type,extra,what", [
    ("jamba", {}, "mixer mamba is Mamba-1"),
    ("mamba", {"state_size": 8}, "mixer mixer is Mamba-1"),
    ("mamba2", {"num_heads": 8, "head_dim": 16, "n_groups": 2, "state_size": 16, "expand": 2,
                "time_step_limit": [0.0, 1e9]}, "a layer with no MLP"),
])
def test_an_unread_mixer_is_refused_naming_its_module(model_type, extra, what):
    from memplan.measure.trace.module_tree import read_module_tree

    with pytest.raises(MemplanError, match=what) as err:
        read_module_tree(tiny(model_type, **extra))
    assert "MoE" not in str(err.value) and "\n" not in str(err.value)


def test_mixer_layers_round_trip_through_a_model_profile():
    """The model profile `memplan trace` writes (model_dump) reads back to the same Model; a model without mixers
    dumps as before (no `mixer` key, no `output_gate`)."""
    from memplan.families.registry import read_config
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.spec.model import Model

    m = read_module_tree(tiny("qwen3_next", **GDN))
    assert Model.model_validate(m.model_dump(mode="json")) == m
    llama = read_config({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "vocab_size": 128})
    layer = llama.model_dump(mode="json")["groups"][0]["layer"]
    assert "mixer" not in layer and "output_gate" not in layer["attention"]


@pytest.mark.parametrize("model_type", ["qwen3_next", "lfm2", "bamba"])
def test_mixer_state_equals_transformers_cache_after_prefill_and_a_decode_step(model_type):
    """Mixer.state_elems against the cache transformers fills (cache_utils.py LinearAttentionLayer): conv states
    in the weights' dtype, recurrent states in fp32 (Mixer.recurrent_state_bytes_per_elem), per sequence."""
    from memplan.measure.models import build_hf_config, default_dtype
    from memplan.measure.trace.module_tree import read_module_tree

    extra, _ = MIXERS[model_type]
    cfg = tiny(model_type, **extra)
    specs = list(read_module_tree(cfg).layers())
    with default_dtype(torch.bfloat16):
        module = build_hf_config(cfg).module.eval()
    batch = 2
    with torch.no_grad():
        out = module(torch.randint(0, 100, (batch, 9)), use_cache=True)
        cache = out.past_key_values
        module(torch.randint(0, 100, (batch, 1)), past_key_values=cache, use_cache=True)
    for spec, layer in zip(specs, cache.layers):
        if spec.mixer is None:
            continue
        conv, rec = spec.mixer.state_elems(cfg["hidden_size"])
        conv_t, rec_t = layer.conv_states[0], layer.recurrent_states.get(0)
        assert conv_t.numel() == batch * conv and conv_t.dtype == torch.bfloat16
        if rec:
            assert rec_t.numel() == batch * rec
            assert rec_t.element_size() == spec.mixer.recurrent_state_bytes_per_elem
        else:
            assert rec_t is None
