"""Every model family and every built-in profile against the model transformers builds from the same config.

The reference is the module tree itself: a config dict is read by memplan (families/) and handed to transformers
(`CONFIG_MAPPING[model_type].from_dict`, the class its `architectures` names, else the family's
`transformers_class`), built at full size on the meta device (no memory, no weights), and compared:
- the total: sum(p.numel() for p in model.parameters()) (parameters() yields a tied weight once);
- every layer: its parameter count, the multiset of its parameter shapes, and the names of its linear modules
  (what PEFT's target_modules match);
- the layer kinds: window per layer from the transformers config's own layer_types / sliding_window /
  attention_chunk_size, MoE or dense from the module the layer holds (an `experts` submodule);
- for multimodal configs, the vision tower and projector (memplan `Extra`s) against their submodules.
Published counts (typed from the sources each profile cites) are checked against both; MoE active counts
against a hand computation from the config.  Bad configs go through the CLI: one line naming file and key, exit 2.
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

import memplan.catalog as catalog
from memplan.errors import MemplanError
from memplan.families import registry
from memplan.families.hf import load_hf_config
from memplan.spec.model import count_parameters
from memplan.spec.tensors import layer_tensors
from tests.helpers import run_cli

# ---- building the transformers model ----------------------------------------------------------------------
VISION_PREFIXES = {"vision tower (SigLIP)": "model.vision_tower.", "vision tower": "vision_model.",
                   "multimodal projector": ("model.multi_modal_projector.", "multi_modal_projector."),
                   "next-sentence classifier": "cls.seq_relationship."}


@pytest.fixture(scope="module")
def tf():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


def class_name(data: dict) -> str:
    """The class the config names (architectures), else the family's transformers_class."""
    archs = data.get("architectures") or []
    fam = registry.get_family(data["model_type"])
    cls = fam.transformers_class(data) if callable(fam.transformers_class) else fam.transformers_class
    return archs[0] if archs else cls


@lru_cache(maxsize=None)
def _built(key: str):
    import torch
    import transformers

    data = json.loads(key)
    data.pop("quantization_config", None)  # applies when loading weights; the module tree is what is counted
    config = transformers.CONFIG_MAPPING[data["model_type"]].from_dict(data)
    with torch.device("meta"):
        model = getattr(transformers, class_name(data))(config)
    return config, model


def built(data: dict):
    return _built(json.dumps(data, sort_keys=True))


def text_layers(model, count: int):
    """The decoder/encoder layer list (the ModuleList of num_hidden_layers outside the vision tower)."""
    import torch

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == count and "vision" not in name:
            return mod
    raise AssertionError("no layer list found")


def linear_names(layer) -> set[str]:
    import torch

    return {n for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}


def check_against_transformers(data: dict, path: str = "config.json") -> None:
    """memplan's reading of `data` equals transformers' model built from it, total, layer by layer, extras."""
    model_spec = registry.read_config(data, path)
    counts = count_parameters(model_spec)
    config, model = built(data)
    assert counts.total == sum(p.numel() for p in model.parameters())

    params = dict(model.named_parameters())
    for extra in model_spec.extras:
        prefixes = VISION_PREFIXES[extra.name]
        assert extra.params == sum(p.numel() for n, p in params.items() if n.startswith(prefixes)), extra.name

    layers = text_layers(model, model_spec.n_layers)
    specs = list(model_spec.layers())
    group_of = [gi for gi, g in enumerate(model_spec.groups) for _ in range(g.count)]
    text_config = config.get_text_config()
    for i, (spec, layer) in enumerate(zip(specs, layers)):
        layer_params = dict(layer.named_parameters())
        assert spec.parameters(model_spec.hidden_size, model_spec.module_names).total == \
            sum(p.numel() for p in layer_params.values()), f"layer {i}"
        ours = sorted(t.shape for t in layer_tensors(model_spec, group_of[i]))
        assert ours == sorted(tuple(p.shape) for p in layer_params.values()), f"layer {i} shapes"
        lins = model_spec.linears(spec)
        assert {x.name for x in lins if x.is_module} == linear_names(layer), f"layer {i} module names"
        for x in lins:
            if not x.is_module:
                assert x.name in layer_params or f"{x.name}.weight" in layer_params, x.name
        assert (spec.attention.window_kind, spec.attention.window) == expected_window(text_config, i), f"layer {i}"
        assert spec.ffn.moe == any(n.endswith("experts") for n, _ in layer.named_modules()), f"layer {i} MoE"
        if hasattr(layer.self_attn if hasattr(layer, "self_attn") else layer, "use_rope"):
            assert (spec.attention.position == "rotary") == bool(layer.self_attn.use_rope), f"layer {i} NoPE"


def expected_window(text_config, i: int) -> tuple[str, int | None]:
    """The window transformers gives layer i, from its config: layer_types if it has them, else one
    sliding_window for every layer (Mistral, Phi-3, Qwen3-MoE); a sliding layer without a window is global."""
    types = getattr(text_config, "layer_types", None)
    sliding = getattr(text_config, "sliding_window", None) or None
    kind = types[i] if types else ("sliding_attention" if sliding else "full_attention")
    if kind == "sliding_attention" and sliding:
        return "sliding", sliding
    chunk = getattr(text_config, "attention_chunk_size", None)
    if kind == "chunked_attention" and chunk:
        return "chunked", chunk
    return "global", None


# ---- small configs of every family, with the switches each reader handles ----------------------------------
S = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=128, intermediate_size=96,
         max_position_embeddings=256)
