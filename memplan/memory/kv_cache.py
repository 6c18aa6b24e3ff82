"""The KV cache per layer kind, on one GPU: what each kind of attention layer stores per token, and how many
tokens it keeps.

Per token and layer (Pope et al. 2022, sec. 2; Kwon et al. 2023 (vLLM) sec. 3):
- full (global) attention: keys and values of every KV head on this rank, kv_heads x (head_dim + v_head_dim);
- sliding-window attention: the same bytes, for the window's tokens only;
- chunked-local attention (Llama 4): the same bytes, for the current chunk's tokens only;
- MLA (DeepSeek-V2 sec. 2.1.2, "only c_t^KV and k_t^R need to be cached"): one latent of kv_lora_rank plus the
  shared rotary key of qk_rope_head_dim, no separate value, no heads;
- attention sinks (gpt-oss) are one learned logit per head: parameters, no cached tokens.

Tensor parallelism: a rank holds max(1, kv_heads // tp) KV heads (vLLM's attention layers:
`num_kv_heads = max(1, total_num_kv_heads // tp_size)`; heads are replicated when tp exceeds them; transformers
under TP shards the same way).  The MLA latent is not split: every TP rank stores the whole latent
(vLLM MultiHeadLatentAttention builds Attention(num_kv_heads=1, head_size=kv_lora_rank + qk_rope_head_dim)).

Tokens kept, transformers 5.24 (`DynamicCache(config=...)`, transformers/cache_utils.py):
`get_layer_types_and_kwargs` maps "full_attention" to DynamicLayer (every token) and both "sliding_attention" and
"chunked_attention" to DynamicSlidingWindowLayer(sliding_window=window or attention_chunk_size), whose `update`
concatenates the new keys to the cached ones and keeps `full_key_states[:, :, -sliding_window + 1:, :]`, a *view*:
the layer shows window - 1 tokens, but holds the storage of the whole concatenation until the next update.  So
right after a one-pass prefill of P tokens a sliding layer holds all P (the view's storage); after each decode step
it holds min(tokens, window) (window - 1 cached + the new one); with chunked prefill of c tokens, at most
window - 1 + c.  Measured in tests/test_kv_cache.py (storage bytes, prefill and one decode step).
DeepseekV3Attention (modeling_deepseek_v3.py) calls
`cache.update(kv_nope, k_rot)` with the normed latent [b, 1, s, kv_lora_rank] and the rotated key
[b, 1, s, qk_rope_head_dim] ("Cache read / write is performed while latent KV is still compressed"): the same
elements as vLLM's MLA spec.  vLLM's block counts per kind are memplan/memory/vllm_kv.py.
"""
from __future__ import annotations

from collections.abc import Iterable

from memplan.results.inference import KVLayerKind
from memplan.spec.layout import Layout
from memplan.spec.model import Attention, LayerGroup, Model
from memplan.spec.training import DType

KIND_NAMES = {"global": "full", "sliding": "sliding", "chunked": "chunked"}


