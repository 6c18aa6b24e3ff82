"""FLOPs per token and utilisation, checked against the published formulas and figures they come from, walking
the layer groups (GQA, MLA, windows, MoE each in their own layers)."""
from __future__ import annotations

import pytest

from memplan.families.registry import read_config
from memplan.perf.flops import (flops_per_token, forward_components, megatron_flops_per_iteration,
                                palm_flops_per_token, six_n_flops_per_token, utilisation)
from memplan.setups import resolve_model
from memplan.spec.model import FFN, Attention, Head, LayerGroup, LayerSpec, Model, ModelSpec, Norm
from tests.published_runs import megatron_gpt


def llama(layers=2, hidden=512, heads=8, kv=8, ffn=1024, vocab=1000, seq=2048, **extra) -> ModelSpec:
    cfg = {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
           "num_key_value_heads": kv, "intermediate_size": ffn, "vocab_size": vocab,
           "max_position_embeddings": seq, **extra}
    return ModelSpec(name="llama-test", architecture=read_config(cfg, "test"), hf_config=cfg)


# PaLM 540B (Chowdhery et al. 2022, Table 1): 118 layers, d_model 18432, 48 heads of 256, multi-query attention,
# SwiGLU with d_ff = 4 d_model, parallel blocks (one shared LayerNorm), shared input/output embeddings, 256k
# vocabulary, no biases.
def palm_540b() -> ModelSpec:
    layer = LayerSpec(attention=Attention(heads=48, kv_heads=1, head_dim=256),
                      ffn=FFN(intermediate_size=73728, gated=True), norm=Norm(kind="layernorm"),
                      norm_place="shared", parallel_residual=True)
    m = Model(hidden_size=18432, vocab_size=256000, max_positions=2048, norm=Norm(kind="layernorm"),
              groups=[LayerGroup(count=118, layer=layer)], head=Head(tied=True))
    return ModelSpec(name="palm-540b", architecture=m)


@pytest.mark.parametrize("layers,hidden,heads", [(96, 12288, 96), (128, 25600, 160), (24, 2048, 16)])
def test_megatron_eq3_from_the_architecture(layers, hidden, heads):
    # Narayanan et al. 2021, eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh) FLOPs per iteration with full recomputation.
    # Our count is built matrix by matrix from the layer groups; it must equal the closed form (biases and norms
    # are not matrix products, so neither side counts them).
    s = 2048
    f = flops_per_token(megatron_gpt(layers, hidden, heads), s, recompute="full")
    assert f.hardware == pytest.approx(megatron_flops_per_iteration(1, s, layers, hidden, 51200) / s, rel=1e-12)
    plain = flops_per_token(megatron_gpt(layers, hidden, heads), s)
    assert plain.model == plain.hardware
    assert f.hardware - plain.hardware == pytest.approx(plain.forward - plain.forward_lm_head, rel=1e-12)


def test_backward_is_twice_forward_and_selective_recompute_adds_attention_only():
    f = flops_per_token(megatron_gpt(24, 2048, 16), 2048, recompute="selective")
    assert f.model == 3 * f.forward
    # Korthikanti et al. 2022 sec. 4.2: selective recomputation redoes only Q K^T and softmax V.
    assert f.hardware - f.model == pytest.approx(f.forward_attention)


def test_palm_formula_and_our_count_agree_for_palm_540b():
    f = flops_per_token(palm_540b(), 2048)
    # N from the architecture: 540.35B (PaLM reports 540.35B).
    assert f.n_parameters == pytest.approx(540.35e9, rel=1e-4)
    # PaLM app. B: 6N + 12 L H Q T.  With shared embeddings, 6N covers the LM head's matmul; only the norm vectors
    # are in N without a matmul, so the two counts agree to 1e-5.
    assert f.model == pytest.approx(f.palm, rel=1e-5)
    assert f.palm == 6 * f.n_parameters + 12 * 118 * 48 * 256 * 2048
    assert f.six_n == six_n_flops_per_token(f.n_parameters)


def test_palm_540b_mfu_is_46_2_percent():
    # PaLM sec. 4.1 / app. B: 238.3K tokens/s on 6144 TPU v4 chips (275 TFLOP/s bf16 peak each) = 46.2% MFU.
    per_token = palm_flops_per_token(540.35e9, layers=118, heads=48, head_dim=256, seq=2048)
    assert round(utilisation(per_token, 238.3e3, 6144, 275.0), 3) == 0.462