SMALL: dict[str, dict] = {
    "llama": dict(S, num_key_value_heads=2),
    "llama-biases-head_dim-tied": dict(S, num_key_value_heads=1, attention_bias=True, mlp_bias=True, head_dim=32,
                                       tie_word_embeddings=True),
    "mistral": dict(S, num_key_value_heads=2, sliding_window=32),
    "mistral-head_dim-nowindow": dict(S, num_key_value_heads=4, head_dim=24, sliding_window=None),
    "mixtral": dict(S, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "mixtral-3experts-top1": dict(S, num_key_value_heads=1, num_local_experts=3, num_experts_per_tok=1),
    "qwen2": dict(S, num_key_value_heads=2),
    "qwen2-tied-sliding": dict(S, num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=True,
                               sliding_window=16, max_window_layers=2),
    "qwen2_moe": dict(S, num_key_value_heads=2, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, decoder_sparse_step=2, mlp_only_layers=[3]),
    "qwen2_moe-sliding-nobias-tied": dict(S, num_key_value_heads=4, use_sliding_window=True, sliding_window=16,
                                          max_window_layers=3, qkv_bias=False, tie_word_embeddings=True, num_experts=4,
                                          num_experts_per_tok=1, moe_intermediate_size=24,
                                          shared_expert_intermediate_size=32),
    "qwen3": dict(S, num_key_value_heads=2, head_dim=24),
    "qwen3-default-head_dim-sliding-bias-tied": dict(S, num_key_value_heads=2, tie_word_embeddings=True,
                                                     use_sliding_window=True, sliding_window=32,
                                                     max_window_layers=2, attention_bias=True),
    "qwen3_moe": dict(S, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
                      moe_intermediate_size=32, mlp_only_layers=[0]),
    "qwen3_moe-step2-sliding": dict(S, num_key_value_heads=4, num_experts=4, num_experts_per_tok=4,
                                    moe_intermediate_size=16, decoder_sparse_step=2, use_sliding_window=True,
                                    sliding_window=8),
    "gemma": dict(S, num_key_value_heads=1, head_dim=32, hidden_act="gelu", attention_bias=True),
    "gemma-default-head_dim": dict(S, num_key_value_heads=4),
    "gemma2": dict(S, num_key_value_heads=2, head_dim=16, sliding_window=8),
    "gemma2-types-nocap-untied": dict(S, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                                      layer_types=["full_attention", "sliding_attention", "sliding_attention",
                                                   "full_attention"],
                                      attn_logit_softcapping=None, final_logit_softcapping=None,
                                      tie_word_embeddings=False),
    "gemma3_text": dict(S, num_hidden_layers=7, num_key_value_heads=2, head_dim=16, sliding_window=8,
                        sliding_window_pattern=3),
    "gemma3_text-types-bias": dict(S, num_key_value_heads=2, head_dim=16, sliding_window=8, attention_bias=True,
                                   layer_types=["sliding_attention", "full_attention"] * 2),
    "gemma3": {"text_config": dict(S, model_type="gemma3_text", num_hidden_layers=6, num_key_value_heads=2,
                                   head_dim=16, sliding_window=8),
               "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 48,
                                 "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28,
                                 "patch_size": 7, "vision_use_head": False},
               "mm_tokens_per_image": 4},
    "gemma3-vision_head-untied": {"text_config": dict(S, model_type="gemma3_text", num_key_value_heads=4,
                                                      head_dim=16, vocab_size=300),
                                  "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 24,
                                                    "intermediate_size": 40, "num_hidden_layers": 1,
                                                    "num_attention_heads": 3, "image_size": 32, "patch_size": 8,
                                                    "num_channels": 2},
                                  "mm_tokens_per_image": 4, "tie_word_embeddings": False},
    "phi3": dict(S, num_key_value_heads=2, sliding_window=32, partial_rotary_factor=0.5, resid_pdrop=0.1,
                 pad_token_id=0),
    "phi3-mha-nowindow-tied": dict(S, tie_word_embeddings=True, pad_token_id=0),
    "olmo2": dict(S, num_key_value_heads=2),
    "olmo2-bias-tied": dict(S, attention_bias=True, tie_word_embeddings=True),
    "deepseek_v3": dict(S, num_hidden_layers=3, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=16,
                        qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=12, n_routed_experts=8,
                        num_experts_per_tok=2, n_group=2, topk_group=1, moe_intermediate_size=24,
                        n_shared_experts=2, first_k_dense_replace=1, num_nextn_predict_layers=1),
    "deepseek_v3-full_q-bias-all_moe": dict(S, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16,
                                            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                                            n_routed_experts=4, num_experts_per_tok=1, n_group=1, topk_group=1,
                                            moe_intermediate_size=16, n_shared_experts=1, first_k_dense_replace=0,
                                            attention_bias=True, num_nextn_predict_layers=0),
    "gpt_oss": dict(S, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                    sliding_window=8),
    "gpt_oss-types-nobias": dict(S, num_key_value_heads=1, head_dim=8, num_local_experts=3, num_experts_per_tok=3,
                                 layer_types=["full_attention"] * 3 + ["sliding_attention"], attention_bias=False),
    "llama4_text": dict(S, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=1,
                        intermediate_size=32, intermediate_size_mlp=48, interleave_moe_layer_step=2,
                        attention_chunk_size=16),
    "llama4_text-noqk-nochunk-lists": dict(S, num_key_value_heads=2, head_dim=16, num_local_experts=2,
                                           intermediate_size=32, intermediate_size_mlp=40, use_qk_norm=False,
                                           attention_chunk_size=None, no_rope_layers=[1, 0, 1, 0],
                                           moe_layers=[0, 2]),
    "llama4": {"text_config": dict(S, model_type="llama4_text", num_key_value_heads=2, head_dim=16,
                                   num_local_experts=4, intermediate_size=32, intermediate_size_mlp=48,
                                   attention_chunk_size=16),
               "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 32, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "intermediate_size": 128, "image_size": 28,
                                 "patch_size": 7, "vision_output_dim": 48, "projector_input_dim": 40,
                                 "projector_output_dim": 40}},
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128),
    "gpt2-untied-n_inner": dict(model_type="gpt2", n_embd=64, n_layer=3, n_head=2, vocab_size=999, n_positions=64,
                                n_inner=96, tie_word_embeddings=False, activation_function="relu"),
    "gpt_neox": dict(S, rotary_pct=0.5),
    "gpt_neox-nobias-tied-serial": dict(S, attention_bias=False, tie_word_embeddings=True,
                                        use_parallel_residual=False),
    "falcon-7b-style": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000),
    "falcon-mha-serial-bias": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000,
                                   multi_query=False, parallel_attn=False, bias=True),
    "falcon-40b-style": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000,
                             new_decoder_architecture=True, num_kv_heads=2),
    "falcon-new-1ln-ffn-untied": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000,
                                      new_decoder_architecture=True, num_kv_heads=1, num_ln_in_parallel_attn=1,
                                      ffn_hidden_size=96, tie_word_embeddings=False),
    "bert": dict(S, type_vocab_size=3),
    "bert-mlm": dict(S, architectures=["BertForMaskedLM"]),
    "bert-pretraining": dict(S, architectures=["BertForPreTraining"]),
}


