"""config.json -> ModelSpec: our exact count against the real transformers module, family by family.

Each config is written to disk (by transformers' save_pretrained, or as the hub's config.json text), read back
by load_hf_config, and the count compared with sum(p.numel() for p in model.parameters()) of the module
transformers builds from the same file on the meta device (no memory, no weights; parameters() yields a tied
weight once).  Decoders are built as *ForCausalLM, BERT as BertModel (the base model, pooler included).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import memplan.catalog as catalog
from memplan.errors import MemplanError
from memplan.spec.hfconfig import SUPPORTED_MODEL_TYPES, load_hf_config
from memplan.spec.model import count_parameters


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    transformers.logging.set_verbosity_error()

    def count(folder: Path) -> int:
        cfg = transformers.AutoConfig.from_pretrained(folder)  # a local folder: no network
        auto = transformers.AutoModel if cfg.model_type == "bert" else transformers.AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(cfg)
        return sum(p.numel() for p in model.parameters())

    count.transformers = transformers  # type: ignore[attr-defined]
    return count


# ---- small configs built with transformers' own Config classes, one or more variants per family ---------
_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000)
_SMALL_DECODER = dict(_SMALL, intermediate_size=160, max_position_embeddings=256)
SMALL_CONFIGS = {
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128)),
    "gpt2-untied-n_inner": ("GPT2Config", dict(n_embd=64, n_layer=3, n_head=2, vocab_size=999, n_positions=64,
                                               n_inner=96, tie_word_embeddings=False, activation_function="relu")),
    "gpt_neox": ("GPTNeoXConfig", dict(_SMALL_DECODER, rotary_pct=0.5)),
    "gpt_neox-nobias-tied-serial": ("GPTNeoXConfig", dict(_SMALL_DECODER, attention_bias=False,
                                                          tie_word_embeddings=True, use_parallel_residual=False)),
    "llama": ("LlamaConfig", dict(_SMALL_DECODER, num_key_value_heads=2)),
    "llama-biases-head_dim-tied": ("LlamaConfig", dict(_SMALL_DECODER, num_key_value_heads=1, attention_bias=True,
                                                       mlp_bias=True, head_dim=32, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(_SMALL_DECODER, num_key_value_heads=2, sliding_window=32)),
    "mistral-head_dim-nowindow": ("MistralConfig", dict(_SMALL_DECODER, num_key_value_heads=4, head_dim=24,
                                                        sliding_window=None)),
    "mixtral": ("MixtralConfig", dict(_SMALL_DECODER, num_key_value_heads=2, num_local_experts=4,
                                      num_experts_per_tok=2)),
    "mixtral-3experts-top1": ("MixtralConfig", dict(_SMALL_DECODER, num_key_value_heads=1, num_local_experts=3,
                                                    num_experts_per_tok=1)),
    "qwen2": ("Qwen2Config", dict(_SMALL_DECODER, num_key_value_heads=2)),
    "qwen2-tied-sliding": ("Qwen2Config", dict(_SMALL_DECODER, num_key_value_heads=2, tie_word_embeddings=True,
                                               use_sliding_window=True, sliding_window=16, max_window_layers=0)),
    "falcon-7b-style": ("FalconConfig", dict(_SMALL)),  # multi_query, parallel_attn, one LayerNorm, tied
    "falcon-mha-serial-bias": ("FalconConfig", dict(_SMALL, multi_query=False, parallel_attn=False, bias=True)),
    "falcon-40b-style": ("FalconConfig", dict(_SMALL, new_decoder_architecture=True, num_kv_heads=2)),
    "falcon-new-1ln-ffn-untied": ("FalconConfig", dict(_SMALL, new_decoder_architecture=True, num_kv_heads=1,
                                                       num_ln_in_parallel_attn=1, ffn_hidden_size=96,
                                                       tie_word_embeddings=False)),
    "falcon-alibi": ("FalconConfig", dict(_SMALL, alibi=True)),
    "bert": ("BertConfig", dict(_SMALL, intermediate_size=128, max_position_embeddings=64, type_vocab_size=3)),
}


def test_every_supported_model_type_is_exercised():
    assert set(SUPPORTED_MODEL_TYPES) == {"gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "falcon",
                                          "bert"}
    built = {name.split("-")[0] for name in SMALL_CONFIGS} | {"falcon"}
    assert set(SUPPORTED_MODEL_TYPES) <= built


@pytest.mark.parametrize("case", sorted(SMALL_CONFIGS))
def test_small_config_count_equals_transformers_module(hf, tmp_path, case):
    cls_name, kwargs = SMALL_CONFIGS[case]
    getattr(hf.transformers, cls_name)(**kwargs).save_pretrained(tmp_path)
    spec = load_hf_config(tmp_path)
    assert count_parameters(spec.arch).total == hf(tmp_path)


def test_settings_that_do_not_change_the_count_are_read(hf, tmp_path):
    t = hf.transformers
    cases = {
        "gpt2": (t.GPT2Config(n_embd=64, n_layer=2, n_head=4, attn_pdrop=0.2, resid_pdrop=0.3, embd_pdrop=0.05),
                 dict(attention_dropout=0.2, hidden_dropout=0.3, embedding_dropout=0.05, causal=True)),
        "bert": (t.BertConfig(**_SMALL, intermediate_size=128, attention_probs_dropout_prob=0.15,
                              hidden_dropout_prob=0.25),
                 dict(attention_dropout=0.15, hidden_dropout=0.25, embedding_dropout=0.25, causal=False)),
        "neox": (t.GPTNeoXConfig(**_SMALL_DECODER, rotary_pct=0.5, attention_dropout=0.2, hidden_dropout=0.1),
                 dict(rotary_fraction=0.5, attention_dropout=0.2, hidden_dropout=0.1, embedding_dropout=0.1)),
        "falcon": (t.FalconConfig(**_SMALL, attention_dropout=0.2, hidden_dropout=0.1),
                   dict(attention_dropout=0.2, hidden_dropout=0.1, position="rotary", kv_heads=1)),
        "mistral": (t.MistralConfig(**_SMALL_DECODER, num_key_value_heads=2, sliding_window=32),
                    dict(sliding_window=32, kv_heads=2, max_positions=256, position="rotary")),
        "qwen2-window-off": (t.Qwen2Config(**_SMALL_DECODER, num_key_value_heads=2, use_sliding_window=False,
                                           sliding_window=16), dict(sliding_window=None)),
        "qwen2-window-on": (t.Qwen2Config(**_SMALL_DECODER, num_key_value_heads=2, use_sliding_window=True,
                                          sliding_window=16, max_window_layers=0), dict(sliding_window=16)),
        "mixtral": (t.MixtralConfig(**_SMALL_DECODER, num_key_value_heads=2, num_local_experts=4,
                                    num_experts_per_tok=2), dict(n_experts=4, experts_per_token=2)),
        "llama": (t.LlamaConfig(**_SMALL_DECODER, attention_dropout=0.1), dict(attention_dropout=0.1)),
    }
    for name, (cfg, expected) in cases.items():
        folder = tmp_path / name
        cfg.save_pretrained(folder)
        arch = load_hf_config(folder).arch
        assert {k: getattr(arch, k) for k in expected} == expected, name


# ---- the hub's config.json of real models (as published, transformers 4.x key spelling) -------------------
def _gpt2(n_embd: int, n_head: int, n_layer: int) -> dict:
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
            "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": n_embd, "n_head": n_head,
            "n_layer": n_layer, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
            "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
            "summary_use_proj": True, "vocab_size": 50257}


def _bert(hidden: int, layers: int, heads: int) -> dict:
    return {"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": hidden, "initializer_range": 0.02,
            "intermediate_size": 4 * hidden, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
            "model_type": "bert", "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
            "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522}


def _llama(hidden: int, ffn: int, layers: int, heads: int, kv: int, vocab: int, positions: int, **extra) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": hidden,
            "initializer_range": 0.02, "intermediate_size": ffn, "max_position_embeddings": positions,
            "model_type": "llama", "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": kv, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
            "torch_dtype": "float16", "vocab_size": vocab, **extra}


def _neox(hidden: int, layers: int, heads: int, vocab: int, act: str) -> dict:
    return {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": act,
            "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": 4 * hidden,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox",
            "num_attention_heads": heads, "num_hidden_layers": layers, "rotary_emb_base": 10000, "rotary_pct": 0.25,
            "tie_word_embeddings": False, "use_cache": True, "use_parallel_residual": True, "vocab_size": vocab}


_LLAMA3 = {"attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128001,
           "rope_theta": 500000.0}
REAL_CONFIGS = {
    "gpt2": _gpt2(768, 12, 12),
    "gpt2-medium": _gpt2(1024, 16, 24),
    "gpt2-large": _gpt2(1280, 20, 36),
    "gpt2-xl": _gpt2(1600, 25, 48),
    "bert-base": _bert(768, 12, 12),
    "bert-large": _bert(1024, 24, 16),
    "llama-2-7b": _llama(4096, 11008, 32, 32, 32, 32000, 4096, rope_scaling=None),
    "llama-2-13b": _llama(5120, 13824, 40, 40, 40, 32000, 4096, rope_scaling=None),
    "llama-2-70b": _llama(8192, 28672, 80, 64, 8, 32000, 4096, rope_scaling=None),
    "llama-3-8b": _llama(4096, 14336, 32, 32, 8, 128256, 8192, **_LLAMA3),
    "llama-3-70b": _llama(8192, 28672, 80, 64, 8, 128256, 8192, **_LLAMA3),
    "llama-3.1-405b": _llama(16384, 53248, 126, 128, 8, 128256, 131072, **_LLAMA3, mlp_bias=False, rope_scaling={
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
        "rope_type": "llama3"}),
    "mistral-7b": {"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
                   "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
                   "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
                   "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                   "sliding_window": 4096, "tie_word_embeddings": False, "vocab_size": 32000},
    "mixtral-8x7b": {"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
                     "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
                     "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
                     "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
                     "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
                     "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
                     "sliding_window": None, "tie_word_embeddings": False, "vocab_size": 32000},
    "qwen2.5-7b": {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
                   "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
                   "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28,
                   "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
                   "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                   "sliding_window": 131072, "tie_word_embeddings": False, "use_cache": True, "use_mrope": False,
                   "use_sliding_window": False, "vocab_size": 152064},
    "falcon-7b": {"alibi": False, "apply_residual_connection_post_layernorm": False,
                  "architectures": ["FalconForCausalLM"], "attention_dropout": 0.0, "bias": False,
                  "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 4544,
                  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
                  "multi_query": True, "new_decoder_architecture": False, "num_attention_heads": 71,
                  "num_hidden_layers": 32, "parallel_attn": True, "vocab_size": 65024},
    "gpt-neox-20b": _neox(6144, 44, 64, 50432, "gelu_fast"),
    "pythia-160m": _neox(768, 12, 12, 50304, "gelu"),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_config_matches_profile_and_transformers(hf, tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(REAL_CONFIGS[name]))
    spec = load_hf_config(folder)
    profile = catalog.models()[name]
    assert spec.name == name
    assert spec.architecture == profile.architecture  # the profile is exactly what the hub config says
    assert count_parameters(spec.arch).total == profile.published_parameters == hf(folder)


def test_every_hf_profile_has_a_real_config_checked():
    assert set(REAL_CONFIGS) == {n for n in catalog.models() if n != "gpt3-175b"}


# ---- names ------------------------------------------------------------------------------------------------
def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_name_comes_from_folder_then_file_then_name_or_path(tmp_path):
    cfg = REAL_CONFIGS["llama-2-7b"]
    assert load_hf_config(_write(tmp_path / "My-Llama" / "config.json", cfg).parent).name == "My-Llama"
    assert load_hf_config(_write(tmp_path / "a" / "config.json", cfg)).name == "a"
    assert load_hf_config(_write(tmp_path / "b" / "tiny-llama.json", cfg)).name == "tiny-llama"
    snapshot = tmp_path / "snapshots" / ("0123456789abcdef" * 3)[:40]
    named = dict(cfg, _name_or_path="meta-llama/Llama-2-7b-hf")
    assert load_hf_config(_write(snapshot / "config.json", named).parent).name == "Llama-2-7b-hf"
    assert load_hf_config(_write(snapshot / "config.json", cfg).parent).name == "llama"


def test_catalog_resolves_a_config_folder(tmp_path):
    folder = _write(tmp_path / "m7" / "config.json", REAL_CONFIGS["mistral-7b"]).parent
    spec = catalog.resolve_model(str(folder))
    assert spec.name == "m7" and count_parameters(spec.arch).total == 7_241_732_096


# ---- errors: one line, saying what is wrong -----------------------------------------------------------------
def _error(path: Path) -> str:
    with pytest.raises(MemplanError) as info:
        load_hf_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path):
    assert "no such file or folder" in _error(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    assert "has no config.json" in _error(tmp_path)


def test_malformed_json(tmp_path):
    message = _error(_write(tmp_path / "config.json", '{"model_type": "llama",'))
    assert "is not valid JSON" in message and "line 1" in message


def test_json_that_is_not_an_object(tmp_path):
    assert "not a config object" in _error(_write(tmp_path / "config.json", "[1, 2]"))


def test_missing_model_type(tmp_path):
    assert "missing key 'model_type'" in _error(_write(tmp_path / "config.json", {"hidden_size": 8}))


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    message = _error(_write(tmp_path / "config.json", {"model_type": "t5"}))
    assert "unsupported model_type 't5'" in message
    assert "bert, falcon, gpt2, gpt_neox, llama, mistral, mixtral, qwen2" in message


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                 "vocab_size"])
def test_missing_key_is_named(tmp_path, key):
    cfg = {k: v for k, v in REAL_CONFIGS["llama-2-7b"].items() if k != key}
    message = _error(_write(tmp_path / "config.json", cfg))
    assert f"missing key {key!r}" in message and "llama" in message


def test_missing_gpt2_key_uses_its_own_spelling(tmp_path):
    cfg = {k: v for k, v in REAL_CONFIGS["gpt2"].items() if k != "n_embd"}
    assert "missing key 'n_embd'" in _error(_write(tmp_path / "config.json", cfg))


@pytest.mark.parametrize("key, value, expected", [
    ("num_hidden_layers", "32", "'num_hidden_layers' must be a positive integer, got '32'"),
    ("num_hidden_layers", 0, "'num_hidden_layers' must be a positive integer, got 0"),
    ("num_hidden_layers", True, "must be a positive integer, got True"),
    ("tie_word_embeddings", "no", "'tie_word_embeddings' must be true or false"),
    ("attention_dropout", "0.1", "'attention_dropout' must be a number"),
])
def test_wrong_value_types(tmp_path, key, value, expected):
    cfg = dict(REAL_CONFIGS["llama-3-8b"], **{key: value})
    assert expected in _error(_write(tmp_path / "config.json", cfg))


def test_inconsistent_heads(tmp_path):
    cfg = dict(REAL_CONFIGS["llama-3-8b"], num_key_value_heads=5)
    assert "divisible" in _error(_write(tmp_path / "config.json", cfg))


def test_out_of_range_dropout(tmp_path):
    cfg = dict(REAL_CONFIGS["gpt2"], attn_pdrop=1.5)
    assert "attention_dropout" in _error(_write(tmp_path / "config.json", cfg))


@pytest.mark.parametrize("model_type, extra", [("gpt2", {"add_cross_attention": True}),
                                               ("bert", {"position_embedding_type": "relative_key"}),
                                               ("bert", {"is_decoder": True, "add_cross_attention": True})])
def test_unsupported_variants_are_refused(tmp_path, model_type, extra):
    base = REAL_CONFIGS["gpt2" if model_type == "gpt2" else "bert-base"]
    assert "not supported" in _error(_write(tmp_path / "config.json", dict(base, **extra)))


def test_loading_imports_neither_torch_nor_transformers(tmp_path):
    folder = _write(tmp_path / "m" / "config.json", REAL_CONFIGS["mixtral-8x7b"]).parent
    code = ("import sys; from memplan.spec.hfconfig import load_hf_config; "
            f"load_hf_config({str(folder)!r}); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
