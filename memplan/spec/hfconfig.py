"""A Hugging Face config.json -> ModelSpec, offline: the file is read as plain JSON (no transformers import, no
download, no remote code).

Each supported model_type has one small reader that maps the config keys onto `Architecture`, following the
module structure of transformers' models/<type>/modeling_<type>.py (which layers have biases, how many norms a
block has, whether the LM head is tied).  Defaults for absent keys are those of the matching
configuration_<type>.py class, so a config means the same here as in transformers; the structural sizes
(hidden size, layers, heads, vocabulary, MLP width where it has no rule) are required, because guessing them
would silently describe another model.  tests/test_hfconfig.py builds each family with transformers and
compares the parameter counts exactly.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memplan.errors import MemplanError
from memplan.spec.model import Architecture, ModelSpec

_MISSING = object()


class _Config:
    """Typed access to a config dict; every problem becomes a one-line MemplanError naming the key."""

    def __init__(self, data: dict[str, Any], path: Path, model_type: str):
        self.data, self.path, self.model_type = data, path, model_type

    def _raw(self, names: tuple[str, ...]) -> Any:
        for name in names:  # first present, non-null key wins (old and new spellings of one setting)
            if self.data.get(name) is not None:
                return self.data[name]
        return _MISSING

    def _bad(self, name: str, what: str, value: Any) -> MemplanError:
        return MemplanError(f"{self.path}: key {name!r} must be {what}, got {value!r}")

    def integer(self, *names: str, default: Any = _MISSING) -> Any:
        value = self._raw(names)
        if value is _MISSING:
            if default is _MISSING:
                raise MemplanError(f"{self.path}: missing key {names[0]!r}, needed for a {self.model_type} config")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self._bad(names[0], "a positive integer", value)
        return value

    def number(self, *names: str, default: float = 0.0) -> float:
        value = self._raw(names)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(names[0], "a number", value)
        return float(value)

    def flag(self, *names: str, default: bool) -> bool:
        value = self._raw(names)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self._bad(names[0], "true or false", value)
        return value

    def text(self, *names: str, default: str) -> str:
        value = self._raw(names)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self._bad(names[0], "a string", value)
        return value

    def rope(self, key: str) -> Any:
        """A rope setting: transformers 5 saves it inside rope_parameters, 4.x inside rope_scaling."""
        for holder in ("rope_parameters", "rope_scaling"):
            block = self.data.get(holder)
            if isinstance(block, dict) and block.get(key) is not None:
                return block[key]
        return None

    def refuse(self, key: str, why: str) -> None:
        raise MemplanError(f"{self.path}: {key} is not supported ({why}); describe the model with flags instead")


def _heads(c: _Config, hidden: int, n_heads: int, kv_key: str) -> dict[str, Any]:
    """n_kv_heads / head_dim, left unset (None) where they equal the defaults, as in the built-in profiles."""
    kv = c.integer(kv_key, default=n_heads)
    head_dim = c.integer("head_dim", default=hidden // n_heads)
    default_head_dim = hidden // n_heads if hidden % n_heads == 0 else None
    return {"n_kv_heads": None if kv == n_heads else kv,
            "head_dim": None if head_dim == default_head_dim else head_dim}


def _gpt2(c: _Config) -> dict[str, Any]:
    # modeling_gpt2.py: Conv1D c_attn (fused QKV, bias), c_proj (bias), MLP c_fc/c_proj (bias), ln_1/ln_2/ln_f
    # LayerNorms with bias, learned positions wpe, lm_head tied to wte by default.
    if c.flag("add_cross_attention", default=False):
        c.refuse("add_cross_attention", "cross-attention blocks")
    hidden = c.integer("n_embd", "hidden_size")
    return dict(
        n_layers=c.integer("n_layer", "num_hidden_layers"), hidden_size=hidden,
        n_heads=c.integer("n_head", "num_attention_heads"),
        ffn_hidden_size=c.integer("n_inner", default=4 * hidden),  # configuration_gpt2.py: n_inner None -> 4 * n_embd
        mlp="gelu", activation=c.text("activation_function", default="gelu_new"),
        norm="layernorm", norm_bias=True, vocab_size=c.integer("vocab_size"),
        max_positions=c.integer("n_positions", "max_position_embeddings", default=1024), position="learned",
        tied_embeddings=c.flag("tie_word_embeddings", default=True),
        fused_qkv=True, qkv_bias=True, attn_out_bias=True, mlp_bias=True,
        attention_dropout=c.number("attn_pdrop", default=0.1), hidden_dropout=c.number("resid_pdrop", default=0.1),
        embedding_dropout=c.number("embd_pdrop", default=0.1),
    )


def _gpt_neox(c: _Config) -> dict[str, Any]:
    # modeling_gpt_neox.py: fused query_key_value and dense with bias=attention_bias; dense_h_to_4h/4h_to_h always
    # biased; two LayerNorms per block plus final_layer_norm; untied embed_out by default.
    hidden, n_heads = c.integer("hidden_size"), c.integer("num_attention_heads")
    rotary = c.rope("partial_rotary_factor")
    if rotary is None:
        rotary = c.number("rotary_pct", default=0.25)  # configuration_gpt_neox.py default
    hidden_dropout = c.number("hidden_dropout", default=0.0)
    return dict(
        n_layers=c.integer("num_hidden_layers"), hidden_size=hidden, n_heads=n_heads,
        ffn_hidden_size=c.integer("intermediate_size"), mlp="gelu", activation=c.text("hidden_act", default="gelu"),
        norm="layernorm", norm_bias=True, vocab_size=c.integer("vocab_size"),
        max_positions=c.integer("max_position_embeddings", default=2048), position="rotary", rotary_fraction=rotary,
        tied_embeddings=c.flag("tie_word_embeddings", default=False),
        fused_qkv=True, qkv_bias=c.flag("attention_bias", default=True),
        attn_out_bias=c.flag("attention_bias", default=True), mlp_bias=True,
        parallel_residual=c.flag("use_parallel_residual", default=True),
        attention_dropout=c.number("attention_dropout", default=0.0), hidden_dropout=hidden_dropout,
        embedding_dropout=hidden_dropout,  # GPTNeoXModel.emb_dropout = nn.Dropout(config.hidden_dropout)
    )


def _llama_like(c: _Config, *, qkv_bias: bool, out_bias: bool, mlp_bias: bool) -> dict[str, Any]:
    # modeling_llama.py / mistral / mixtral / qwen2: q,k,v,o projections, SwiGLU gate/up/down, RMSNorm
    # (weight only) before attention and MLP plus a final norm; untied lm_head by default.
    hidden, n_heads = c.integer("hidden_size"), c.integer("num_attention_heads")
    return dict(
        n_layers=c.integer("num_hidden_layers"), hidden_size=hidden, n_heads=n_heads,
        **_heads(c, hidden, n_heads, "num_key_value_heads"),
        ffn_hidden_size=c.integer("intermediate_size"), mlp="swiglu", activation=c.text("hidden_act", default="silu"),
        norm="rmsnorm", vocab_size=c.integer("vocab_size"),
        max_positions=c.integer("max_position_embeddings", default=2048), position="rotary",
        tied_embeddings=c.flag("tie_word_embeddings", default=False),
        qkv_bias=qkv_bias, attn_out_bias=out_bias, mlp_bias=mlp_bias,
        attention_dropout=c.number("attention_dropout", default=0.0),
    )


def _llama(c: _Config) -> dict[str, Any]:
    # LlamaAttention: every projection, o_proj included, has bias=config.attention_bias; LlamaMLP bias=mlp_bias
    bias = c.flag("attention_bias", default=False)
    return _llama_like(c, qkv_bias=bias, out_bias=bias, mlp_bias=c.flag("mlp_bias", default=False))


def _mistral(c: _Config) -> dict[str, Any]:
    # MistralAttention: no biases; sliding_window applies to every layer (None in v0.2+ configs)
    return {**_llama_like(c, qkv_bias=False, out_bias=False, mlp_bias=False),
            "sliding_window": c.integer("sliding_window", default=None)}


def _mixtral(c: _Config) -> dict[str, Any]:
    # modeling_mixtral.py: the MLP is num_local_experts SwiGLU experts (w1, w3, w2; no bias) and a bias-free
    # router `gate` (hidden x num_local_experts); configuration_mixtral.py defaults 8 experts, top-2
    return {**_mistral(c), "n_experts": c.integer("num_local_experts", "num_experts", default=8),
            "experts_per_token": c.integer("num_experts_per_tok", default=2)}


def _qwen2(c: _Config) -> dict[str, Any]:
    # modeling_qwen2.py: q/k/v_proj bias=True, o_proj bias=False, MLP without bias.
    # configuration_qwen2.py: sliding_window only counts with use_sliding_window, and then only for layers
    # i >= max_window_layers (layer_types). One window for all layers is all Architecture holds, so a mix of
    # sliding and full layers is described as full attention (the larger KV cache: an upper bound).
    out = _llama_like(c, qkv_bias=True, out_bias=False, mlp_bias=False)
    window = c.integer("sliding_window", default=4096) if c.flag("use_sliding_window", default=False) else None
    layer_types = c.data.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        all_sliding = all(t == "sliding_attention" for t in layer_types)
    else:
        all_sliding = c.data.get("max_window_layers", 28) == 0  # configuration_qwen2.py default 28
    out["sliding_window"] = window if all_sliding else None
    return out


def _falcon(c: _Config) -> dict[str, Any]:
    # modeling_falcon.py, FalconAttention / FalconDecoderLayer / FalconForCausalLM:
    # - fused query_key_value: new_decoder_architecture -> (2 * num_kv_heads + heads) * head_dim outputs,
    #   else multi_query -> hidden + 2 * head_dim (one KV head), else 3 * hidden; bias=config.bias everywhere
    # - norms per block: 2 without parallel_attn; with it num_ln_in_parallel_attn (None -> 2 for the new
    #   decoder architecture, else 1: Falcon-7B's single input_layernorm); LayerNorms always have a bias
    # - lm_head tied to word_embeddings by default; no position embeddings: rotary unless alibi
    hidden = c.integer("hidden_size", "n_embed")
    n_heads = c.integer("num_attention_heads", "n_head")
    new_arch = c.flag("new_decoder_architecture", default=False)
    if new_arch:
        kv = c.integer("num_kv_heads", "n_head_kv", default=n_heads)
    elif c.flag("multi_query", default=True):
        kv = 1
    else:
        kv = n_heads
    parallel = c.flag("parallel_attn", default=True)
    n_ln = c.integer("num_ln_in_parallel_attn", default=2 if new_arch else 1)
    bias = c.flag("bias", default=False)
    return dict(
        n_layers=c.integer("num_hidden_layers", "n_layer"), hidden_size=hidden, n_heads=n_heads,
        n_kv_heads=kv if kv != n_heads else None,
        ffn_hidden_size=c.integer("ffn_hidden_size", default=4 * hidden), mlp="gelu",
        activation=c.text("activation", default="gelu"), norm="layernorm", norm_bias=True,
        norms_per_layer=(n_ln if parallel else 2), vocab_size=c.integer("vocab_size"),
        max_positions=c.integer("max_position_embeddings", default=2048),
        position="alibi" if c.flag("alibi", default=False) else "rotary",
        tied_embeddings=c.flag("tie_word_embeddings", default=True),
        fused_qkv=True, qkv_bias=bias, attn_out_bias=bias, mlp_bias=bias, parallel_residual=parallel,
        attention_dropout=c.number("attention_dropout", default=0.0),
        hidden_dropout=c.number("hidden_dropout", default=0.0),
    )


def _bert(c: _Config) -> dict[str, Any]:
    # modeling_bert.py, BertModel: word + position + token_type embeddings and a LayerNorm; per layer q,k,v and
    # attention output dense (bias), LayerNorm, intermediate + output dense (bias), LayerNorm; a pooler
    # (dense hidden x hidden with bias); no LM head (the base model is what the published counts are).
    if c.flag("add_cross_attention", default=False) or c.flag("is_decoder", default=False):
        c.refuse("is_decoder/add_cross_attention", "BERT as a decoder with cross-attention")
    if c.text("position_embedding_type", default="absolute") != "absolute":
        c.refuse("position_embedding_type", "relative position embeddings")
    dropout = c.number("hidden_dropout_prob", default=0.1)
    return dict(
        n_layers=c.integer("num_hidden_layers"), hidden_size=c.integer("hidden_size"),
        n_heads=c.integer("num_attention_heads"), ffn_hidden_size=c.integer("intermediate_size"), mlp="gelu",
        activation=c.text("hidden_act", default="gelu"), norm="layernorm", norm_bias=True, final_norm=False,
        vocab_size=c.integer("vocab_size"), max_positions=c.integer("max_position_embeddings", default=512),
        position="learned", token_type_vocab=c.integer("type_vocab_size", default=2), embedding_norm=True,
        pooler=True, lm_head=False, causal=False, tied_embeddings=c.flag("tie_word_embeddings", default=True),
        qkv_bias=True, attn_out_bias=True, mlp_bias=True,
        attention_dropout=c.number("attention_probs_dropout_prob", default=0.1),
        hidden_dropout=dropout, embedding_dropout=dropout,  # BertEmbeddings uses hidden_dropout_prob
    )


_READERS: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "gpt2": _gpt2, "gpt_neox": _gpt_neox, "llama": _llama, "mistral": _mistral, "mixtral": _mixtral,
    "qwen2": _qwen2, "falcon": _falcon, "bert": _bert,
}
SUPPORTED_MODEL_TYPES = tuple(sorted(_READERS))


def _read_json(path: Path) -> dict[str, Any]:
    from memplan.userfiles import read_user_json  # bounded, regular files only, UTF-8, depth-limited

    return read_user_json(path, "model config", expected="a config object")


def _spec_name(given: Path, config_path: Path, data: dict[str, Any], model_type: str) -> str:
    """The folder the user named, else a file name that says something, else _name_or_path, else model_type.

    A Hugging Face cache snapshot folder is a commit hash, which names nothing: skip it.
    """
    candidates = [given.name] if given.is_dir() else [given.stem if given.stem != "config" else "",
                                                      config_path.parent.resolve().name]
    for name in candidates:
        if name and not re.fullmatch(r"[0-9a-f]{40}", name):
            return name
    named = data.get("_name_or_path")
    if isinstance(named, str) and named.strip():
        return named.strip().rstrip("/").rsplit("/", 1)[-1]
    return model_type


def load_hf_config(path: Path) -> ModelSpec:
    """Read a Hugging Face config.json (or a folder holding one) into a ModelSpec with an exact architecture."""
    given = Path(path).expanduser()
    if given.is_dir():
        config_path = given / "config.json"
        if not config_path.is_file():
            raise MemplanError(f"{given} has no config.json; point to a Hugging Face model folder or a config file")
    elif given.is_file():
        config_path = given
    else:
        raise MemplanError(f"no such file or folder: {given} (give a config.json, its folder, or a profile name)")
    data = _read_json(config_path)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise MemplanError(f"{config_path}: missing key 'model_type'; is this a Hugging Face config.json?")
    reader = _READERS.get(model_type)
    if reader is None:
        raise MemplanError(f"{config_path}: unsupported model_type {model_type!r}; supported: "
                           + ", ".join(SUPPORTED_MODEL_TYPES) + " (or describe the model with flags)")
    fields = reader(_Config(data, config_path, model_type))
    try:
        arch = Architecture(family=model_type, **fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise MemplanError(f"{config_path}: {where}: {err['msg']}") from None
    except MemplanError as exc:  # Architecture's own consistency checks (heads vs KV heads, ...)
        raise MemplanError(f"{config_path}: {exc}") from None
    return ModelSpec(name=_spec_name(given, config_path, data, model_type),
                     source=f"Hugging Face config {config_path}", architecture=arch)