def small(case: str) -> dict:
    data = dict(SMALL[case])
    data.setdefault("model_type", case.split("-")[0])
    return data


def test_every_family_is_exercised():
    families = {small(case)["model_type"] for case in SMALL}
    assert families == set(registry.supported_model_types()) - {"custom"}


@pytest.mark.parametrize("case", sorted(SMALL))
def test_small_config_equals_transformers_module(tf, case):
    check_against_transformers(small(case))


def test_saved_configs_read_as_the_files_transformers_writes(tf, tmp_path):
    """save_pretrained writes transformers 5 spellings (Qwen3-MoE's num_local_experts, rope_parameters, the
    computed layer_types): the file, read back by memplan, still matches."""
    for case in ("qwen3_moe", "gemma3_text", "llama4_text", "deepseek_v3", "gpt_oss", "qwen2_moe"):
        config, _ = built(small(case))
        folder = tmp_path / case
        config.save_pretrained(folder)
        data = json.loads((folder / "config.json").read_text())
        check_against_transformers(data, str(folder))
        assert count_parameters(load_hf_config(folder).arch).total == count_parameters(
            registry.read_config(small(case))).total


# ---- built-in profiles: full size on the meta device ------------------------------------------------------
# name -> the exact count its cited source publishes (typed from the source, not from this code)
PUBLISHED = {
    "gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200,
    "bert-base": 109_482_240, "bert-large": 335_141_888,
    "llama-2-7b": 6_738_415_616, "llama-2-13b": 13_015_864_320, "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248, "llama-3-70b": 70_553_706_496, "llama-3.1-405b": 405_853_388_800,
    "llama-3.1-8b": 8_030_261_248, "llama-3.3-70b": 70_553_706_496,
    "mistral-7b": 7_241_732_096, "mixtral-8x7b": 46_702_792_704, "qwen2.5-7b": 7_615_616_512,
    "falcon-7b": 6_921_720_704, "gpt-neox-20b": 20_554_567_680, "pythia-160m": 162_322_944,
    "qwen3-0.6b": 596_049_920, "qwen3-8b": 8_190_735_360, "qwen3-32b": 32_762_123_264,
    "qwen3-30b-a3b": 30_532_122_624, "qwen3-235b-a22b": 235_093_634_560, "qwen1.5-moe-a2.7b": 14_315_784_192,
    "gemma-7b": 8_537_680_896, "gemma-2-9b": 9_241_705_984, "gemma-2-27b": 27_227_128_320,
    "gemma-3-27b": 27_432_406_640, "phi-3-mini": 3_821_079_552, "phi-4": 14_659_507_200,
    "olmo-2-7b": 7_298_617_344, "gpt-oss-20b": 20_914_757_184, "gpt-oss-120b": 116_829_156_672,
    "llama-4-scout": 108_641_793_536,
}
# no exact count published: GPT-3 (the paper's 175.0B), DeepSeek-V3 (671B total, 37B activated)
ROUNDED = {"gpt3-175b": 175.0e9, "deepseek-v3": 671e9}
# no family file: the architecture read from transformers' module tree, stored in the profile and checked against
# it (and the module's parameter count) in tests/test_new_families.py
MODULE_TREE = {"olmo-3-7b", "olmo-3-32b", "smollm3-3b", "apertus-8b"}
REQUIRED = set(PUBLISHED) | set(ROUNDED) | MODULE_TREE


def test_every_required_profile_is_there_and_checked():
    assert set(catalog.models()) == REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED - MODULE_TREE))
def test_profile_equals_transformers_and_its_published_count(tf, name):
    spec = catalog.models()[name]
    check_against_transformers(spec.hf_config, name)
    total = count_parameters(spec.arch).total
    if name in PUBLISHED:
        assert spec.published_parameters == PUBLISHED[name] == total
    else:
        assert spec.published_parameters is None
        assert abs(total - ROUNDED[name]) / ROUNDED[name] < 0.005


def test_profile_classes_are_the_ones_the_configs_name(tf):
    for name, spec in catalog.models().items():
        data = spec.hf_config
        if name in MODULE_TREE:  # AutoModelForCausalLM's class for its model_type
            assert hasattr(tf, data["architectures"][0]), name
            continue
        fam = registry.get_family(data["model_type"])
        cls = fam.transformers_class(data) if callable(fam.transformers_class) else fam.transformers_class
        assert hasattr(tf, cls), name
        assert cls == data["architectures"][0], name


