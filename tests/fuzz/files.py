"""Files a case names, created in the case's temporary folder: every edge case of reading a user's file (issue 13)
and model configs that are tiny (so `profile` runs in a second) or inconsistent (heads that do not divide, an
unknown layer type, MLA ranks missing, fewer experts than top-k, wrong JSON types).

A FileSpec is plain data chosen by the generator (so a case reproduces from its seed); `materialize` makes it.
Nothing here touches a real device node: a FIFO is made with mkfifo, a "huge" file is sparse.
"""
from __future__ import annotations

import copy
import json
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "models"
HUGE_BYTES = 65 * 2**20  # just over memplan.userfiles.MAX_JSON_BYTES (64 MiB), as a sparse file


@dataclass(frozen=True)
class FileSpec:
    """kind: text | bytes | fifo | folder | config_folder | symlink | sparse | missing.  `data` is the content
    (text/bytes/config_folder), the link target (symlink, relative to the case folder) or the size (sparse)."""

    kind: str
    data: object = None
    mode: int | None = None

    def describe(self) -> str:
        d = self.data
        if isinstance(d, (str, bytes)) and len(d) > 160:
            d = f"{d[:120]!r}... ({len(d)} {'bytes' if isinstance(d, bytes) else 'characters'})"
        return f"{self.kind}: {d!r}" if d is not None else self.kind


def materialize(folder: Path, name: str, spec: FileSpec) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.kind == "text":
        path.write_text(spec.data, encoding="utf-8")
    elif spec.kind == "bytes":
        path.write_bytes(spec.data)
    elif spec.kind == "fifo":
        os.mkfifo(path)
    elif spec.kind == "folder":
        path.mkdir(exist_ok=True)
    elif spec.kind == "config_folder":
        path.mkdir(exist_ok=True)
        (path / "config.json").write_text(spec.data, encoding="utf-8")
    elif spec.kind == "symlink":
        os.symlink(spec.data, path)
    elif spec.kind == "sparse":
        with open(path, "wb") as fh:
            fh.truncate(spec.data)
    elif spec.kind == "missing":
        pass
    else:  # pragma: no cover - a generator bug
        raise ValueError(spec.kind)
    if spec.mode is not None:
        os.chmod(path, spec.mode)


# ---- the generic edge cases of "a file the user named" ---------------------------------------------------------
def edge_file(rng: random.Random, name: str) -> tuple[str, dict[str, FileSpec]]:
    """(the path argument, the files to create) for one edge case of reading a file; `name` is the file's name."""
    kind = rng.choice(["missing", "empty", "non_utf8", "utf16", "deep", "huge", "fifo", "folder", "loop",
                       "dangling", "long_component", "not_json", "list", "null", "number", "string", "nan",
                       "big_int", "bom", "nul_bytes", "under_file", "yaml_bomb", "long_path"])
    p = name
    if kind == "missing":
        return p, {}
    if kind == "empty":
        return p, {p: FileSpec("text", "")}
    if kind == "non_utf8":
        return p, {p: FileSpec("bytes", b'{"model_type": "llama", "name": "\xff\xfe\xfa"}')}
    if kind == "utf16":
        return p, {p: FileSpec("bytes", '{"model_type": "llama"}'.encode("utf-16"))}
    if kind == "deep":
        depth = rng.choice([65, 1000, 100_000])
        return p, {p: FileSpec("text", "[" * depth + "]" * depth if rng.random() < 0.5
                               else '{"a":' * depth + "1" + "}" * depth)}
    if kind == "huge":
        return p, {p: FileSpec("sparse", HUGE_BYTES)}
    if kind == "fifo":
        return p, {p: FileSpec("fifo")}
    if kind == "folder":
        return p, {p: FileSpec("folder")}
    if kind == "loop":
        return p, {p: FileSpec("symlink", p + ".other"), p + ".other": FileSpec("symlink", p)}
    if kind == "dangling":
        return p, {p: FileSpec("symlink", "nowhere/" + p)}
    if kind == "long_component":
        return "d" * 300 + "/" + p, {}
    if kind == "long_path":
        deep = "/".join(["abcdefgh"] * 600)  # > PATH_MAX (4096)
        return deep + "/" + p, {}
    if kind == "not_json":
        return p, {p: FileSpec("text", rng.choice(["{not json", "{'a': 1}", '{"a": 1,}', "{\"a\": 1", "\u0000"]))}
    if kind == "list":
        return p, {p: FileSpec("text", "[1, 2, 3]")}
    if kind == "null":
        return p, {p: FileSpec("text", "null")}
    if kind == "number":
        return p, {p: FileSpec("text", rng.choice(["5", "-1", "1e400", "NaN"]))}
    if kind == "string":
        return p, {p: FileSpec("text", '"llama-2-7b"')}
    if kind == "nan":
        return p, {p: FileSpec("text", '{"model_type": "llama", "hidden_size": NaN, "num_hidden_layers": Infinity}')}
    if kind == "big_int":
        return p, {p: FileSpec("text", '{"model_type": "llama", "hidden_size": 1' + "0" * 5000 + "}")}
    if kind == "bom":
        return p, {p: FileSpec("bytes", "\ufeff".encode() + json.dumps(tiny_config(rng, "llama")).encode())}
    if kind == "nul_bytes":
        return p, {p: FileSpec("bytes", b"\x00" * 64)}
    if kind == "under_file":  # a path through a regular file: ENOTDIR
        return "plain.txt/" + p, {"plain.txt": FileSpec("text", "x")}
    # a YAML alias bomb ("billion laughs") in a file named .json: JSON readers refuse it, YAML readers must bound it
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + prev] * 9)}]\n" for prev, c in zip("abcdefgh", "bcdefghi"))
    return p.rsplit(".", 1)[0] + ".yaml", {p.rsplit(".", 1)[0] + ".yaml": FileSpec("text", bomb)}


