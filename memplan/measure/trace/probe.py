"""The configs a trace runs: the model's own config at one period of its layer pattern, with every size replaced by
small, mutually distinct values, so that each tensor dimension can be read back as an expression of size names.

Sizes are products of distinct odd primes (head_dim additionally carries 2^3, so that rotary halves and quarters
stay integers), and each probe draws different primes: a dimension that is a name (or a product of names, a
fused sum such as q + 2*kv, a rotary half d/2) has a different value in every probe, while a constant (a chunk
count, MoE routing groups) keeps its value.  Two or three probes decide each expression (memplan/measure/trace/
shapes.py).  The structure of the model never changes between probes: the same layer kinds, MHA/GQA/MQA as the
config has it, windows shorter or longer than the sequence as the variant asks.

One period: the distinct layer kinds of the model in order of first appearance (Gemma 3's five sliding layers and
one global become [sliding, global]; DeepSeek-V3's three dense layers and 58 MoE layers become [dense, MoE]), by
rewriting the per-layer pattern keys transformers reads (layer_types, first_k_dense_replace, no_rope_layers,
moe_layers, mlp_only_layers); where no rewrite reproduces the kinds, the shortest prefix of layers that holds them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from memplan.errors import MemplanError
from memplan.families.registry import apply_overrides, find_family, read_config
from memplan.spec.model import Attention, Model

# per probe: one odd prime per role; head_dim, the hidden size and the FFN widths carry 2^3 besides (rotary halves
# and quarters stay integers, and grouped matmuls see 16-byte aligned rows, as meta_grouped_mm demands); h = heads x
# 8 x its prime, or heads x head_dim when the config has no head_dim; each probe a different draw, b and s included
PROBES: list[dict[str, int]] = [
    # the first probe's values are all above 8, so that with it alone (memplan/measure/trace/shapes.py) a small
    # constant dimension is never read as a name
    dict(b=11, s=61, g=13, r=17, dp=19, hp=23, f=37, f2=41, f3=43, V=47, E=67, K=29, w_long=89, w_short=53, lq=59,
         lkv=71, nope=73, ropep=79, dv=83, P=97, fs=31),
    dict(b=5, s=31, g=3, r=11, dp=7, hp=17, f=13, f2=23, f3=29, V=53, E=73, K=41, w_long=59, w_short=19, lq=37,
         lkv=43, nope=47, ropep=61, dv=67, P=101, fs=71),
    dict(b=7, s=37, g=11, r=3, dp=13, hp=5, f=19, f2=29, f3=17, V=43, E=79, K=47, w_long=61, w_short=23, lq=53,
         lkv=31, nope=41, ropep=59, dv=71, P=103, fs=67),
]

# config keys (any nesting level of the text model's config) -> the role whose probe value they take
WIDTH_KEYS = {
    "intermediate_size": "f", "n_inner": "f", "ffn_hidden_size": "f", "ffn_dim": "f",
    "moe_intermediate_size": "f2", "intermediate_size_mlp": "f3", "shared_expert_intermediate_size": "fs",
    "vocab_size": "V", "q_lora_rank": "lq", "kv_lora_rank": "lkv", "qk_nope_head_dim": "nope",
    "v_head_dim": "dv", "max_position_embeddings": "P", "n_positions": "P", "n_ctx": "P",
}
ALIGNED = {"f", "f2", "f3", "fs"}  # multiplied by 8 (see PROBES)
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "n_embed")
HEADS_KEYS = ("num_attention_heads", "n_head")
KV_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv")
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
TOPK_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk")
WINDOW_KEYS = ("sliding_window", "attention_chunk_size")
LAYER_LIST_KEYS = ("layer_types", "no_rope_layers")  # one entry per layer
LAYER_INDEX_KEYS = ("moe_layers", "mlp_only_layers")  # lists of layer indices


@dataclass(frozen=True)
class Probe:
    """One traced config and the batch it runs."""

    config: dict[str, Any]
    model: Model  # memplan's reading of `config` (its layer specs give the size names' values)
    batch: int
    seq: int
    index: int


def read_model(config: dict[str, Any], path: str = "config") -> Model:
    """memplan's Model of a config: its family's reader, else (a model_type no family file covers) the module
    tree transformers builds from it (module_tree.py)."""
    if find_family(str(config.get("model_type"))) is not None:
        return read_config(config, path)
    from memplan.measure.trace.module_tree import read_module_tree

    return read_module_tree(config, path)


def with_layers(config: dict[str, Any], n: int) -> dict[str, Any]:
    """`config` at n layers (families/registry.apply_overrides; for a model_type no family file covers, the
    usual key num_hidden_layers and per-layer lists trimmed)."""
    if find_family(str(config.get("model_type"))) is not None:
        return apply_overrides(config, {"layers": n}, "config")
    out = copy.deepcopy(config)
    key = next((k for k in ("num_hidden_layers", "n_layer", "num_layers") if k in out), "num_hidden_layers")
    out[key] = n
    for list_key in LAYER_LIST_KEYS:
        if isinstance(out.get(list_key), list) and out[list_key]:
            out[list_key] = [out[list_key][i % len(out[list_key])] for i in range(n)]
    return out


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's own config: a multimodal config's text_config (traced as its own model_type)."""
    fam = find_family(str(config.get("model_type")))
    if fam is not None and fam.text_config and isinstance(config.get(fam.text_config), dict):
        inner = dict(config[fam.text_config])
        inner.setdefault("model_type", f"{config['model_type']}_text")
        return inner
    return config