def test_gpt3_is_gpt2_at_the_papers_size():
    # Brown et al. 2020 Table 2.1 gives 175.0B and no exact count.  GPT-2's block, 12 d^2 + 13 d per layer, plus
    # token and position embeddings and the final LayerNorm: independent of count_parameters.
    d, L = 12288, 96
    assert count_parameters(catalog.models()["gpt3-175b"].arch).total == L * (12 * d * d + 13 * d) \
        + (50257 + 2048) * d + 2 * d


# ---- MoE: active parameters per token by hand from the config ---------------------------------------------
def _inactive_by_hand(name: str, c: dict) -> int:
    """Parameters of the routed experts a token does not use: (E - k) experts per MoE layer."""
    t = c.get("text_config", c)
    h = t["hidden_size"]
    if name == "mixtral-8x7b":
        return t["num_hidden_layers"] * (t["num_local_experts"] - t["num_experts_per_tok"]) * 3 * h * \
            t["intermediate_size"]
    if name in ("qwen1.5-moe-a2.7b", "qwen3-30b-a3b", "qwen3-235b-a22b"):
        return t["num_hidden_layers"] * (t["num_experts"] - t["num_experts_per_tok"]) * 3 * h * \
            t["moe_intermediate_size"]
    if name == "deepseek-v3":
        return (t["num_hidden_layers"] - t["first_k_dense_replace"]) * \
            (t["n_routed_experts"] - t["num_experts_per_tok"]) * 3 * h * t["moe_intermediate_size"]
    if name.startswith("gpt-oss"):
        f = t["intermediate_size"]  # gate_up (h x 2f + 2f) and down (f x h + h) per expert
        return t["num_hidden_layers"] * (t["num_local_experts"] - t["num_experts_per_tok"]) * (3 * h * f + 2 * f + h)
    if name == "llama-4-scout":
        return len(t["moe_layers"]) * (t["num_local_experts"] - t["num_experts_per_tok"]) * 3 * h * \
            t["intermediate_size"]
    raise AssertionError(name)


MOE = ["mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "gpt-oss-20b",
       "gpt-oss-120b", "llama-4-scout"]


def test_moe_profiles_are_the_moe_ones():
    assert {n for n, s in catalog.models().items() if s.arch.moe} == set(MOE)


@pytest.mark.parametrize("name", MOE)
def test_moe_active_parameters_by_hand(name):
    spec = catalog.models()[name]
    counts = count_parameters(spec.arch)
    extras = sum(x.params for x in spec.arch.extras)  # a vision tower is not active per text token
    assert counts.active == counts.total - _inactive_by_hand(name, spec.hf_config) - extras


def test_moe_active_counts_as_published():
    m = {n: count_parameters(catalog.models()[n].arch) for n in ("mixtral-8x7b", "gpt-oss-20b", "gpt-oss-120b")}
    assert round(m["mixtral-8x7b"].active / 1e9, 1) == 12.9  # Mistral AI: "12.9B parameters per token"
    # gpt-oss model card Table 1: 3.61B / 5.13B active, "unembedding parameters are counted towards active, but
    # not embeddings"
    for name, active in (("gpt-oss-20b", 3.61), ("gpt-oss-120b", 5.13)):
        assert round((m[name].active - m[name].embeddings) / 1e9, 2) == active


def test_dense_models_are_fully_active():
    for name, spec in catalog.models().items():
        counts = count_parameters(spec.arch)
        extras = sum(x.params for x in spec.arch.extras if not x.per_token)  # xIELU's run on every token
        assert (counts.active == counts.total - extras) == (name not in MOE), name


def test_deepseek_mtp_is_declared_not_counted(tf):
    spec = catalog.models()["deepseek-v3"]
    a, counts = spec.arch, count_parameters(spec.arch)
    assert a.mtp is not None and a.mtp.depth == spec.hf_config["num_nextn_predict_layers"] == 1
    assert not a.mtp.trained and counts.mtp == 0
    _, model = built(spec.hf_config)
    assert len(text_layers(model, 61)) == 61  # DeepseekV3ForCausalLM builds the 61 main layers only
    # one MoE layer (the 58 MoE layers' per-layer count) + enorm, hnorm, the final norm + eh_proj (2h x h)
    h = a.hidden_size
    moe_layer = next(g.per_layer for g in counts.groups if "MoE" in g.kind)
    assert counts.mtp_declared == moe_layer + 3 * h + 2 * h * h


# ---- layer groups per family, from the config's own keys ----------------------------------------------------
def _tally(model) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for g in model.groups:
        a, f = g.layer.attention, g.layer.ffn
        key = (a.window_kind, a.window, "moe" if f.moe else "dense")
        out[key] = out.get(key, 0) + g.count
    return out