# ---- model configs: tiny, and inconsistent ---------------------------------------------------------------------
FAMILIES = {  # model_type -> a profile whose config it starts from
    "llama": "llama-2-7b", "mistral": "mistral-7b", "mixtral": "mixtral-8x7b", "gpt2": "gpt2", "bert": "bert-base",
    "falcon": "falcon-7b", "gemma": "gemma-7b", "gemma2": "gemma-2-9b", "gemma3": "gemma-3-27b",
    "deepseek_v3": "deepseek-v3", "gpt_oss": "gpt-oss-20b", "llama4": "llama-4-scout", "qwen3": "qwen3-0.6b",
    "qwen3_moe": "qwen3-30b-a3b", "qwen2_moe": "qwen1.5-moe-a2.7b", "phi3": "phi-3-mini", "olmo2": "olmo-2-7b",
    "gpt_neox": "pythia-160m", "qwen2": "qwen2.5-7b",
}
TINY = {  # key -> the tiny value (absent keys are left alone)
    "hidden_size": 64, "n_embd": 64, "d_model": 64, "num_attention_heads": 4, "n_head": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "n_layer": 2, "intermediate_size": 128, "n_inner": 128, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64, "intermediate_size_mlp": 128, "vocab_size": 256,
    "max_position_embeddings": 128, "n_positions": 128, "n_ctx": 128, "head_dim": 16, "num_local_experts": 4,
    "n_routed_experts": 4, "num_experts": 4, "num_experts_per_tok": 2, "experts_per_token": 2, "q_lora_rank": 32,
    "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "first_k_dense_replace": 1,
    "sliding_window": 32, "n_group": 1, "topk_group": 1, "num_nextn_predict_layers": 0, "attention_chunk_size": 32,
    "max_window_layers": 2, "query_pre_attn_scalar": 16, "initial_context_length": 128, "type_vocab_size": 2,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "image_token_index": 3, "boi_token_index": 4,
    "eoi_token_index": 5,
}
PER_LAYER_LISTS = ("layer_types", "no_rope_layers")


@lru_cache(maxsize=None)
def _profile_config(profile: str) -> str:
    return json.dumps(json.loads((PROFILES / f"{profile}.json").read_text())["hf_config"])


def _shrink(cfg: dict) -> dict:
    for key, tiny in TINY.items():
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], (list, dict)):
            cfg[key] = tiny
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer", 2))
    for key in PER_LAYER_LISTS:
        if isinstance(cfg.get(key), list):
            cfg[key] = cfg[key][:layers]
    if isinstance(cfg.get("moe_layers"), list):
        cfg["moe_layers"] = [i for i in cfg["moe_layers"] if i < layers]
    cfg.pop("quantization_config", None)
    cfg.pop("vision_config", None)
    cfg.pop("auto_map", None)
    if isinstance(cfg.get("rope_scaling"), dict):
        cfg["rope_scaling"] = None
    return cfg


def tiny_config(rng: random.Random, family: str | None = None) -> dict:
    """A family's own config.json with every size made tiny (hidden 64, 2 layers, vocab 256)."""
    family = family or rng.choice(sorted(FAMILIES))
    cfg = _shrink(json.loads(_profile_config(FAMILIES[family])))
    if isinstance(cfg.get("text_config"), dict):
        cfg["text_config"] = _shrink(cfg["text_config"])
    return cfg


def _text(cfg: dict) -> dict:
    return cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg


WRONG_TYPES = ["64", 64.5, True, None, [], {}, -64, 0, 10**30, 1e30, "", "NaN"]