def test_llama_65b_mfu_from_its_throughput():
    # LLaMA (Touvron et al. 2023, sec. 2.4): 380 tokens/s/GPU on A100-80GB (312 TFLOP/s bf16).  LLaMA-65B
    # (Table 2): 80 layers, dim 8192, 64 heads, SwiGLU 22016, vocab 32000, seq 2048.
    m = llama(layers=80, hidden=8192, heads=64, kv=64, ffn=22016, vocab=32000)
    f = flops_per_token(m, 2048)
    assert f.n_parameters == 65_285_660_672  # LLaMA-65B's exact count ("65.2B")
    # By hand: 380 x 6N = 148.9 TFLOP/s = 47.7% of 312.  Counting matmuls (untied: the input embedding does no
    # matmul; attention 4 L H Q T per token forward): 49.48%.
    assert utilisation(f.six_n, 380, 1, 312.0) == pytest.approx(0.47709, abs=1e-5)
    assert utilisation(f.model, 380, 1, 312.0) == pytest.approx(0.49478, abs=1e-5)


def test_gqa_counts_the_smaller_k_and_v():
    mha, gqa = llama(kv=8), llama(kv=2)
    lin_mha, _, _ = forward_components(mha.arch, 2048)
    lin_gqa, _, _ = forward_components(gqa.arch, 2048)
    # k and v shrink from 512 to 128 outputs: 2 x 2 x 512 x (512 - 128) per layer, 2 layers
    assert lin_mha - lin_gqa == pytest.approx(2 * 2 * 2 * 512 * (512 - 128))


def test_causal_counting_halves_attention_and_a_sliding_window_caps_it():
    m = megatron_gpt(12, 768, 12, seq=1024)
    full = flops_per_token(m, 1024)
    causal = flops_per_token(m, 1024, causal=True)
    assert causal.forward_attention == pytest.approx(full.forward_attention * (1024 + 1) / 2 / 1024)
    sliding = llama(sliding_window=256, use_sliding_window=True, max_window_layers=0, model_type="mistral",
                    seq=1024)
    dense = llama(model_type="mistral", seq=1024)
    assert flops_per_token(sliding, 1024).forward_attention == pytest.approx(
        flops_per_token(dense, 1024).forward_attention / 4)


def test_alternating_windows_are_counted_per_layer():
    # Gemma 2 alternates sliding (4096) and global layers: at 8192 tokens the sliding half counts 4096 keys
    gemma = resolve_model("gemma-2-9b")
    a = gemma.arch
    kinds = {g.layer.attention.window_kind for g in a.groups}
    assert kinds == {"sliding", "global"}
    f = flops_per_token(gemma, 8192)
    per_layer = [2.0 * g.layer.attention.heads * (g.layer.attention.head_dim + g.layer.attention.value_dim)
                 * (min(8192, g.layer.attention.window) if g.layer.attention.window else 8192) * g.count
                 for g in a.groups]
    assert f.forward_attention == pytest.approx(sum(per_layer))


def test_moe_counts_active_experts_only_and_dispatch_all_is_hardware_only():
    dense = llama()
    moe = llama(model_type="mixtral", num_local_experts=8, num_experts_per_tok=2)
    lin_d, _, _ = forward_components(dense.arch, 128)
    lin_m, _, _ = forward_components(moe.arch, 128)
    mlp = 2 * 3 * 512 * 1024 * 2  # 3 SwiGLU matrices, 2 layers, 2 FLOPs per MAC
    router = 2 * 512 * 8 * 2
    assert lin_m - lin_d == pytest.approx(mlp + router)
    # transformers' Llama4TextMoe runs every token through every expert: hardware FLOPs, not model FLOPs
    layer = moe.arch.groups[0].layer
    all_ = moe.arch.model_copy(update={"groups": [g.model_copy(update={"layer": layer.model_copy(update={
        "ffn": layer.ffn.model_copy(update={"dispatch": "all"})})}) for g in moe.arch.groups]})
    lin_all_model, _, _ = forward_components(all_, 128)
    lin_all_hw, _, _ = forward_components(all_, 128, hardware=True)
    assert lin_all_model == pytest.approx(lin_m)
    assert lin_all_hw - lin_m == pytest.approx(2 * 3 * 512 * 1024 * 2 * (8 - 2))  # 6 more experts, 2 layers


def test_mla_counts_its_low_rank_projections():
    ds = resolve_model("deepseek-v3")
    f = flops_per_token(ds, 4096)
    a = ds.arch.first.attention
    assert a.mla
    # every active parameter outside the embeddings, the head and the norms is in one matmul: 2 FLOPs each
    pc = ds.parameters
    assert f.forward_linear == pytest.approx(2 * (pc.active - pc.embeddings - pc.lm_head - pc.norms), rel=1e-3)
    # the attention core over d_qk = 192 and d_v = 128 per head, 128 heads, 61 layers
    assert (a.head_dim, a.value_dim) == (192, 128)
    assert f.forward_attention == pytest.approx(61 * 2 * 128 * (192 + 128) * 4096)


def test_bare_parameter_count_falls_back_to_6n():
    # No architecture: Kaplan's C = 6N per token is all there is; full recompute adds a 2N forward (8N, Megatron
    # eq. 4).
    f = flops_per_token(ModelSpec(name="175B", total_parameters=175_000_000_000), 2048, recompute="full")
    assert (f.model, f.hardware, f.exact) == (6 * 175e9, 8 * 175e9, False)