def test_layer_groups_of_the_profiles_follow_their_configs():
    m = {n: s.arch for n, s in catalog.models().items()}
    cfg = {n: s.hf_config for n, s in catalog.models().items()}
    # Gemma 2: layer_types absent, Gemma2Config alternates sliding (even layers) and global
    for name in ("gemma-2-9b", "gemma-2-27b"):
        n, w = cfg[name]["num_hidden_layers"], cfg[name]["sliding_window"]
        assert _tally(m[name]) == {("sliding", w, "dense"): n // 2, ("global", None, "dense"): n // 2}
    assert _tally(m["gemma-2-9b"]) == {("sliding", 4096, "dense"): 21, ("global", None, "dense"): 21}
    # Gemma 3 27B: sliding_window_pattern 6 (class default): 52 sliding (1024) + 10 global
    t = cfg["gemma-3-27b"]["text_config"]
    n = t["num_hidden_layers"]
    assert _tally(m["gemma-3-27b"]) == {("sliding", t["sliding_window"], "dense"): n - n // 6,
                                        ("global", None, "dense"): n // 6}
    assert n - n // 6 == 52
    # gpt-oss: layer_types in the file
    for name in ("gpt-oss-20b", "gpt-oss-120b"):
        types = cfg[name]["layer_types"]
        assert _tally(m[name]) == {("sliding", 128, "moe"): types.count("sliding_attention"),
                                   ("global", None, "moe"): types.count("full_attention")}
    # DeepSeek-V3: first_k_dense_replace dense layers, then MoE
    c = cfg["deepseek-v3"]
    assert _tally(m["deepseek-v3"]) == {("global", None, "dense"): c["first_k_dense_replace"],
                                        ("global", None, "moe"): c["num_hidden_layers"] - c["first_k_dense_replace"]}
    assert [g.count for g in m["deepseek-v3"].groups] == [3, 58]
    # Llama 4 Scout: no_rope_layers 0 = NoPE global, 1 = chunked (attention_chunk_size), all MoE
    t = cfg["llama-4-scout"]["text_config"]
    assert _tally(m["llama-4-scout"]) == {("chunked", t["attention_chunk_size"], "moe"): sum(t["no_rope_layers"]),
                                          ("global", None, "moe"): t["no_rope_layers"].count(0)}
    assert [s.attention.position for s in m["llama-4-scout"].layers()] == \
        ["rotary" if r else "none" for r in t["no_rope_layers"]]
    # Mistral 7B v0.1 and Phi-3-mini: one sliding_window for every layer
    assert _tally(m["mistral-7b"]) == {("sliding", 4096, "dense"): 32}
    assert _tally(m["phi-3-mini"]) == {("sliding", 2047, "dense"): 32}
    # Qwen2.5 / Qwen3: use_sliding_window false, so global despite sliding_window / max_window_layers
    for name in ("qwen2.5-7b", "qwen3-8b", "qwen3-30b-a3b"):
        assert not cfg[name]["use_sliding_window"]
        assert {k[:2] for k in _tally(m[name])} == {("global", None)}


def test_layer_descriptions_name_the_kinds():
    m = catalog.models()
    assert "21 sliding-window (4096)" in m["gemma-2-9b"].arch.describe_layers()
    assert "21 global" in m["gemma-2-9b"].arch.describe_layers()
    text = m["deepseek-v3"].arch.describe_layers()
    assert "3 dense FFN (18432)" in text and "58 MoE (256 experts of 2048, top-8 + shared (2048))" in text
    assert "36 chunked-local (8192)" in m["llama-4-scout"].arch.describe_layers()


def test_attention_details_from_the_configs():
    """Fields that change memory or time but not the count (values from the cited config.json files)."""
    m = {n: s.arch for n, s in catalog.models().items()}
    first = {n: a.first.attention for n, a in m.items()}
    assert (first["gpt2"].dropout, m["gpt2"].first.dropout, m["gpt2"].embeddings.dropout) == (0.1, 0.1, 0.1)
    assert first["bert-base"].dropout == 0.1 and not m["bert-base"].causal
    assert m["bert-base"].head.objective == "encoder" and m["bert-base"].head.pooler
    assert first["llama-2-7b"].dropout == 0.0 and m["llama-2-7b"].first.dropout == 0.0
    assert first["mixtral-8x7b"].window is None and first["qwen2.5-7b"].window is None
    assert (first["llama-3-8b"].kv_heads, first["llama-2-7b"].kv_heads, first["falcon-7b"].kv_heads) == (8, 32, 1)
    assert m["falcon-7b"].first.parallel_residual and first["pythia-160m"].rotary_fraction == 0.25
    assert m["llama-3.1-405b"].max_positions == 131072
    assert first["gemma-2-9b"].softcap == 50.0 and m["gemma-2-9b"].head.softcap == 30.0
    assert m["gemma-2-9b"].first.norm_place == "sandwich" and m["gemma-2-9b"].embeddings.scale
    assert (first["gemma-3-27b"].qk_norm, first["gemma-3-27b"].softcap, first["gemma-3-27b"].head_dim) == (
        "head", None, 128)
    assert first["qwen3-8b"].qk_norm == "head" and first["olmo-2-7b"].qk_norm == "full"
    assert m["olmo-2-7b"].first.norm_place == "sublayer-post"
    assert first["phi-4"].fused_qkv and m["phi-4"].first.ffn.fused_gate_up and first["phi-4"].window is None
    assert first["gpt-oss-20b"].sinks and first["gpt-oss-20b"].qkv_bias and first["gpt-oss-20b"].head_dim == 64
    d = first["deepseek-v3"]
    assert (d.kind, d.q_lora_rank, d.kv_lora_rank, d.qk_rope_head_dim, d.head_dim, d.value_dim) == (
        "mla", 1536, 512, 64, 192, 128)
    assert d.kv_cache_elems_per_token() == 512 + 64
    assert first["llama-4-scout"].qk_norm == "l2" and first["llama-4-scout"].window_kind == "chunked"


def test_settings_that_do_not_change_the_count_are_read():
    """Dropouts, rotary share, windows, causality and heads: read from the keys transformers reads."""
    def first(case, **extra):
        a = registry.read_config(dict(small(case), **extra))
        return a, a.first.attention

    a, att = first("gpt2", attn_pdrop=0.2, resid_pdrop=0.3, embd_pdrop=0.05)
    assert (att.dropout, a.first.dropout, a.embeddings.dropout, att.causal) == (0.2, 0.3, 0.05, True)
    a, att = first("bert", attention_probs_dropout_prob=0.15, hidden_dropout_prob=0.25)
    assert (att.dropout, a.first.dropout, a.embeddings.dropout, att.causal) == (0.15, 0.25, 0.25, False)
    a, att = first("gpt_neox", attention_dropout=0.2, hidden_dropout=0.1)
    assert (att.rotary_fraction, att.dropout, a.first.dropout, a.embeddings.dropout) == (0.5, 0.2, 0.1, 0.1)
    a, att = first("falcon-7b-style", attention_dropout=0.2, hidden_dropout=0.1)
    assert (att.dropout, a.first.dropout, att.position, att.kv_heads) == (0.2, 0.1, "rotary", 1)
    a, att = first("qwen2", use_sliding_window=False, sliding_window=16)
    assert att.window is None
    a, att = first("phi3")
    assert (att.rotary_fraction, att.window, a.first.dropout) == (0.5, 32, 0.1)
    a, att = first("gemma2", use_bidirectional_attention=True)
    assert not att.causal
    a, _ = first("gemma3_text", use_bidirectional_attention=True)
    assert {s.attention.window for s in a.layers()} == {None, 8 // 2 + 1}  # Gemma3TextConfig.__post_init__
    a, att = first("gemma-default-head_dim")
    assert att.head_dim == 256  # GemmaConfig.head_dim default, not hidden // heads
    a, att = first("qwen3-default-head_dim-sliding-bias-tied")
    assert att.head_dim == 128  # Qwen3Config.head_dim default
    a, att = first("mixtral", attention_dropout=0.1)
    assert (a.first.ffn.experts, a.first.ffn.top_k, att.dropout) == (4, 2, 0.1)


def test_multimodal_extras_say_they_do_not_run_on_text(tf):
    for name in ("gemma-3-27b", "llama-4-scout"):
        a = catalog.models()[name].arch
        assert [x.name for x in a.extras][-1] == "multimodal projector"
        assert all("not run on text-only batches" in x.note for x in a.extras)
    siglip = catalog.models()["gemma-3-27b"].arch.extras[0]
    assert siglip.params == 416_866_032  # SiglipVisionModel(vision_config) of gemma-3-27b on the meta device
    _, model = built(catalog.models()["gemma-3-27b"].hf_config)
    assert siglip.params == sum(p.numel() for p in model.model.vision_tower.parameters())


# ---- PEFT defaults and module names ----------------------------------------------------------------------------
def test_peft_targets_are_peft_0_21_defaults():
    constants = pytest.importorskip("peft.utils.constants")
    mapping = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    for model_type, fam in registry.all_families().items():
        if model_type == "custom":
            continue
        expected = mapping.get(model_type)
        assert fam.peft_targets == (tuple(expected) if expected is not None else None), model_type


def test_peft_targets_name_modules_the_layers_have():
    for name, spec in catalog.models().items():
        if name in MODULE_TREE:  # no family file: PEFT's defaults are looked up by model_type at run time
            continue
        fam = registry.get_family(spec.hf_config["model_type"])
        names = {x.peft_name for layer, _ in spec.arch.kinds() for x in spec.arch.linears(layer) if x.is_module}
        assert set(fam.peft_targets or ()) <= names, name


# ---- names -----------------------------------------------------------------------------------------------------
def test_profiles_resolve_by_name_and_cite_sources():
    for name in REQUIRED:
        spec = catalog.get_model_profile(name)
        assert spec.name == name and spec.source and len(spec.source) > 40


def test_aliases_resolve_to_their_profile_and_never_collide():
    owner: dict[str, str] = {}
    for stem, spec in catalog.models().items():
        for alias in [stem, *spec.aliases]:
            key = catalog.normalize(alias)
            assert owner.setdefault(key, stem) == stem, f"{alias!r} names both {owner[key]} and {stem}"
            assert catalog.get_model_profile(alias).name == stem


@pytest.mark.parametrize("typed, expected", [
    ("meta-llama/Llama-2-7b-hf", "llama-2-7b"), ("bert-base-uncased", "bert-base"), ("Llama 2 7B", "llama-2-7b"),
    ("LLAMA2_70B", "llama-2-70b"), ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"), ("tiiuae/falcon-7b", "falcon-7b"), ("gpt-3", "gpt3-175b"),
    ("llama-3.1-8b", "llama-3.1-8b"), ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Meta-Llama-3-8B", "llama-3-8b"), ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b"),
    ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"), ("Qwen/Qwen3-0.6B", "qwen3-0.6b"),
    ("google/gemma-2-9b-it", "gemma-2-9b"), ("google/gemma-3-27b-it", "gemma-3-27b"),
    ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini"), ("microsoft/phi-4", "phi-4"),
    ("allenai/OLMo-2-1124-7B", "olmo-2-7b"), ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
    ("deepseek-ai/DeepSeek-R1", "deepseek-v3"), ("openai/gpt-oss-120b", "gpt-oss-120b"),
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout"), ("Qwen/Qwen1.5-MoE-A2.7B", "qwen1.5-moe-a2.7b"),
])
def test_names_as_users_type_them(typed, expected):
    assert catalog.get_model_profile(typed).name == expected


def test_typo_gets_did_you_mean():
    with pytest.raises(MemplanError, match=r"unknown model 'lama-2-7b'; did you mean .*'llama-2-7b'"):
        catalog.get_model_profile("lama-2-7b")


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_name_comes_from_folder_then_file_then_name_or_path(tmp_path):
    cfg = catalog.models()["llama-2-7b"].hf_config
    assert load_hf_config(_write(tmp_path / "My-Llama" / "config.json", cfg).parent).name == "My-Llama"
    assert load_hf_config(_write(tmp_path / "a" / "config.json", cfg)).name == "a"
    assert load_hf_config(_write(tmp_path / "b" / "tiny-llama.json", cfg)).name == "tiny-llama"
    snapshot = tmp_path / "snapshots" / ("0123456789abcdef" * 3)[:40]
    named = dict(cfg, _name_or_path="meta-llama/Llama-2-7b-hf")
    assert load_hf_config(_write(snapshot / "config.json", named).parent).name == "Llama-2-7b-hf"
    assert load_hf_config(_write(snapshot / "config.json", cfg).parent).name == "llama"


def test_a_config_file_reads_as_its_profile(tmp_path):
    for name in ("mistral-7b", "gemma-3-27b", "deepseek-v3"):
        profile = catalog.models()[name]
        folder = _write(tmp_path / name / "config.json", profile.hf_config).parent
        spec = catalog.resolve_model(str(folder))
        assert spec.name == name and spec.architecture == profile.architecture


# ---- bad configs: one line naming the file and the key, through the CLI ------------------------------------
def _bad(tmp_path: Path, profile: str, edit) -> tuple[Path, str]:
    data = json.loads(json.dumps(catalog.models()[profile].hf_config))
    edit(data)
    path = _write(tmp_path / f"{profile}-bad.json", data)
    return path, str(path)


def _pop(*keys):
    def edit(data):
        target = data
        for k in keys[:-1]:
            target = target[k]
        target.pop(keys[-1])
    return edit


def _set(value, *keys):
    def edit(data):
        target = data
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return edit


BAD = [
    ("qwen3-8b", _set(5, "num_key_value_heads"), ["divisible", "num_key_value_heads"]),
    ("gemma-2-9b", _set(["sliding_attention", "banana_attention"] * 21, "layer_types"), ["'layer_types'",
                                                                                         "banana_attention"]),
    ("gpt-oss-20b", _set(["full_attention"] * 3, "layer_types"), ["'layer_types'", "24 entries"]),
    ("deepseek-v3", _pop("kv_lora_rank"), ["missing key 'kv_lora_rank'"]),
    ("deepseek-v3", _pop("q_lora_rank"), ["missing key 'q_lora_rank'"]),
    ("deepseek-v3", _pop("qk_rope_head_dim"), ["missing key 'qk_rope_head_dim'"]),
    ("qwen3-30b-a3b", _set(200, "num_experts_per_tok"), ["'num_experts_per_tok'", "num_experts (128)"]),
    ("mixtral-8x7b", _set(9, "num_experts_per_tok"), ["'num_experts_per_tok'", "9"]),
    ("llama-4-scout", _set(17, "text_config", "num_experts_per_tok"), ["'text_config.num_experts_per_tok'"]),
    ("qwen3-8b", _set("4096", "hidden_size"), ["'hidden_size' must be a positive integer, got '4096'"]),
    ("gemma-3-27b", _set("62", "text_config", "num_hidden_layers"), ["'text_config.num_hidden_layers'"]),
    ("phi-4", _set(-5, "intermediate_size"), ["'intermediate_size' must be a positive integer, got -5"]),
    ("olmo-2-7b", _set(-1, "vocab_size"), ["'vocab_size'"]),
    ("gpt-oss-20b", _set(0.5, "sliding_window"), ["'sliding_window'"]),
    ("deepseek-v3", _set(7, "n_group"), ["'n_group'"]),
    ("llama-4-scout", _set([1, 0], "text_config", "no_rope_layers"), ["'text_config.no_rope_layers'"]),
    ("qwen1.5-moe-a2.7b", _set([30], "mlp_only_layers"), ["'mlp_only_layers'"]),
    ("gemma-2-9b", _set("no", "tie_word_embeddings"), ["'tie_word_embeddings' must be true or false"]),
    ("llama-3-8b", _set("0.1", "attention_dropout"), ["'attention_dropout' must be a finite number"]),
    ("qwen3-8b", _pop("vocab_size"), ["missing key 'vocab_size'", "qwen3"]),
    ("llama-2-7b", _pop("intermediate_size"), ["missing key 'intermediate_size'"]),
    ("gemma-3-27b", _pop("text_config"), ["missing key 'text_config'"]),
    ("deepseek-v3", _set(2, "moe_layer_freq"), ["moe_layer_freq", "not supported"]),
    ("llama-3-8b", _set(0, "num_hidden_layers"), ["'num_hidden_layers' must be a positive integer, got 0"]),
    ("llama-3-8b", _set(True, "num_hidden_layers"), ["'num_hidden_layers' must be a positive integer, got True"]),
    ("gpt2", _set(1.5, "attn_pdrop"), ["'attn_pdrop' must be a probability"]),
    ("gpt2", _pop("n_embd"), ["missing key 'n_embd'"]),
]


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                 "vocab_size"])
@pytest.mark.parametrize("profile", ["llama-2-7b", "qwen3-8b", "gemma-2-9b", "phi-4", "olmo-2-7b", "gpt-oss-20b"])
def test_missing_structural_key_is_named(tmp_path, profile, key):
    path, shown = _bad(tmp_path, profile, _pop(key))
    with pytest.raises(MemplanError) as info:
        load_hf_config(path)
    assert f"missing key {key!r}" in str(info.value) and shown in str(info.value)


