"""Builders the family readers share: heads from a config, per-layer windows from `layer_types`, layers -> groups.

Most 2026 decoders are Llama's skeleton (q/k/v/o, gated MLP, RMSNorm, rotary, untied head) with a few switches;
the family modules say which switches, with the modeling-file line that decides each.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from memplan.errors import MemplanError
from memplan.families.config import MAX_EXPERTS, MAX_LAYERS, MISSING, ConfigReader
from memplan.spec.model import FFN, Attention, Embeddings, Head, LayerGroup, LayerSpec, Model, Norm

# transformers 5 layer_types entries and the attention window kind they mean
LAYER_TYPES = {"full_attention": "global", "sliding_attention": "sliding", "chunked_attention": "chunked"}


def groups_of(layers: Sequence[LayerSpec]) -> list[LayerGroup]:
    """Consecutive equal layer specs become one group."""
    out: list[LayerGroup] = []
    for spec in layers:
        if out and out[-1].layer == spec:
            out[-1] = LayerGroup(count=out[-1].count + 1, layer=spec)
        else:
            out.append(LayerGroup(count=1, layer=spec))
    return out


def n_layers(c: ConfigReader, *keys: str) -> int:
    return c.integer(*(keys or ("num_hidden_layers",)), maximum=MAX_LAYERS)


def heads(c: ConfigReader, hidden: int, kv_key: str = "num_key_value_heads",
          heads_key: tuple[str, ...] = ("num_attention_heads",), *, head_dim_default: int | None = None,
          kv_default: int | None = None) -> dict[str, int]:
    """heads, kv_heads and head_dim: the config's head_dim, else the config class's default (`head_dim_default`:
    Gemma 256, Qwen3 128, whose attention reads config.head_dim), else hidden // heads, which must then divide.
    KV heads absent: the config class's default (`kv_default`, e.g. Gemma2Config 4), else MHA."""
    n = c.integer(*heads_key)
    kv = c.integer(kv_key, default=kv_default or n)
    if c.has("head_dim"):
        d = c.integer("head_dim")
    elif head_dim_default is not None:
        d = head_dim_default
    else:
        if hidden % n:
            raise MemplanError(f"{c.path}: hidden size {hidden} is not divisible by {n} attention heads and the "
                               "config has no head_dim")
        d = hidden // n
    if n % kv:
        raise MemplanError(f"{c.path}: attention heads ({n}) must be divisible by KV heads ({kv}, "
                           f"{c.where}{kv_key})")
    return {"heads": n, "kv_heads": kv, "head_dim": d}


def windows(c: ConfigReader, count: int, default_types: list[str] | None = None,
            window_key: str = "sliding_window", chunk_key: str = "attention_chunk_size", *,
            window_default: int | None = None, chunk_default: int | None = None,
            known: tuple[str, ...] = tuple(LAYER_TYPES)) -> list[tuple[str, int | None]]:
    """(window kind, window) per layer from `layer_types` (or `default_types`); every layer global if neither.

    The window of a sliding (chunked) layer is `window_key` (`chunk_key`); an absent key takes the config class's
    default (`window_default`), an explicit null makes those layers attend globally, as the attention classes do
    with `sliding_window=None` (e.g. Gemma2Attention.sliding_window = config.sliding_window)."""
    types = c.layer_types(count, default_types or ["full_attention"] * count, known)
    out: list[tuple[str, int | None]] = []
    sizes = {"sliding": (window_key, window_default), "chunked": (chunk_key, chunk_default)}
    for t in types:
        kind = LAYER_TYPES[t]
        if kind == "global":
            out.append((kind, None))
            continue
        key, default = sizes[kind]
        if key in c.data and c.data[key] is None:
            out.append(("global", None))
        elif default is None:
            out.append((kind, c.integer(key)))
        else:
            out.append((kind, c.integer(key, default=default)))
    return out


def optional_number(c: ConfigReader, key: str, default: float | None) -> float | None:
    """A positive setting that may be switched off: absent -> the config class's default, null -> None."""
    if key not in c.data:
        return default
    if c.data[key] is None:
        return None
    value = c.number(key)
    if value <= 0:
        raise c.bad(key, "a positive number or null", c.data[key])
    return value