def odd_config(rng: random.Random) -> tuple[dict, str]:
    """(a config, what is odd about it): tiny, then one inconsistency."""
    cfg = tiny_config(rng)
    t = _text(cfg)
    kind = rng.choice(["heads_not_dividing", "kv_not_dividing", "unknown_layer_type", "layer_types_length",
                       "mla_rank_missing", "experts_below_topk", "wrong_type", "missing_key", "unknown_model_type",
                       "no_model_type", "model_type_not_string", "huge", "unknown_activation", "odd_dtype",
                       "negative", "tiny_ok", "tiny_ok", "tiny_ok", "extra_keys", "odd_rope_scaling",
                       "zero_layers", "encoder_decoder"])
    heads_key = "num_attention_heads" if "num_attention_heads" in t else "n_head"
    hidden_key = next((k for k in ("hidden_size", "n_embd", "d_model") if k in t), "hidden_size")
    if kind == "heads_not_dividing":
        t[heads_key] = rng.choice([3, 5, 7, 63])
        t.pop("head_dim", None)
    elif kind == "kv_not_dividing":
        t[heads_key] = 4
        t["num_key_value_heads"] = rng.choice([3, 5, 8, 0])
    elif kind == "unknown_layer_type":
        n = t.get("num_hidden_layers", 2)
        t["layer_types"] = ["full_attention"] * (n - 1) + [rng.choice(["weird_attention", "", 5, None])]
    elif kind == "layer_types_length":
        t["layer_types"] = ["full_attention", "sliding_attention"] * rng.choice([0, 3, 50])
    elif kind == "mla_rank_missing":
        cfg = tiny_config(rng, "deepseek_v3")
        t = _text(cfg)
        for key in rng.sample(["kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"],
                              rng.randint(1, 3)):
            if rng.random() < 0.5:
                t.pop(key, None)
            else:
                t[key] = rng.choice([None, 0, -1, "16"])
    elif kind == "experts_below_topk":
        cfg = tiny_config(rng, rng.choice(["mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "qwen2_moe"]))
        t = _text(cfg)
        for key in ("num_local_experts", "n_routed_experts", "num_experts"):
            if key in t:
                t[key] = rng.choice([1, 2, 0])
        for key in ("num_experts_per_tok", "experts_per_token"):
            if key in t:
                t[key] = rng.choice([3, 8, 100])
    elif kind == "wrong_type":
        key = rng.choice([k for k in t if not isinstance(t[k], (list, dict))] or ["hidden_size"])
        t[key] = copy.deepcopy(rng.choice(WRONG_TYPES))
    elif kind == "missing_key":
        t.pop(rng.choice([k for k in t if k != "model_type"] or ["hidden_size"]), None)
    elif kind == "unknown_model_type":
        cfg["model_type"] = rng.choice(["llamma", "t5", "mamba", "bart", "whisper", "llama\u2010x", "Llama"])
    elif kind == "no_model_type":
        cfg.pop("model_type", None)
    elif kind == "model_type_not_string":
        cfg["model_type"] = rng.choice([5, None, ["llama"], {"a": 1}, True])
    elif kind == "huge":
        t[rng.choice([hidden_key, "num_hidden_layers" if "num_hidden_layers" in t else "n_layer", "vocab_size",
                      "intermediate_size" if "intermediate_size" in t else hidden_key])] = \
            rng.choice([10**9, 10**6, 2**31, 2**63, 10**30])
    elif kind == "unknown_activation":
        for key in ("hidden_act", "activation_function", "hidden_activation"):
            if key in t:
                t[key] = rng.choice(["swish2", "", "relu6", None, 5])
    elif kind == "odd_dtype":
        cfg["torch_dtype"] = rng.choice(["float128", "", "int4", None, 16, "bfloat16 "])
    elif kind == "negative":
        t[hidden_key] = rng.choice([-64, -1])
    elif kind == "extra_keys":
        t["unused_key_\u03bb"] = {"nested": [1, 2, {"x": None}]}
    elif kind == "odd_rope_scaling":
        t["rope_scaling"] = rng.choice([{"type": "yarn", "factor": "x"}, {"rope_type": "unknown"}, [], "linear",
                                        {"type": "linear", "factor": -2}])
    elif kind == "zero_layers":
        t["num_hidden_layers" if "num_hidden_layers" in t else "n_layer"] = 0
    elif kind == "encoder_decoder":
        cfg["is_encoder_decoder"] = True
    return cfg, kind


def config_file(rng: random.Random, name: str = "config.json", odd: float = 0.5) -> tuple[str, dict[str, FileSpec],
                                                                                          str]:
    """(the MODEL argument, files, what it is): a config.json (or its folder), tiny or with one inconsistency."""
    if rng.random() < odd:
        cfg, kind = odd_config(rng)
    else:
        cfg, kind = tiny_config(rng), "tiny_ok"
    text = json.dumps(cfg)
    if rng.random() < 0.3:
        folder = name.rsplit(".", 1)[0] + "_model"
        return folder, {folder: FileSpec("config_folder", text)}, kind
    return name, {name: FileSpec("text", text)}, kind