@pytest.mark.parametrize("profile, edit, expected", BAD, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(BAD)])
def test_bad_config_is_one_line_naming_file_and_key(capsys, tmp_path, profile, edit, expected):
    path, shown = _bad(tmp_path, profile, edit)
    for command in ("estimate", "models"):
        code, out, err = run_cli(capsys, command, path)
        assert code == 2, (command, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("memplan: error: "), err
        assert shown in lines[0], lines[0]
        for piece in expected:
            assert piece in lines[0], lines[0]
        assert "Traceback" not in err


def test_encoder_decoder_is_refused_with_a_reason(capsys, tmp_path):
    path = _write(tmp_path / "t5.json", {"model_type": "t5", "d_model": 512, "num_layers": 6, "vocab_size": 32128})
    code, _, err = run_cli(capsys, "estimate", path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "encoder-decoder (T5)" in err and "decoder-only and encoder-only" in err and str(path) in err


def test_unknown_model_type_says_how_to_trace_it(tmp_path):
    with pytest.raises(MemplanError) as info:
        load_hf_config(_write(tmp_path / "config.json", {"model_type": "qwen4"}))
    assert "unknown model_type 'qwen4'" in str(info.value) and "memplan trace" in str(info.value)


@pytest.mark.parametrize("name, data, expected", [
    ("missing", None, "no such file or folder"),
    ("folder", "", "has no config.json"),
    ("malformed", '{"model_type": "llama",', "is not valid JSON"),
    ("list", "[1, 2]", "holds a list, not an object"),
    ("no-type", {"hidden_size": 8}, "missing key 'model_type'"),
])
def test_file_problems(tmp_path, name, data, expected):
    path = tmp_path / name
    if data == "":
        path.mkdir()
    elif data is not None:
        _write(path / "config.json", data)
    with pytest.raises(MemplanError, match=expected):
        load_hf_config(path)


@pytest.mark.parametrize("profile, extra", [("gpt2", {"add_cross_attention": True}),
                                            ("bert-base", {"position_embedding_type": "relative_key"}),
                                            ("bert-base", {"is_decoder": True, "add_cross_attention": True})])
def test_unsupported_variants_are_refused(tmp_path, profile, extra):
    path = _write(tmp_path / "config.json", dict(catalog.models()[profile].hf_config, **extra))
    with pytest.raises(MemplanError, match="not supported"):
        load_hf_config(path)


# ---- adding a family is adding its file -------------------------------------------------------------------------
MYFAM = '''
"""A test family: Llama's layer with a bias on every projection."""
from memplan.families import _decoder as d
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec


def read(c):
    hidden = c.integer("hidden_size")
    layer = LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=True, out_bias=True),
                      ffn=d.gated_ffn(c, c.integer("intermediate_size"), bias=True))
    return d.decoder(c, family="myfam", hidden=hidden, layers=[layer] * d.n_layers(c),
                     vocab=c.integer("vocab_size"), max_positions=2048, head=Head())


FAMILY = Family(model_types=("myfam", "myfam_text"), read=read, description="test family",
                peft_targets=("q_proj",))
'''


def test_a_family_file_is_all_it_takes(tmp_path, monkeypatch, capsys):
    import memplan.families as pkg

    folder = tmp_path / "families"
    _write(folder / "myfam.py", MYFAM)
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(folder)])
    for fn in (registry._load, registry.all_families):
        fn.cache_clear()
    try:
        assert "myfam" in registry.supported_model_types() and "myfam_text" in registry.supported_model_types()
        h, f, v, n = 32, 48, 100, 3
        cfg = {"model_type": "myfam_text", "hidden_size": h, "intermediate_size": f, "vocab_size": v,
               "num_hidden_layers": n, "num_attention_heads": 4}
        path = _write(tmp_path / "m" / "config.json", cfg)
        spec = load_hf_config(path)
        per_layer = 4 * (h * h + h) + 2 * (h * f + f) + (f * h + h) + 2 * h  # biased q/k/v/o, MLP, 2 norms
        assert count_parameters(spec.arch).total == n * per_layer + 2 * v * h + h
        code, out, _ = run_cli(capsys, "models", path)
        assert code == 0 and f"{n * per_layer + 2 * v * h + h:,}" in out
    finally:
        sys.modules.pop("memplan.families.myfam", None)
        monkeypatch.undo()
        for fn in (registry._load, registry.all_families):
            fn.cache_clear()


