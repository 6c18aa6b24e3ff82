"""The KV cache per layer kind, measured: small configs of each kind of attention built by transformers 5.24 on CPU,
a prefill and one decode step with use_cache=True, the cache tensors' bytes summed, against memplan reading the
same config.json through its family (memory/kv_cache.py); and the same per-token bytes as vLLM's KV specs.

Kinds: Llama (full GQA), Mistral (sliding window on every layer), Gemma 2 (sliding and global alternating),
gpt-oss (alternating windows with sinks), DeepSeek-V3 (MLA latent), Llama 4 (chunked-local and NoPE global).
"""
from __future__ import annotations

import pytest

from memplan.families.registry import read_config
from memplan.memory.kv_cache import (hf_storage_tokens, hf_view_tokens, layer_kinds, stage_kinds)
from memplan.memory.vllm_kv import layer_specs
from memplan.memory.vllm_rules import VllmRules
from memplan.spec.layout import Layout
from memplan.spec.training import DType

PROMPT, BATCH, WINDOW = 40, 2, 16
SMALL = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
         "max_position_embeddings": 256}
CONFIGS = {
    "llama": dict(model_type="llama", intermediate_size=128, num_hidden_layers=2),
    "mistral": dict(model_type="mistral", intermediate_size=128, num_hidden_layers=2, sliding_window=WINDOW),
    "gemma2": dict(model_type="gemma2", intermediate_size=128, num_hidden_layers=4, head_dim=16,
                   sliding_window=WINDOW),
    "gpt_oss": dict(model_type="gpt_oss", intermediate_size=64, num_hidden_layers=4, head_dim=16,
                    num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW),
    "deepseek_v3": dict(model_type="deepseek_v3", intermediate_size=128, moe_intermediate_size=32,
                        num_hidden_layers=2, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2,
                        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=32, q_lora_rank=48,
                        qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, n_group=1, topk_group=1),
    "llama4_text": dict(model_type="llama4_text", intermediate_size=64, intermediate_size_mlp=128,
                        num_hidden_layers=4, head_dim=16, num_local_experts=2, num_experts_per_tok=1,
                        attention_chunk_size=WINDOW, no_rope_layers=[1, 1, 1, 0], interleave_moe_layer_step=1),
}
KINDS = {"llama": {"full"}, "mistral": {"sliding"}, "gemma2": {"sliding", "full"}, "gpt_oss": {"sliding", "full"},
         "deepseek_v3": {"mla"}, "llama4_text": {"chunked", "full"}}


def _config(name: str) -> dict:
    return {**SMALL, **CONFIGS[name]}


def _measure(name: str):
    """Cache of transformers' model after a PROMPT-token prefill and after one decode step: per layer the tokens
    the cache shows, and the bytes its tensors' storages hold."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**_config(name)), dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 128, (BATCH, PROMPT))

    def snapshot(cache):
        return [(layer.keys.shape[-2], sum(t.untyped_storage().nbytes() for t in (layer.keys, layer.values)),
                 sum(t.nbytes for t in (layer.keys, layer.values))) for layer in cache.layers]

    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        after_prefill = snapshot(cache)
        cache = model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True).past_key_values
        after_decode = snapshot(cache)
    return after_prefill, after_decode


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kv_bytes_per_layer_kind_equal_transformers_cache(name):
    pytest.importorskip("transformers")
    a = read_config(_config(name), f"{name}-small")
    kinds = stage_kinds(a, Layout(), DType.bf16)[0]
    assert {k.kind for k in kinds} == KINDS[name]
    by_layer = []
    for g in a.groups:
        by_layer += [layer_kinds([g], Layout(), DType.bf16)[0]] * g.count
    prefill, decode = _measure(name)
    assert len(prefill) == len(by_layer) == a.n_layers
    for k, (shown_p, held_p, view_p), (shown_d, held_d, view_d) in zip(by_layer, prefill, decode):
        assert shown_p == hf_view_tokens(k, PROMPT) and shown_d == hf_view_tokens(k, PROMPT + 1)
        assert view_d == BATCH * k.bytes_per_token_per_layer * hf_view_tokens(k, PROMPT + 1)
        assert held_p == BATCH * k.bytes_per_token_per_layer * hf_storage_tokens(k, PROMPT, prompt=PROMPT)
        assert held_d == BATCH * k.bytes_per_token_per_layer * hf_storage_tokens(k, PROMPT + 1, prompt=PROMPT)


def test_sliding_layers_hold_the_prompt_until_the_first_decode_step():
    """DynamicSlidingWindowLayer keeps a view of window - 1 tokens over the concatenation: after the prefill its
    storage is the whole prompt, after one decode step the window."""
    pytest.importorskip("transformers")
    prefill, decode = _measure("mistral")
    per_token = 2 * 2 * 16 * 2  # K and V, 2 KV heads of 16, bf16
    assert prefill[0] == (WINDOW - 1, BATCH * per_token * PROMPT, BATCH * per_token * (WINDOW - 1))
    assert decode[0] == (WINDOW - 1, BATCH * per_token * WINDOW, BATCH * per_token * (WINDOW - 1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kv_bytes_per_token_equal_vllm_specs(name):
    """vLLM's page per token (AttentionSpec / MLAAttentionSpec page_size_bytes / block_size) is the same number of
    bytes as transformers caches per token and layer; only the tokens kept differ."""
    a = read_config(_config(name), f"{name}-small")
    specs = layer_specs(a, Layout(), 2, 16, VllmRules((0, 33, 0)))
    ours = [layer_kinds([g], Layout(), DType.bf16)[0] for g in a.groups for _ in range(g.count)]
    assert [s.page // 16 for s in specs] == [k.bytes_per_token_per_layer for k in ours]
    assert [s.kind for s in specs] == [k.kind for k in ours]


def test_tensor_parallel_heads_and_the_unsplit_latent():
    """A rank holds max(1, kv_heads // tp) KV heads; MLA's latent is whole on every rank."""
    llama = read_config(_config("llama"), "l")
    ds = read_config(_config("deepseek_v3"), "d")
    for tp, heads in ((1, 2), (2, 1), (4, 1)):
        k = layer_kinds(llama.groups, Layout(gpus=tp, tp=tp), DType.bf16)[0]
        assert k.kv_heads == heads and k.bytes_per_token_per_layer == heads * (16 + 16) * 2
    assert {layer_kinds([g], Layout(gpus=4, tp=4), DType.bf16)[0].bytes_per_token_per_layer
            for g in ds.groups} == {(32 + 8) * 2}


def test_sinks_cache_nothing():
    a = read_config(_config("gpt_oss"), "o")
    kinds = stage_kinds(a, Layout(), DType.bf16)[0]
    assert all(k.sinks for k in kinds) and all("no cached tokens" in k.note for k in kinds)
