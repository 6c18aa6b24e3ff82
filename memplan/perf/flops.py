"""FLOPs per token from the architecture, and the utilisation figures built on them (MFU, HFU).

Convention (Kaplan et al. 2020, sec. 2.1; Narayanan et al. 2021, sec. 5.1; PaLM, Chowdhery et al. 2022, app. B):
  - only matrix products count: a (m x k) @ (k x n) product is 2*m*k*n FLOPs (one multiply, one add);
    norms, softmax, activations, residuals and the optimizer are elementwise and left out, as in those papers;
  - backward = 2 x forward (gradients with respect to inputs and to weights), so training = 3 x forward;
  - recomputation adds forward work that is not model work: "model FLOPs" exclude it, "hardware FLOPs" include
    it (PaLM app. B; Korthikanti et al. 2022, sec. 5).
Attention scores (Q K^T) and values (softmax V) are counted over the full sequence by default, as PaLM's and
Megatron's formulas do; `causal=True` counts only the unmasked half ((T+1)/2 keys per query on average), which is
what FlashAttention-style kernels skip.  Published MFU figures use the full count.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.spec.model import Architecture, ModelSpec


class FlopsPerToken(BaseModel):
    """Training FLOPs per token, and the forward pass by component (per token, whole model)."""

    seq: int
    forward_linear: float = Field(description="projections and MLP matrices, all layers (active experts for MoE)")
    forward_attention: float = Field(description="Q K^T and softmax(.) V, all layers")
    forward_lm_head: float
    forward: float
    model: float = Field(description="3 x forward: fwd + bwd (2x); what MFU counts")
    hardware: float = Field(description="model + recomputed forward work; what HFU counts")
    recompute: str = "none"
    causal: bool = False
    six_n: float = Field(description="6N, N = all parameters (Kaplan et al. 2020)")
    palm: float = Field(description="6N + 12 L H Q T (PaLM appendix B)")
    n_parameters: int
    exact: bool = Field(True, description="False for a bare parameter count: 6N, attention unknown")


def forward_components(a: Architecture, seq: int, causal: bool = False) -> tuple[float, float, float]:
    """(linear, attention, lm_head) forward FLOPs per token over all layers."""
    linear = 0.0
    for lin in a.linears():
        # MoE: each token passes through experts_per_token of the `count` experts (Switch/Mixtral routing).
        used = a.experts_per_token if (a.n_experts and lin.count > 1) else lin.count
        linear += 2.0 * lin.in_features * lin.out_features * used
    keys = float(seq)
    if a.sliding_window:
        keys = min(keys, float(a.sliding_window))
    if causal and a.causal:
        # query i sees keys 0..i: the mean over i = 0..T-1 is (T+1)/2 (capped by the window).
        keys = min((seq + 1) / 2.0, keys)
    # Q K^T and softmax V: 2 * H * Q * keys each, per query token (PaLM app. B: 12 L H Q T for fwd+bwd).
    attention = 2 * 2.0 * a.n_heads * a.head_size * keys
    lm_head = 2.0 * a.hidden_size * a.vocab_size if a.lm_head else 0.0
    return linear * a.n_layers, attention * a.n_layers, lm_head


def flops_per_token(model: ModelSpec, seq: int, recompute: str = "none", causal: bool = False) -> FlopsPerToken:
    n = model.parameters.total
    if model.architecture is None:
        # A bare parameter count: the 6N rule is all there is (2N forward, every parameter in one matmul);
        # attention is unknown and left out. Full recompute redoes the 2N forward (Megatron eq. 4's 8N).
        fwd = 2.0 * model.parameters.active
        extra = fwd if recompute == "full" else 0.0
        return FlopsPerToken(seq=seq, forward_linear=fwd, forward_attention=0.0, forward_lm_head=0.0, forward=fwd,
                             model=3 * fwd, hardware=3 * fwd + extra, recompute=recompute, causal=causal,
                             six_n=6.0 * n, palm=6.0 * n, n_parameters=n, exact=False)
    a = model.arch
    lin, att, head = forward_components(a, seq, causal)
    fwd = lin + att + head
    extra = 0.0
    if recompute == "full":
        # Megatron activation checkpointing recomputes each transformer layer's forward, not the LM head
        # (Narayanan et al. 2021, eq. 3: the 4x factor applies to the layers, the logit term is 6BshV).
        extra = lin + att
    elif recompute == "selective":
        # Korthikanti et al. 2022, sec. 4.2: recompute only the attention core (Q K^T, softmax, dropout, . V).
        extra = att
    return FlopsPerToken(
        seq=seq, forward_linear=lin, forward_attention=att, forward_lm_head=head, forward=fwd,
        model=3 * fwd, hardware=3 * fwd + extra, recompute=recompute, causal=causal,
        six_n=6.0 * n, palm=palm_flops_per_token(n, a.n_layers, a.n_heads, a.head_size, seq), n_parameters=n,
    )


def six_n_flops_per_token(n_params: float) -> float:
    """Kaplan et al. 2020, eq. 2.1 (C ~ 6N per token): 2N forward, 4N backward."""
    return 6.0 * n_params


def palm_flops_per_token(n_params: float, layers: int, heads: int, head_dim: int, seq: int) -> float:
    """PaLM (Chowdhery et al. 2022), appendix B: 6N + 12 L H Q T model FLOPs per token."""
    return 6.0 * n_params + 12.0 * layers * heads * head_dim * seq


def megatron_flops_per_iteration(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Narayanan et al. 2021 (Megatron-LM), eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh), with full recomputation.

    Derived for GPT (MHA, 4h MLP, no GQA); hardware FLOPs (it counts the recomputed forward).
    """
    return 96.0 * batch * seq * layers * hidden**2 * (1 + seq / (6 * hidden) + vocab / (16 * layers * hidden))


def utilisation(flops_per_token: float, tokens_per_second: float, n_chips: int, peak_tflops: float) -> float:
    """PaLM app. B: MFU = (model FLOPs/token x observed tokens/s) / (chips x peak FLOP/s). With hardware FLOPs: HFU."""
    return flops_per_token * tokens_per_second / (n_chips * peak_tflops * 1e12)
