"""Serving throughput as a roofline (Williams, Waterman & Patterson 2009): a step takes at least
max(bytes moved / memory bandwidth, FLOPs / peak FLOP/s), with the memory figures of the estimate itself.

- Decode (one new token per sequence per step) reads every local weight once (the served format's bytes from
  memory/quantized.py; of a MoE layer only the experts the batch touches) and every cached key and value of every
  sequence in view (per layer kind: full and MLA layers the whole context, sliding layers their window, chunked
  layers at most their chunk; memory/kv_cache.py), and does ~2 FLOPs per active weight per token plus the
  attention products: at the batch sizes served that is far below the machine balance, so decode is bandwidth
  bound (Pope et al. 2022, "Efficiently Scaling Transformer Inference", sec. 2.1 and 3.1).
- Prefill processes the prompts: FLOPs grow with tokens while weight bytes do not, so it is compute bound once a
  pass holds enough tokens.  vLLM chunks it by max_num_batched_tokens (chunked prefill is always on in V1),
  transformers by --prefill-chunk (else one pass); each pass re-reads the weights.
FLOPs walk the layer groups: 2 per multiply-add of every linear (routed experts: top-k of them), attention
Q.K^T and scores.V over the keys in view (causal prefill: (P+1)/2 on average, capped by a window), the LM head
for the last position of each sequence.  With tensor parallelism each GPU reads and computes its 1/tp share,
then each layer's two all-reduces of the hidden states (Megatron-LM, Shoeybi et al. 2019 fig. 4: after attention
and after the MLP) run on the critical path: ring all-reduce time on the GPU's NVLink/PCIe profile
(memplan.perf.comm), bandwidth plus latency per ring step.  Pipeline stages run one after another for a token.
Upper bounds: peak bandwidth and FLOP/s, no kernel launch gaps, no scheduler.
"""
from __future__ import annotations

import math

from memplan.memory.kv_cache import kind_of
from memplan.perf.comm import all_reduce_bytes, seconds
from memplan.results.inference import KVLayerKind, Roofline, ServedWeights
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup
from memplan.spec.model import Model


def expected_expert_fraction(n_experts: int, top_k: int, tokens: int) -> float:
    """Share of a MoE layer's experts a decode step touches: each of `tokens` tokens picks top_k of n experts;
    under uniform routing an expert is missed by all with probability (1 - k/n)^tokens."""
    if not n_experts:
        return 1.0
    return 1.0 - (1.0 - top_k / n_experts) ** tokens


def _peak(gpu: GPUSpec, dtype: str) -> tuple[float, str]:
    for key in (dtype, "bf16", "fp16"):
        if key in gpu.peak_tflops:
            return gpu.peak_tflops[key], key
    raise ValueError(f"{gpu.name} lists no peak for {dtype}")


def keys_in_view(window: int | None, kind: str, context: int, causal_mean: bool) -> float:
    """Keys one query attends: the context (mean (T+1)/2 over a causal prefill), capped by a sliding window or a
    chunk (a chunked query sees on average half its chunk)."""
    keys = (context + 1) / 2.0 if causal_mean else float(context)
    if kind in ("sliding", "chunked") and window:
        cap = float(window) if kind == "sliding" or not causal_mean else (window + 1) / 2.0
        return min(keys, cap)
    return keys


def forward_flops_per_token(model: Model, context: int, causal_mean: bool) -> tuple[float, float, float]:
    """(linears, attention, LM head) forward FLOPs of one token through the whole model."""
    linear = attention = 0.0
    for g in model.groups:
        a = g.layer.attention
        lin = sum(2.0 * x.in_features * x.out_features * (x.top_k if x.routed else 1)
                  for x in model.linears(g.layer))
        keys = keys_in_view(a.window, kind_of(a), context, causal_mean)
        linear += g.count * lin
        attention += g.count * 2.0 * a.heads * (a.head_dim + a.value_dim) * keys
    head = 2.0 * model.hidden_size * model.vocab_size if model.head.lm_head else 0.0
    return linear, attention, head


def decode_kv_bytes(kinds: list[KVLayerKind], batch: int, context: int) -> int:
    """Cached keys and values one decode step reads on this GPU."""
    total = 0
    for k in kinds:
        toks = context if k.window is None else min(context, k.window)
        total += k.bytes_per_token * toks
    return batch * total