def with_class_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the sizes and layer-pattern keys its transformers config class fills in written out
    (Gemma 3's text_config without vocab_size, layer_types derived from sliding_window_pattern), so that a probe
    can replace them.  The values are the class's own: the model is unchanged."""
    from memplan.measure.models import transformers_config

    cfg = transformers_config(config).to_dict()
    keys = set(WIDTH_KEYS) | set(HIDDEN_KEYS) | set(HEADS_KEYS) | set(KV_KEYS) | set(EXPERT_KEYS) | set(TOPK_KEYS) \
        | set(WINDOW_KEYS) | set(LAYER_LIST_KEYS) | {"head_dim", "qk_rope_head_dim"}
    out = dict(config)
    for key in keys:
        if key not in out and cfg.get(key) is not None:
            out[key] = cfg[key]
    return out


def _kinds(m: Model) -> list:
    return [spec for spec, _ in m.kinds()]


def one_period(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with one layer per distinct layer kind, in order of first appearance."""
    full = read_model(config, "config")
    kinds = _kinds(full)
    seq = [kinds.index(spec) for spec in full.layers()]
    first = [seq.index(k) for k in range(len(kinds))]  # layer index of each kind's first appearance
    if kinds == [full.first] * len(kinds) and len(kinds) == 1:
        return with_layers(config, 1)
    out = with_layers(config, len(kinds))
    for key in LAYER_LIST_KEYS:
        if isinstance(config.get(key), list) and len(config[key]) == full.n_layers:
            out[key] = [config[key][i] for i in first]
    for key in LAYER_INDEX_KEYS:
        if isinstance(config.get(key), list):
            out[key] = [k for k, i in enumerate(first) if i in config[key]]
    if isinstance(config.get("first_k_dense_replace"), int) and config["first_k_dense_replace"] > 0:
        out["first_k_dense_replace"] = sum(1 for i in first if i < config["first_k_dense_replace"])
    if _kinds(read_model(out, "config")) == kinds:
        return out
    for n in range(1, min(full.n_layers, 64) + 1):  # the shortest prefix that holds every kind
        out = with_layers(config, n)
        if _kinds(read_model(out, "config")) == kinds:
            return out
    raise MemplanError("cannot reduce this config to one period of its layer pattern (over 64 layers)")


def _set_all(config: dict[str, Any], keys: tuple[str, ...] | list[str], value: int) -> None:
    for key in keys:
        if isinstance(config.get(key), int) and not isinstance(config.get(key), bool):
            config[key] = value


def probe_config(config: dict[str, Any], k: int, long_windows: bool) -> dict[str, Any]:
    """`config` (one period) with probe k's sizes; windows longer than the sequence (no mask) or shorter."""
    p = PROBES[k]
    out = copy.deepcopy(config)
    m = read_model(config, "config")
    # the heads of the first attention layer (a hybrid's first layer may be a mixer; a Mamba model has none:
    # its mixer dims are not probe sizes, they stay the config's in every probe and are read as constants)
    at = m.first_attention or _NO_HEADS
    heads_in, kv_in = at.heads, at.kv_heads
    if kv_in == heads_in:
        a = g = p["g"] * p["r"]
    elif kv_in == 1:
        a, g = p["g"] * p["r"], 1
    else:
        g, a = p["g"], p["g"] * p["r"]
    d = 8 * p["dp"]
    _set_all(out, HEADS_KEYS, a)
    _set_all(out, KV_KEYS, g)
    mla = at.mla
    if mla:
        out["qk_rope_head_dim"] = 2 * p["ropep"]
        d = p["nope"] + 2 * p["ropep"]
        if out.get("head_dim") is not None:  # DeepseekV3Config.head_dim is the rotary part (its rotary tables)
            out["head_dim"] = 2 * p["ropep"]
    if "head_dim" in out and out.get("head_dim") is not None and not mla:
        out["head_dim"] = d
        h = 8 * a * p["hp"]
    elif mla:
        h = 8 * a * p["hp"]
    else:
        h = a * d
    _set_all(out, HIDDEN_KEYS, h)
    for key, role in WIDTH_KEYS.items():
        _set_all(out, (key,), 8 * p[role] if role in ALIGNED else p[role])
    groups = out.get("n_group") if isinstance(out.get("n_group"), int) else 1
    _set_all(out, EXPERT_KEYS, groups * p["E"])
    _set_all(out, TOPK_KEYS, p["K"])
    _set_all(out, WINDOW_KEYS, p["w_long"] if long_windows else p["w_short"])
    if out.get("block_auto_adjust_ff_dim"):
        # Lfm2MLP rounds intermediate_size (x 2/3, then up to a multiple of block_multiple_of): every probe's width
        # would round to one constant; switched off, each probe's width is its own (the layer's width, whatever
        # the switch, is read from the modules)
        out["block_auto_adjust_ff_dim"] = False
    _resize_rope_lists(out, config, at.head_dim, d, at.rotary_fraction)
    return out


_NO_HEADS = Attention(heads=1, kv_heads=1, head_dim=8, position="none")


def _resize_rope_lists(out: dict[str, Any], config: dict[str, Any], d_in: int, d_out: int, fraction: float) -> None:
    """LongRoPE factor lists have one entry per rotated frequency (rotary dim / 2): resized with the head dim."""
    n_in, n_out = int(d_in * fraction) // 2, int(d_out * fraction) // 2
    for holder in ("rope_scaling", "rope_parameters"):
        block = out.get(holder)
        if isinstance(block, dict):
            for key, value in block.items():
                if isinstance(value, list) and len(value) == n_in:
                    block[key] = [value[i % n_in] for i in range(n_out)]


def has_windows(m: Model) -> bool:
    return any(g.layer.attn is not None and g.layer.attn.window is not None for g in m.groups)


def probes(period: dict[str, Any], long_windows: bool, count: int) -> list[Probe]:
    out = []
    for k in range(count):
        cfg = probe_config(period, k, long_windows)
        model = read_model(cfg, "probe config")
        out.append(Probe(config=cfg, model=model, batch=PROBES[k]["b"], seq=PROBES[k]["s"], index=k))
    return out
