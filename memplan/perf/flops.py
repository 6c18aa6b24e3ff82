"""FLOPs per token from the layer groups, and the utilisation figures built on them (MFU, HFU).

Convention (Kaplan et al. 2020, sec. 2.1; Narayanan et al. 2021, sec. 5.1; PaLM, Chowdhery et al. 2022, app. B):
  - only matrix products count: a (m x k) @ (k x n) product is 2*m*k*n FLOPs (one multiply, one add);
    norms, softmax, activations, residuals and the optimizer are elementwise and left out, as in those papers;
  - backward = 2 x forward (gradients with respect to inputs and to weights), so training = 3 x forward;
  - recomputation adds forward work that is not model work: "model FLOPs" exclude it, "hardware FLOPs" include
    it (PaLM app. B; Korthikanti et al. 2022, sec. 5).
Each layer group contributes its own linears (GQA's smaller K/V, MLA's low-rank projections, SwiGLU's three
matrices, the router and the top-k routed experts of a MoE layer, its shared experts) and its own attention
(Q K^T over d_qk and scores x V over d_v per head, over the keys a query sees: its window for sliding and chunked
layers).  Attention is counted over the full sequence by default, as PaLM's and Megatron's formulas do;
`causal=True` counts only the unmasked half ((T+1)/2 keys per query on average), what FlashAttention-style
kernels skip.  Published MFU figures use the full count.
"""
from __future__ import annotations

from memplan.results.time import FlopsPerToken
from memplan.spec.model import LayerSpec, Model, ModelSpec


def attention_keys(layer: LayerSpec, seq: int, causal: bool) -> float:
    """Keys one query sees on average: the sequence, capped by a sliding window or the chunk of chunked attention;
    with `causal` the unmasked share of a causal mask."""
    a = layer.attention
    keys = float(seq)
    if a.window_kind == "sliding" and a.window:
        keys = min(keys, float(a.window))
    elif a.window_kind == "chunked" and a.window:
        keys = min(keys, float(a.window))
        if causal and a.causal:
            return (min(seq, a.window) + 1) / 2.0  # within a chunk, query i sees i+1 keys
    if causal and a.causal:
        keys = min((seq + 1) / 2.0, keys)  # query i sees keys 0..i: the mean over i is (T+1)/2
    return keys


def layer_linear_flops(m: Model, layer: LayerSpec, hardware: bool = False) -> float:
    """Forward FLOPs per token of one layer's linears.  Routed experts: the top-k a token visits (model FLOPs);
    with `hardware` and an implementation that runs every token through every expert (FFN.dispatch "all",
    transformers' Llama4TextMoe), all of them."""
    total = 0.0
    for lin in m.linears(layer):
        used = 1
        if lin.routed:
            used = lin.experts if (hardware and layer.ffn.dispatch == "all") else lin.top_k
        total += 2.0 * lin.in_features * lin.out_features * used
    return total


def layer_attention_flops(layer: LayerSpec, seq: int, causal: bool = False) -> float:
    """Q K^T (2 d_qk per key per head) and softmax(.) V (2 d_v), per query token."""
    a = layer.attention
    return 2.0 * a.heads * (a.head_dim + a.value_dim) * attention_keys(layer, seq, causal)


def forward_components(m: Model, seq: int, causal: bool = False, hardware: bool = False) -> tuple[float, float, float]:
    """(linear, attention, lm_head) forward FLOPs per token over all layers (and trained MTP modules)."""
    linear = attention = 0.0
    for g in m.groups:
        linear += g.count * layer_linear_flops(m, g.layer, hardware)
        attention += g.count * layer_attention_flops(g.layer, seq, causal)
    lm_head = 2.0 * m.hidden_size * m.vocab_size if m.head.lm_head else 0.0
    if m.mtp is not None and m.mtp.trained:
        # DeepSeek-V3 sec. 2.2: per depth a 2h -> h projection, one layer, and the shared output head
        h = m.hidden_size
        linear += m.mtp.depth * (2.0 * 2 * h * h + layer_linear_flops(m, m.mtp.layer, hardware))
        attention += m.mtp.depth * layer_attention_flops(m.mtp.layer, seq, causal)
        lm_head *= 1 + m.mtp.depth
    return linear, attention, lm_head


def flops_per_token(model: ModelSpec, seq: int, recompute: str = "none", causal: bool = False,
                    recompute_every: int = 1) -> FlopsPerToken:
    n = model.parameters.total
    if model.architecture is None:
        # A bare parameter count: the 6N rule is all there is (2N forward, every parameter in one matmul);
        # attention is unknown and left out. Full recompute redoes the 2N forward (Megatron eq. 4's 8N).
        fwd = 2.0 * model.parameters.active
        extra = fwd if recompute == "full" else 0.0
        return FlopsPerToken(seq=seq, forward_linear=fwd, forward_attention=0.0, forward_lm_head=0.0, forward=fwd,
                             model=3 * fwd, hardware=3 * fwd + extra, recompute=recompute, causal=causal,
                             six_n=6.0 * n, palm=6.0 * n, n_parameters=n, exact=False)
    a = model.architecture
    lin, att, head = forward_components(a, seq, causal)
    fwd = lin + att + head
    extra = 0.0
    if recompute == "full":
        # Megatron activation checkpointing recomputes each transformer layer's forward, not the LM head
        # (Narayanan et al. 2021, eq. 3: the 4x factor applies to the layers, the logit term is 6BshV).
        extra = lin + att
        if recompute_every > 1:  # --recompute-every N: every Nth layer runs again
            extra *= (a.n_layers // recompute_every) / a.n_layers
    elif recompute == "selective":
        # Korthikanti et al. 2022, sec. 4.2: recompute only the attention core (Q K^T, softmax, dropout, . V).
        extra = att
    elif recompute == "selective-op":
        # torchtitan's op-level SAC: every second mm of a block runs again (engines/torchtitan.py)
        from memplan.engines.torchtitan import recomputed_mm_share

        extra = lin * recomputed_mm_share(a.first, a)
    first = a.first.attention
    return FlopsPerToken(
        seq=seq, forward_linear=lin, forward_attention=att, forward_lm_head=head, forward=fwd,
        model=3 * fwd, hardware=3 * fwd + extra, recompute=recompute, causal=causal,
        six_n=6.0 * n, palm=palm_flops_per_token(n, a.n_layers, first.heads, first.head_dim, seq), n_parameters=n,
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


def korthikanti_model_flops_per_iteration(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Korthikanti et al. 2022, sec. 6.3: model FLOPs 72 B s l h^2 (1 + s/6h + V/12lh) (no recompute)."""
    return 72.0 * batch * seq * layers * hidden**2 * (1 + seq / (6 * hidden) + vocab / (12 * layers * hidden))


def utilisation(flops_per_token: float, tokens_per_second: float, n_chips: int, peak_tflops: float) -> float:
    """PaLM app. B: MFU = (model FLOPs/token x observed tokens/s) / (chips x peak FLOP/s). With hardware FLOPs: HFU."""
    return flops_per_token * tokens_per_second / (n_chips * peak_tflops * 1e12)
