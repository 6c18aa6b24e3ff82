"""FLOPs per token and utilisation, checked against the published formulas and figures they come from."""
from __future__ import annotations

import pytest

from memplan.perf.flops import (flops_per_token, megatron_flops_per_iteration, palm_flops_per_token,
                                six_n_flops_per_token, utilisation)
from memplan.spec.model import Architecture, ModelSpec


def gpt(layers: int, hidden: int, heads: int, vocab: int = 51200, seq: int = 2048) -> ModelSpec:
    """GPT as in Megatron-LM (Narayanan et al. 2021, Table 1): 4h MLP, MHA, learned positions, vocab 51200."""
    return ModelSpec(name=f"gpt-{layers}x{hidden}", architecture=Architecture(
        n_layers=layers, hidden_size=hidden, n_heads=heads, ffn_hidden_size=4 * hidden, mlp="gelu",
        norm="layernorm", norm_bias=True, vocab_size=vocab, max_positions=seq, position="learned", qkv_bias=True,
        attn_out_bias=True, mlp_bias=True))


# PaLM 540B (Chowdhery et al. 2022, Table 1): 118 layers, d_model 18432, 48 heads of 256, multi-query attention,
# SwiGLU with d_ff = 4 d_model, parallel blocks, shared input/output embeddings, 256k vocabulary, no biases.
PALM_540B = ModelSpec(name="palm-540b", architecture=Architecture(
    n_layers=118, hidden_size=18432, n_heads=48, n_kv_heads=1, head_dim=256, ffn_hidden_size=73728, mlp="swiglu",
    norm="layernorm", norms_per_layer=1, vocab_size=256000, tied_embeddings=True, parallel_residual=True,
    max_positions=2048))


@pytest.mark.parametrize("layers,hidden,heads", [(96, 12288, 96), (128, 25600, 160), (24, 2048, 16)])
def test_megatron_eq3_from_the_architecture(layers, hidden, heads):
    # Narayanan et al. 2021, eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh) FLOPs per iteration with full recomputation.
    # Our count is built matrix by matrix from the architecture; it must equal the closed form (biases and norms
    # are not matrix products, so neither side counts them).
    s = 2048
    f = flops_per_token(gpt(layers, hidden, heads), s, recompute="full")
    assert f.hardware == pytest.approx(megatron_flops_per_iteration(1, s, layers, hidden, 51200) / s, rel=1e-12)
    # Without recomputation the layers run 3 passes instead of 4 (the LM head term stays 6 s h V).
    plain = flops_per_token(gpt(layers, hidden, heads), s)
    assert plain.model == plain.hardware
    assert f.hardware - plain.hardware == pytest.approx(plain.forward - plain.forward_lm_head, rel=1e-12)


def test_backward_is_twice_forward_and_selective_recompute_adds_attention_only():
    f = flops_per_token(gpt(24, 2048, 16), 2048, recompute="selective")
    assert f.model == 3 * f.forward
    # Korthikanti et al. 2022 sec. 4.2: selective recomputation redoes only Q K^T and softmax V.
    assert f.hardware - f.model == pytest.approx(f.forward_attention)


def test_palm_formula_and_our_count_agree_for_palm_540b():
    f = flops_per_token(PALM_540B, 2048)
    # N from the architecture: 540.36B (PaLM reports 540.35B).
    assert f.n_parameters == pytest.approx(540.35e9, rel=1e-4)
    # PaLM app. B: 6N + 12 L H Q T. With shared embeddings, 6N covers the LM head's matmul; only the norm vectors
    # (118 x 18432 + 18432 parameters) are in N without a matmul, so the two counts agree to 1e-5.
    assert f.model == pytest.approx(f.palm, rel=1e-5)
    assert f.palm == 6 * f.n_parameters + 12 * 118 * 48 * 256 * 2048
    assert f.six_n == six_n_flops_per_token(f.n_parameters)


def test_palm_540b_mfu_is_46_2_percent():
    # PaLM sec. 4.1 / app. B: 238.3K tokens/s on 6144 TPU v4 chips (275 TFLOP/s bf16 peak each) = 46.2% MFU.
    per_token = palm_flops_per_token(540.35e9, layers=118, heads=48, head_dim=256, seq=2048)
    assert round(utilisation(per_token, 238.3e3, 6144, 275.0), 3) == 0.462


def test_llama_65b_mfu_from_its_throughput():
    # LLaMA (Touvron et al. 2023, sec. 2.4): 380 tokens/s/GPU on A100-80GB (312 TFLOP/s bf16). Architecture of
    # LLaMA-65B (Table 2): 80 layers, dim 8192, 64 heads, SwiGLU 22016, vocab 32000, seq 2048.
    llama = ModelSpec(name="llama-65b", architecture=Architecture(
        n_layers=80, hidden_size=8192, n_heads=64, ffn_hidden_size=22016, vocab_size=32000, max_positions=2048))
    f = flops_per_token(llama, 2048)
    assert f.n_parameters == 65_285_660_672  # LLaMA-65B's exact count ("65.2B")
    # By hand: 380 x 6N = 148.9 TFLOP/s = 47.7% of 312. Counting matmuls (untied: the input embedding does no
    # matmul, attention 4 L H Q T per token forward): 3 x (2 x 80 x (4h^2 + 3 h d_ff) + 4 x 80 x 8192 x 2048
    # + 2 x 8192 x 32000) x 380 / 312e12 = 49.48%.
    assert utilisation(f.six_n, 380, 1, 312.0) == pytest.approx(0.47709, abs=1e-5)
    assert utilisation(f.model, 380, 1, 312.0) == pytest.approx(0.49478, abs=1e-5)


def test_causal_counting_halves_attention_and_sliding_window_caps_it():
    m = gpt(12, 768, 12, seq=1024)
    full = flops_per_token(m, 1024)
    causal = flops_per_token(m, 1024, causal=True)
    assert causal.forward_attention == pytest.approx(full.forward_attention * (1024 + 1) / 2 / 1024)
    arch = m.arch.model_copy(update={"sliding_window": 256})
    windowed = flops_per_token(ModelSpec(name="w", architecture=arch), 1024)
    assert windowed.forward_attention == pytest.approx(full.forward_attention / 4)


def test_moe_counts_active_experts_only():
    # Mixtral-style: 8 experts, top-2: the MLP FLOPs are those of 2 experts.
    base = dict(n_layers=2, hidden_size=512, n_heads=8, ffn_hidden_size=1024, vocab_size=1000)
    dense = flops_per_token(ModelSpec(name="d", architecture=Architecture(**base)), 128)
    moe = flops_per_token(ModelSpec(name="m", architecture=Architecture(**base, n_experts=8, experts_per_token=2)),
                          128)
    mlp_dense = 2 * 3 * 512 * 1024 * 2  # 3 SwiGLU matrices, 2 layers, 2 FLOPs per MAC
    router = 2 * 512 * 8 * 2
    assert moe.forward_linear - dense.forward_linear == pytest.approx(mlp_dense + router)


def test_bare_parameter_count_falls_back_to_6n():
    # No architecture: Kaplan's C = 6N per token is all there is; full recompute adds a 2N forward (8N, Megatron
    # eq. 4).
    f = flops_per_token(ModelSpec(name="175B", total_parameters=175_000_000_000), 2048, recompute="full")
    assert (f.model, f.hardware, f.exact) == (6 * 175e9, 8 * 175e9, False)
