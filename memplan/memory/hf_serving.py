"""Serving with transformers (`--engine hf`): one `generate()` process holding the weights, a DynamicCache of
`batch` sequences, the prefill's workspace, and the CUDA context.

Prefill workspace (no autograd: a tensor dies when its last user is done), for the tokens of one forward pass
(the batch's prompts, or one --prefill-chunk), as transformers' decoder forward holds them (measured with
memplan.measure.tracker, tests/test_inference.py): the larger over the layer kinds of the MLP stage (embedding
output, layer input, residual, normed input: 4h; gate/act, up and their product: 3f/tp per routed token) and the
attention stage (3h; the rotated q, the output and k before rotation: (2q+kv)/tp; MLA: q, the keys and values
kv_b_proj expands from the latent), in the compute dtype; eager attention peaks at the softmax (16-bit scores
plus softmax's fp32 input copy and output, the causal mask, repeat_kv's copies); and the logits of the last token
of each sequence (16-bit then upcast to fp32 for sampling).
"""
from __future__ import annotations

import math

from memplan.memory.kv_cache import hf_cache_bytes, hf_peak_tokens, layer_kinds
from memplan.memory.layout import stage_groups
from memplan.memory.quantized import model_dtype, stage_weights
from memplan.results.inference import KVLayerKind, ServedWeights
from memplan.results.memory import Component
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup
from memplan.spec.model import LayerSpec
from memplan.spec.training import DType


def kv_dtype(setup: InferenceSetup) -> DType:
    return setup.kv_dtype or model_dtype(setup)


def heaviest_stage(setup: InferenceSetup, context: int) -> tuple[int, ServedWeights, list[KVLayerKind]]:
    """The pipeline stage with the most weights + KV at `context`: the GPU that runs out first."""
    best = None
    for i, groups in enumerate(stage_groups(setup.model.arch, setup.layout)):
        w = stage_weights(setup, i, groups, "hf")
        kinds = layer_kinds((g for _, g in groups), setup.layout, kv_dtype(setup))
        load = w.total + hf_cache_bytes(kinds, min(setup.prompt_tokens, context), context, setup.sequences,
                                        setup.prefill_chunk)
        if best is None or load > best[0]:
            best = (load, i, w, kinds)
    assert best is not None
    return best[1], best[2], best[3]


def _layer_workspace(layer: LayerSpec, hidden: int, tp: int, attention: str) -> tuple[float, float, float]:
    """(attention stage, MLP stage) elements per token, and the eager scores' heads on this rank."""
    a, f = layer.attention, layer.ffn
    routed = f.top_k if f.moe else 1
    width = f.intermediate_size * routed + f.shared_intermediate_size
    mlp = 4 * hidden + (3 if f.gated else 2) * width / tp
    q, kv = a.q_size / tp, a.kv_size / tp
    if a.mla:
        # DeepseekV3Attention.expand_kv: kv_b_proj gives every head's nope-key and value; the key is rebuilt
        # with the shared rotary part (new_empty + copy_)
        attn = 3 * hidden + 2 * q + a.heads * a.value_dim / tp + (a.kv_lora_rank or 0) + a.qk_rope_head_dim
    else:
        attn = 3 * hidden + 2 * q + kv
    if attention == "eager":
        attn = 3 * hidden + q + (2 * q if kv < q else 0)
    return attn, mlp, math.ceil(a.heads / tp)


def prefill_workspace_bytes(setup: InferenceSetup, batch: int | None = None, context: int | None = None) -> int:
    """Peak of the prefill forward pass on one GPU (see the module docstring)."""
    m, p = setup.model.arch, setup.layout
    b = batch if batch is not None else setup.sequences
    ctx = context if context is not None else setup.context_tokens
    prompt = min(setup.prompt_tokens, ctx)
    tokens = b * prompt
    if setup.prefill_chunk:
        tokens = min(tokens, setup.prefill_chunk)
    cb = model_dtype(setup).bytes
    peak = 0.0
    for layer, _ in m.kinds():
        attn, mlp, heads = _layer_workspace(layer, m.hidden_size, p.tp, setup.attention)
        scores = 0.0
        if setup.attention == "eager":
            q_tokens = min(prompt, setup.prefill_chunk or prompt)
            seqs = max(1, tokens // q_tokens)
            keys = prompt  # eager computes every score and masks the ones outside a sliding window
            scores = seqs * q_tokens * keys * (heads * (cb + 8) + cb)
        peak = max(peak, tokens * attn * cb + scores, tokens * mlp * cb)
    logits = b * math.ceil(m.vocab_size / p.tp) * (cb + 4)
    return int(peak + logits)


def overhead_lines(setup: InferenceSetup, gpu: GPUSpec | None) -> list[Component]:
    """The training estimate's overheads that serving has too (memory/overheads.py): CUDA context, cuBLAS
    workspace, NCCL buffers of the TP/PP groups."""
    from memplan.memory.overheads import overhead_components
    from memplan.spec.setup import TrainingSetup

    return overhead_components(TrainingSetup(model=setup.model, layout=setup.layout), gpu)


def required_bytes(setup: InferenceSetup, gpu: GPUSpec | None, batch: int, context: int) -> int:
    _, w, kinds = heaviest_stage(setup, context)
    kv = hf_cache_bytes(kinds, min(setup.prompt_tokens, context), context, batch, setup.prefill_chunk)
    over = sum(c.bytes for c in overhead_lines(setup, gpu))
    return w.total + kv + prefill_workspace_bytes(setup, batch, context) + over


def cached_tokens(setup: InferenceSetup, kinds: list[KVLayerKind], context: int) -> int:
    prompt = min(setup.prompt_tokens, context)
    return max((hf_peak_tokens(k, prompt, context, setup.prefill_chunk) for k in kinds), default=0)
