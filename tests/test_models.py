"""Built-in model profiles: every exact count reproduces its published figure, and names resolve.

The published counts below are typed from the sources each profile cites (Hugging Face safetensors metadata,
model cards, KerasHub presets, papers), not from this code's output.
"""
from __future__ import annotations

import pytest

import memplan.catalog as catalog
from memplan.errors import MemplanError
from memplan.spec.model import count_parameters

# name -> the exact published count (see each profile's `source`)
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "bert-base": 109_482_240,
    "bert-large": 335_141_888,
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-7b": 7_615_616_512,
    "falcon-7b": 6_921_720_704,
    "gpt-neox-20b": 20_554_567_680,
    "pythia-160m": 162_322_944,
}


def test_every_required_profile_is_there():
    assert set(PUBLISHED) | {"gpt3-175b"} <= set(catalog.models())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_count_reproduces_published_figure(name):
    spec = catalog.models()[name]
    assert spec.published_parameters == PUBLISHED[name]
    assert count_parameters(spec.arch).total == PUBLISHED[name]


def test_every_profile_with_a_published_count_is_checked():
    with_count = {n for n, s in catalog.models().items() if s.published_parameters is not None}
    assert with_count == set(PUBLISHED)


def test_gpt3_matches_the_papers_rounded_175b():
    # Brown et al. 2020 Table 2.1 gives 175.0B and no exact count.
    spec = catalog.models()["gpt3-175b"]
    assert spec.published_parameters is None
    total = count_parameters(spec.arch).total
    assert abs(total - 175.0e9) / 175.0e9 < 0.005
    # GPT-2-style block, 12 d^2 + 13 d per layer (QKV 3d^2+3d, proj d^2+d, MLP 8d^2+5d, 2 LayerNorms 4d),
    # plus token and position embeddings and the final LayerNorm: independent of count_parameters.
    d, L = 12288, 96
    assert total == L * (12 * d * d + 13 * d) + (50257 + 2048) * d + 2 * d


def test_mixtral_active_parameters():
    # Top-2 of 8 experts: drop 6 experts x 3 matrices (w1, w2, w3) of 4096 x 14336 in each of 32 layers.
    counts = count_parameters(catalog.models()["mixtral-8x7b"].arch)
    assert counts.active == 46_702_792_704 - 32 * 6 * 3 * 4096 * 14336 == 12_879_925_248
    assert round(counts.active / 1e9, 1) == 12.9  # Mistral AI's announcement: "12.9B parameters per token"


def test_dense_models_are_fully_active():
    for name in ("llama-2-7b", "gpt2", "falcon-7b"):
        counts = count_parameters(catalog.models()[name].arch)
        assert counts.active == counts.total


@pytest.mark.parametrize("name", sorted(PUBLISHED) + ["gpt3-175b"])
def test_profile_resolves_by_its_own_name_and_source_is_cited(name):
    spec = catalog.get_model_profile(name)
    assert spec.name == name
    assert spec.source and len(spec.source) > 40


def test_aliases_resolve_to_their_profile_and_never_collide():
    owner: dict[str, str] = {}
    for stem, spec in catalog.models().items():
        for alias in [stem, *spec.aliases]:
            key = catalog.normalize(alias)
            assert owner.setdefault(key, stem) == stem, f"{alias!r} names both {owner[key]} and {stem}"
            assert catalog.get_model_profile(alias).name == stem


@pytest.mark.parametrize("typed, expected", [
    ("meta-llama/Llama-2-7b-hf", "llama-2-7b"),
    ("bert-base-uncased", "bert-base"),
    ("Llama 2 7B", "llama-2-7b"),
    ("LLAMA2_70B", "llama-2-70b"),
    ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("tiiuae/falcon-7b", "falcon-7b"),
    ("gpt-3", "gpt3-175b"),
])
def test_names_as_users_type_them(typed, expected):
    assert catalog.get_model_profile(typed).name == expected


def test_typo_gets_did_you_mean():
    with pytest.raises(MemplanError, match=r"unknown model 'lama-2-7b'; did you mean .*'llama-2-7b'"):
        catalog.get_model_profile("lama-2-7b")


def test_architecture_details_from_the_configs():
    """Spot checks of fields that change memory but not the count (values from the cited config.json files)."""
    m = catalog.models()
    assert (m["gpt2"].arch.attention_dropout, m["gpt2"].arch.hidden_dropout, m["gpt2"].arch.embedding_dropout) == (
        0.1, 0.1, 0.1)
    assert m["bert-base"].arch.attention_dropout == 0.1 and not m["bert-base"].arch.causal
    assert m["llama-2-7b"].arch.attention_dropout == 0.0 and m["llama-2-7b"].arch.hidden_dropout == 0.0
    assert m["mistral-7b"].arch.sliding_window == 4096
    assert m["mixtral-8x7b"].arch.sliding_window is None
    assert m["qwen2.5-7b"].arch.sliding_window is None  # use_sliding_window: false
    assert m["llama-3-8b"].arch.kv_heads == 8 and m["llama-2-7b"].arch.kv_heads == 32
    assert m["falcon-7b"].arch.kv_heads == 1 and m["falcon-7b"].arch.parallel_residual
    assert m["pythia-160m"].arch.rotary_fraction == 0.25
    assert m["llama-3.1-405b"].arch.max_positions == 131072