# ---- the CLI listing -------------------------------------------------------------------------------------------
def test_models_lists_every_profile_with_its_kinds(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == REQUIRED
    assert "21 sliding 4096 + 21 global" in rows["gemma-2-9b"]
    assert "3 dense + 58 MoE 256x2048 top-8+shared" in rows["deepseek-v3"] and "37.6B" in rows["deepseek-v3"]
    assert "36 chunked 8192 + 12 global NoPE" in rows["llama-4-scout"]


def test_models_shows_groups_and_extras(capsys):
    code, out, _ = run_cli(capsys, "models", "deepseek-v3")
    assert code == 0
    assert "0-2" in out and "3-60" in out and "MTP modules (declared, not in total)" in out
    assert f"{count_parameters(catalog.models()['deepseek-v3'].arch).mtp_declared:,}" in out
    code, out, _ = run_cli(capsys, "models", "gemma-3-27b")
    assert "vision tower (SigLIP)" in out and "416,866,032" in out and "not run on text-only batches" in out
    assert "5, 11, ..., 59 (every 6)" in out


def test_loading_imports_neither_torch_nor_transformers(tmp_path):
    folder = _write(tmp_path / "m" / "config.json", catalog.models()["llama-4-scout"].hf_config).parent
    code = ("import sys; from memplan.families.hf import load_hf_config; import memplan.catalog as c; "
            f"load_hf_config({str(folder)!r}); c.models(); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name,expected", [("gemma-2-9b", "eager"), ("gpt-oss-20b", "eager"), ("qwen3-8b", "sdpa")])
def test_default_attention_is_what_transformers_runs_for_the_class(name, expected):
    """transformers picks sdpa when the class supports it (`_supports_sdpa`), else eager; Gemma2ForCausalLM and
    GptOssForCausalLM do not (soft-capping, sinks), so their training estimate defaults to eager too."""
    import transformers

    from memplan.families.registry import find_family
    from memplan.setups import training_setup

    setup = training_setup(name)
    assert setup.workload.attention == expected
    fam = find_family(setup.model.architecture.family)
    assert getattr(transformers, fam.transformers_class)._supports_sdpa == (expected == "sdpa")
    assert training_setup(name, attention="sdpa").workload.attention == "sdpa"  # an explicit choice wins
    from memplan.setups import serving_setup

    assert serving_setup(name, engine="hf").attention == expected  # transformers' generate() runs the same class