def serving_roofline(setup: InferenceSetup, gpu: GPUSpec, weights: ServedWeights, kinds: list[KVLayerKind],
                     batch: int, context: int, prefill_chunk: int | None = None) -> Roofline:
    """weights / kinds: this GPU's (most loaded stage); batch sequences decoded together at `context` tokens
    (the slowest decode step); prefill passes of `prefill_chunk` tokens (vLLM: max_num_batched_tokens) or
    setup.prefill_chunk."""
    model, p = setup.model.arch, setup.layout
    bw = gpu.memory_bandwidth_gbps * 1e9
    # FP8 checkpoints run FP8 GEMMs (W8A8); weight-only formats dequantise to the 16-bit dtype
    compute = "fp8" if weights.quantized_dtype == "fp8" else weights.dtype
    peak_tflops, peak_key = _peak(gpu, compute)
    peak = peak_tflops * 1e12
    share = p.tp * p.pp
    notes: list[str] = []
    layers = math.ceil(model.n_layers / p.pp)
    link = None
    if p.tp > 1:
        if gpu.interconnect:
            from memplan.catalog import get_interconnect

            link = get_interconnect(gpu.interconnect)
        else:
            notes.append(f"{gpu.name} names no interconnect: tensor-parallel all-reduces not timed")
    act_bytes = 2 if weights.dtype in ("bf16", "fp16") else 4

    def tp_seconds(tokens: int) -> float:
        if link is None:
            return 0.0
        one = all_reduce_bytes(tokens * model.hidden_size * act_bytes, p.tp)
        return seconds(2 * layers * one, link, ring_steps=2 * (p.tp - 1), calls=2 * layers)

    # decode: the last step, every sequence at the full context
    lin, att, head = forward_flops_per_token(model, context, causal_mean=False)
    decode_flops = batch * (lin + att + head) / share
    moe = next((g.layer.ffn for g in model.groups if g.layer.ffn.moe), None)
    touched = expected_expert_fraction(moe.experts, moe.top_k, batch) if moe else 1.0
    kv_read = decode_kv_bytes(kinds, batch, context)
    decode_bytes = int(weights.total - weights.experts * (1 - touched) + kv_read)
    t_mem, t_flop = decode_bytes / bw, decode_flops / peak
    decode_comm = tp_seconds(batch)
    step = p.pp * (max(t_mem, t_flop) + decode_comm)
    replicas = p.dp
    aggregate = replicas * batch / step
    if moe:
        notes.append(f"MoE: a decode step of {batch} token(s) reads {touched:.0%} of the experts (uniform routing)")

    # prefill: every prompt of the batch, in passes of the chunk
    prompt = min(setup.prompt_tokens, context)
    plin, patt, phead = forward_flops_per_token(model, prompt, causal_mean=True)
    tokens = batch * prompt
    prefill_flops = (tokens * (plin + patt) + batch * phead) / share
    chunk = prefill_chunk or setup.prefill_chunk
    passes = math.ceil(tokens / chunk) if chunk else 1
    p_mem = passes * (weights.total / bw)
    p_flop = prefill_flops / peak
    prefill_comm = tp_seconds(tokens)
    prefill = p.pp * (max(p_mem, p_flop) + prefill_comm)
    return Roofline(
        gpu=gpu.name, memory_bandwidth_gbps=gpu.memory_bandwidth_gbps, peak_tflops=peak_tflops,
        compute_dtype=peak_key, batch=batch, decode_bytes_per_step=decode_bytes, decode_kv_bytes_per_step=kv_read,
        decode_flops_per_step=decode_flops, decode_step_seconds=step,
        decode_bound="memory" if t_mem >= t_flop else "compute", decode_comm_seconds=p.pp * decode_comm,
        prefill_comm_seconds=p.pp * prefill_comm, decode_tokens_per_second=aggregate,
        decode_tokens_per_second_per_gpu=aggregate / p.gpus, decode_tokens_per_second_per_sequence=1.0 / step,
        prefill_flops=prefill_flops, prefill_passes=passes, prefill_seconds=prefill,
        prefill_bound="compute" if p_flop >= p_mem else "memory",
        prefill_tokens_per_second_per_gpu=replicas * tokens / prefill / p.gpus,
        time_to_first_token_seconds=prefill, notes=notes)
