"""The family registry: model_type -> its family module, found by file name, no list to keep.

`memplan/families/<model_type>.py` defines `FAMILY = Family(...)`.  A family serving several model_types (e.g.
gemma3 and gemma3_text) lists them in `model_types`; lookups try the module named after the model_type first and
fall back to scanning the package (imports each family module once).
"""
from __future__ import annotations

import copy
import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from memplan.errors import MemplanError, did_you_mean
from memplan.families.config import ConfigReader
from memplan.spec.model import Model

# memplan's architecture flags -> the Hugging Face config keys they override (first key is written); a family
# whose config spells them otherwise (GPT-2: n_layer, n_embd, ...) gives its own `flag_keys`.
DEFAULT_FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers",), "hidden": ("hidden_size",), "heads": ("num_attention_heads",),
    "kv_heads": ("num_key_value_heads",), "head_dim": ("head_dim",), "ffn": ("intermediate_size",),
    "vocab": ("vocab_size",), "max_positions": ("max_position_embeddings",),
    "experts": ("num_local_experts", "num_experts", "n_routed_experts"), "top_k": ("num_experts_per_tok",),
    "tied": ("tie_word_embeddings",),
}
# flags that describe structure only a model built from flags has (a config's family fixes them)
STRUCTURAL_FLAGS = ("mlp", "norm")


@dataclass(frozen=True)
class Family:
    """What memplan knows about one model family."""

    model_types: tuple[str, ...]
    read: Callable[[ConfigReader], Model]
    description: str
    # PEFT 0.21 peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (None: PEFT has no
    # default for it and asks for target_modules; memplan then adapts the attention query and value)
    peft_targets: tuple[str, ...] | None = None
    # the transformers class `memplan profile` builds (AutoModelForCausalLM unless the config says otherwise)
    transformers_class: Callable[[dict[str, Any]], str] | str = "AutoModelForCausalLM"
    flag_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    text_config: str | None = None  # key of the nested text model config (multimodal configs)
    # the attention transformers runs when none is asked for: sdpa where the class supports it (`_supports_sdpa`),
    # else eager (modeling_utils.py, PreTrainedModel._check_and_adjust_attn_implementation); the training
    # estimate's default when --attention is not given
    default_attention: str = "sdpa"
    sources: tuple[str, ...] = ()

    def keys_for(self, flag: str) -> tuple[str, ...]:
        return self.flag_keys.get(flag) or DEFAULT_FLAG_KEYS.get(flag, ())


def _package():
    import memplan.families as pkg

    return pkg


def family_modules() -> list[str]:
    """Names of the family modules (no imports)."""
    return sorted(m.name for m in pkgutil.iter_modules(_package().__path__)
                  if not m.name.startswith("_") and m.name not in ("registry", "config"))


@lru_cache(maxsize=None)
def _load(module: str) -> Family | None:
    mod = importlib.import_module(f"memplan.families.{module}")
    fam = getattr(mod, "FAMILY", None)
    return fam if isinstance(fam, Family) else None


@lru_cache(maxsize=None)
def all_families() -> dict[str, Family]:
    """model_type -> Family for every family module."""
    out: dict[str, Family] = {}
    for name in family_modules():
        fam = _load(name)
        if fam is not None:
            for t in fam.model_types:
                out[t] = fam
    return out


def supported_model_types() -> list[str]:
    return sorted(all_families())


def find_family(model_type: str) -> Family | None:
    if model_type in family_modules():
        fam = _load(model_type)
        if fam is not None and model_type in fam.model_types:
            return fam
    return all_families().get(model_type)


# encoder-decoder and other shapes memplan does not model: one line saying why (checked before "unknown")
REFUSED = {
    "t5": "an encoder-decoder (T5): memplan models decoder-only and encoder-only transformers",
    "mt5": "an encoder-decoder (mT5): memplan models decoder-only and encoder-only transformers",
    "bart": "an encoder-decoder (BART): memplan models decoder-only and encoder-only transformers",
    "whisper": "an encoder-decoder (Whisper): memplan models decoder-only and encoder-only transformers",
}