def layer_indices(c: ConfigReader, key: str, count: int, default: list[int] | None = None) -> set[int]:
    """A list of layer indices (mlp_only_layers, moe_layers), each in 0..count-1."""
    values = c.int_list(key, default=default if default is not None else [])
    bad = [v for v in values if not 0 <= v < count]
    if bad:
        raise c.bad(key, f"a list of layer indices in 0..{count - 1} (num_hidden_layers {count})", bad[0])
    return set(values)


def experts_top_k(c: ConfigReader, experts_keys: tuple[str, ...], top_k_keys: tuple[str, ...], *,
                  experts_default: Any = MISSING, top_k_default: Any = MISSING, allow_dense: bool = False
                  ) -> tuple[int, int]:
    """Routed experts and experts per token, checked against each other with the keys named."""
    experts = c.integer(*experts_keys, default=experts_default, minimum=0 if allow_dense else 1,
                        maximum=MAX_EXPERTS)
    if experts == 0:
        return 0, 0
    top_k = c.integer(*top_k_keys, default=top_k_default, maximum=MAX_EXPERTS)
    if top_k > experts:
        raise c.bad(top_k_keys[0], f"at most {experts_keys[0]} ({experts}): each token is routed to top-k of the "
                                   "experts", top_k)
    return experts, top_k


def activation(c: ConfigReader, *keys: str, default: str = "silu") -> str:
    act = c.activation(*(keys or ("hidden_act",)), default=default)
    return act


def decoder(c: ConfigReader, *, family: str, hidden: int, layers: Sequence[LayerSpec], vocab: int,
            max_positions: int, norm: Norm | None = None, head: Head | None = None,
            embeddings: Embeddings | None = None, names: dict[str, str] | None = None, **extra: Any) -> Model:
    """A Model from its per-layer specs; pydantic checks become one line naming the config."""
    try:
        return Model(family=family, hidden_size=hidden, vocab_size=vocab, max_positions=max_positions,
                     norm=norm or Norm(), embeddings=embeddings or Embeddings(), groups=groups_of(layers),
                     head=head or Head(), module_names=names or {}, **extra)
    except MemplanError as exc:
        raise MemplanError(f"{c.path}: {exc}") from None


def per_layer(count: int, make: Callable[[int], LayerSpec]) -> list[LayerSpec]:
    """Layer specs for layers 0..count-1 (equal specs compare equal, so groups_of merges them)."""
    return [make(i) for i in range(count)]


def safe(c: ConfigReader, build: Callable[[], Any]) -> Any:
    """Run a spec constructor; its MemplanError (heads vs KV heads, top-k vs experts, ...) names the config."""
    from pydantic import ValidationError

    try:
        return build()
    except MemplanError as exc:
        if str(exc).startswith(f"{c.path}:"):
            raise
        raise MemplanError(f"{c.path}: {exc}") from None
    except ValidationError as exc:
        from memplan.field_errors import field_error_line

        raise MemplanError(field_error_line(exc, c.path)) from None


def llama_attention(c: ConfigReader, hidden: int, *, qkv_bias: bool, out_bias: bool,
                    window: tuple[str, int | None] = ("global", None), head_dim_default: int | None = None,
                    kv_default: int | None = None, **kw: Any) -> Attention:
    hd = heads(c, hidden, head_dim_default=head_dim_default, kv_default=kv_default)
    return safe(c, lambda: Attention(**hd, qkv_bias=qkv_bias, out_bias=out_bias,
                                     window_kind=window[0], window=window[1],
                                     dropout=c.probability("attention_dropout"),
                                     rotary_fraction=c.rope("partial_rotary_factor")
                                     or c.number("partial_rotary_factor", default=1.0), **kw))


def gated_ffn(c: ConfigReader, width: int, *, bias: bool = False, act_keys: tuple[str, ...] = ("hidden_act",),
              default_act: str = "silu", **kw: Any) -> FFN:
    return safe(c, lambda: FFN(intermediate_size=width, activation=c.activation(*act_keys, default=default_act),
                               gated=True, bias=bias, **kw))