def kv_heads_on_rank(a: Attention, tp: int) -> int:
    return 1 if a.mla else max(1, a.kv_heads // tp)


def elems_per_token(a: Attention, tp: int) -> int:
    """Elements one token adds to one layer's cache on one TP rank (keys + values; MLA: latent + rotary key)."""
    if a.mla:
        return a.kv_cache_elems_per_token()
    return kv_heads_on_rank(a, tp) * (a.head_dim + a.value_dim)


def kind_of(a: Attention) -> str:
    return "mla" if a.mla else KIND_NAMES[a.window_kind]


def layer_kinds(groups: Iterable[LayerGroup], layout: Layout, dtype: DType) -> list[KVLayerKind]:
    """The layers of one pipeline stage (its groups), merged by what their cache stores, in order of first
    appearance."""
    tp = layout.tp
    out: dict[tuple, KVLayerKind] = {}
    for g in groups:
        a = g.layer.attention
        kind = kind_of(a)
        window = a.window if kind in ("sliding", "chunked") else None
        per_layer = elems_per_token(a, tp)
        key = (kind, window, per_layer)
        if key in out:
            out[key] = out[key].model_copy(update={"layers": out[key].layers + g.count,
                                                   "bytes_per_token": out[key].bytes_per_token
                                                   + g.count * out[key].bytes_per_token_per_layer})
            continue
        bpl = int(per_layer * dtype.bytes)
        out[key] = KVLayerKind(
            kind=kind, layers=g.count, window=window, kv_heads=kv_heads_on_rank(a, tp),
            head_dim=(a.kv_lora_rank or 0) + a.qk_rope_head_dim if a.mla else a.head_dim,
            v_head_dim=0 if a.mla else a.value_dim, elems_per_token_per_layer=per_layer,
            bytes_per_token_per_layer=bpl, bytes_per_token=g.count * bpl, dtype=dtype.value,
            sinks=a.sinks, note=_note(a, kind, tp))
    return list(out.values())


def _note(a: Attention, kind: str, tp: int) -> str:
    if kind == "mla":
        return (f"latent {a.kv_lora_rank} + rotary key {a.qk_rope_head_dim}, not split by TP")
    heads = kv_heads_on_rank(a, tp)
    rep = f" (of {a.kv_heads}, replicated: tp {tp} > KV heads)" if tp > a.kv_heads else f" of {a.kv_heads}"
    note = f"{heads} KV head(s){rep if tp > 1 else ''} x ({a.head_dim} + {a.value_dim})"
    if a.sinks:
        note += "; sinks are per-head logits, no cached tokens"
    return note


def hf_view_tokens(kind: KVLayerKind, fed: int) -> int:
    """Tokens transformers' cache *shows* for one sequence after `fed` tokens (keys.shape[-2])."""
    return fed if kind.window is None else min(fed, kind.window - 1)


def hf_storage_tokens(kind: KVLayerKind, fed: int, prompt: int | None = None) -> int:
    """Tokens whose storage a layer holds after `fed` tokens, the first `prompt` of them in one prefill pass
    (sliding/chunked: the whole prompt until the first decode step, then min(fed, window))."""
    if kind.window is None:
        return fed
    if prompt is not None and fed <= prompt:
        return fed
    return min(fed, kind.window)


def hf_peak_tokens(kind: KVLayerKind, prompt: int, context: int, chunk: int | None = None) -> int:
    """The most tokens one sequence's layer holds over a generate() of `prompt` + generated tokens up to
    `context`: the prefill's storage (all of a one-pass prompt; window - 1 + chunk when chunked), or the decode
    steps' min(context, window)."""
    if kind.window is None:
        return context
    prefill = prompt if chunk is None else min(prompt, kind.window - 1 + chunk)
    return max(prefill, min(context, kind.window))


def hf_cache_bytes(kinds: list[KVLayerKind], prompt: int, context: int, sequences: int = 1,
                   chunk: int | None = None) -> int:
    """Peak bytes of transformers' cache tensors on this GPU over a generate() (hf_peak_tokens per kind)."""
    return sequences * sum(k.bytes_per_token * hf_peak_tokens(k, prompt, context, chunk) for k in kinds)


def bytes_per_token(kinds: list[KVLayerKind]) -> int:
    """Bytes one token adds across every layer kind (before windows cap it)."""
    return sum(k.bytes_per_token for k in kinds)


def stage_kinds(model: Model, layout: Layout, dtype: DType) -> list[list[KVLayerKind]]:
    """Per pipeline stage, its layer kinds."""
    from memplan.memory.layout import stage_groups

    return [layer_kinds((g for _, g in groups), layout, dtype) for groups in stage_groups(model, layout)]


def describe(kinds: list[KVLayerKind]) -> str:
    """'40 sliding (4096), 8 full' ."""
    parts = []
    for k in kinds:
        w = f" ({k.window})" if k.window else ""
        parts.append(f"{k.layers} {k.kind}{w}")
    return ", ".join(parts)