def get_family(model_type: str, path: str = "config") -> Family:
    fam = find_family(model_type)
    if fam is not None:
        return fam
    if model_type in REFUSED:
        raise MemplanError(f"{path}: model_type {model_type!r} is {REFUSED[model_type]}")
    known = supported_model_types()
    hint = did_you_mean(model_type, known, "model_type")
    raise MemplanError(f"{path}: {hint}; to estimate it anyway, run `memplan trace {path}` (needs torch and "
                       "transformers; it writes a model profile and its activation rows), then `memplan estimate` "
                       "with the name it prints")


# transformers 5.24 configuration_utils.py: ALLOWED_ATTN_LAYER_TYPES, and the legacy names remap_legacy_layer_types
# maps onto them (_LEGACY_LAYER_TYPE_REMAP).  PreTrainedConfig.validate_layer_type refuses any other `layer_types`
# entry, and a list whose length is not num_hidden_layers, for every model type -- whether or not its modeling
# code reads the list -- so a config transformers refuses is refused here too.
TRANSFORMERS_LAYER_TYPES = (
    "full_attention", "sliding_attention", "chunked_attention", "window_attention", "indexed_attention",
    "compressed_sparse_attention", "heavily_compressed_attention", "minimax_m3_sparse", "conv", "moe", "hybrid",
    "hybrid_sliding", "reference_sliding_attention", "linear_attention",
    "mamba", "attention", "deepseek_sparse_attention", "qwen_sparse_attention",
)


def _check_transformers_rules(c: ConfigReader) -> None:
    """What transformers checks of every config, whether or not memplan's reader of the family needs the key."""
    layers = c.data.get("num_hidden_layers")
    if isinstance(layers, int) and not isinstance(layers, bool) and layers > 0:
        c.layer_types(layers, [], TRANSFORMERS_LAYER_TYPES)
    for holder in ("rope_parameters", "rope_scaling"):
        # transformers 5.24 modeling_rope_utils.py: "`rope_parameters`'s factor field must be a float or int >= 1"
        # (a string there fails when the rotary embedding is built)
        block = c.data.get(holder)
        if block is None or block == []:
            continue
        if not isinstance(block, dict):
            raise c.bad(holder, "an object (or null)", block)
        factor = block.get("factor")
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float))
                                   or not math.isfinite(factor) or factor < 1):
            raise c.bad(f"{holder}.factor", "a number >= 1 (transformers' rope validation)", factor)


def read_config(data: dict[str, Any], path: str = "config.json") -> Model:
    """A config.json dict -> Model, through its family's reader."""
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise MemplanError(f"{path}: missing key 'model_type'; is this a Hugging Face config.json?")
    fam = get_family(model_type, path)
    c = ConfigReader(data, path, model_type)
    _check_transformers_rules(c.sub(fam.text_config) if fam.text_config else c)
    from memplan.families.heads import apply_architectures

    return apply_architectures(fam.read(c), data, path)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], path: str = "config") -> dict[str, Any]:
    """A copy of `data` with memplan's architecture flags written into the family's config keys.

    `--layers N` also trims or periodically extends `layer_types` (and similar per-layer lists), so a pattern
    such as Gemma 3's five sliding layers then one global keeps its period."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return data
    model_type = data.get("model_type", "")
    fam = get_family(model_type, path)
    out = copy.deepcopy(data)
    target = out.get(fam.text_config) if fam.text_config and isinstance(out.get(fam.text_config), dict) else out
    for flag, value in overrides.items():
        if flag in STRUCTURAL_FLAGS and flag not in fam.flag_keys:
            raise MemplanError(f"--{flag} describes a model built from flags; {path} is a {model_type} config, whose "
                               "family fixes it (edit the config instead)")
        keys = fam.keys_for(flag)
        if not keys:
            raise MemplanError(f"--{flag.replace('_', '-')} has no meaning for a {model_type} config")
        present = [k for k in keys if k in target]
        key = present[0] if present else keys[0]
        for k in keys:
            if k != key:
                target.pop(k, None)
        target[key] = value
        if flag == "layers":
            for list_key in ("layer_types", "no_rope_layers", "moe_layers"):
                seq = target.get(list_key)
                if isinstance(seq, list) and seq and len(seq) != value:
                    target[list_key] = [seq[i % len(seq)] for i in range(value)]
    return out
