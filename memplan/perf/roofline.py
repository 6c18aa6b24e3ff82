"""Serving throughput as a roofline (Williams, Waterman & Patterson 2009): a step takes at least
max(bytes moved / memory bandwidth, FLOPs / peak FLOP/s).

- Decode (one new token per sequence per step) reads every local weight once and every cached key and value of
  every sequence once, and does ~2 FLOPs per active parameter per token: at the batch sizes served that is far
  below the machine balance (peak FLOP/s / bandwidth, ~300 FLOP/B on an H100), so decode is bandwidth bound
  (Pope et al. 2022, "Efficiently Scaling Transformer Inference", sec. 2.1 and 3.1).
- Prefill processes the whole prompt at once: FLOPs grow with tokens while weight bytes do not, so it is compute
  bound once batch x prompt passes the machine balance.
FLOPs per token are memplan.perf.flops.forward_components (2 FLOPs per multiply-add; attention Q·K^T and
scores·V over the keys in view, a sliding window capping them).  With tensor parallelism each GPU reads and
computes its 1/tp share concurrently, then the layer's two all-reduces of the hidden states (Megatron-LM,
Shoeybi et al. 2019 fig. 4: after attention and after the MLP) run on the critical path: ring all-reduce time on
the GPU's NVLink/PCIe profile (memplan.perf.comm), bandwidth plus latency per ring step.  Pipeline stages run one
after another for a given token (no interleaving of micro-batches assumed).  Still upper bounds on speed: peak
bandwidth and FLOP/s, no kernel launch gaps, no scheduler.
"""
from __future__ import annotations

import math

from memplan.perf.comm import all_reduce_bytes, seconds
from memplan.perf.flops import forward_components
from memplan.results.inference import Roofline
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup
from memplan.spec.training import DType


def expected_expert_fraction(n_experts: int, top_k: int, tokens: int) -> float:
    """Share of a MoE layer's experts a decode step touches: each of `tokens` tokens picks top_k of n experts;
    under uniform routing an expert is missed by all with probability (1 - k/n)^tokens."""
    if not n_experts:
        return 1.0
    return 1.0 - (1.0 - top_k / n_experts) ** tokens


def _peak(gpu: GPUSpec, dtype: DType) -> tuple[float, str]:
    for key in (dtype.value, "bf16", "fp16"):
        if key in gpu.peak_tflops:
            return gpu.peak_tflops[key], key
    raise ValueError(f"{gpu.name} lists no peak for {dtype.value}")


def serving_roofline(setup: InferenceSetup, gpu: GPUSpec, weight_bytes: int, expert_weight_bytes: int,
                     kv_bytes: int) -> Roofline:
    """weight_bytes: this GPU's stored weights (expert_weight_bytes of them in MoE experts); kv_bytes: its KV cache
    with every sequence at the full context (the slowest decode step)."""
    a = setup.model.arch
    p = setup.layout
    bw = gpu.memory_bandwidth_gbps * 1e9
    compute = setup.weights_dtype if setup.weights_dtype == DType.fp8 else setup.compute_dtype
    peak_tflops, peak_key = _peak(gpu, compute)
    peak = peak_tflops * 1e12
    share = p.tp * p.pp  # one replica's FLOPs spread over its GPUs
    b = setup.batch
    notes = []

    layers = math.ceil(a.n_layers / p.pp)
    link = None
    if p.tp > 1:
        if gpu.interconnect:
            from memplan.catalog import get_interconnect

            link = get_interconnect(gpu.interconnect)
        else:
            notes.append(f"{gpu.name} names no interconnect: tensor-parallel all-reduces not timed")

    def tp_seconds(tokens: int) -> float:
        """The 2 all-reduces per layer of `tokens` hidden states, one stage's layers."""
        if link is None:
            return 0.0
        one = all_reduce_bytes(tokens * a.hidden_size * setup.compute_dtype.bytes, p.tp)
        return seconds(2 * layers * one, link, ring_steps=2 * (p.tp - 1), calls=2 * layers)

    # decode: the last step, every sequence at the full context
    lin, att, head = forward_components(a, setup.context, causal=False)
    decode_flops = b * (lin + att + head) / share
    touched = expected_expert_fraction(a.n_experts, a.experts_per_token, b)
    decode_bytes = int(weight_bytes - expert_weight_bytes * (1 - touched) + kv_bytes)
    t_mem, t_flop = decode_bytes / bw, decode_flops / peak
    decode_comm = tp_seconds(b)
    stage = max(t_mem, t_flop) + decode_comm
    step = p.pp * stage
    replicas = p.dp
    aggregate = replicas * b / step
    if a.n_experts:
        notes.append(f"MoE: a decode step of {b} token(s) reads {touched:.0%} of the experts (uniform routing)")

    # prefill: every prompt of the batch, in passes of `prefill_chunk` tokens if chunked
    prompt = setup.prompt_tokens
    plin, patt, phead = forward_components(a, prompt, causal=True)
    # logits only for the last prompt token of each sequence (generate's logits_to_keep=1, vLLM likewise)
    prefill_flops = (b * prompt * (plin + patt) + b * phead) / share
    tokens = b * prompt
    passes = math.ceil(tokens / setup.prefill_chunk) if setup.prefill_chunk else 1
    p_mem = passes * (weight_bytes / bw)
    p_flop = prefill_flops / peak
    prefill_comm = tp_seconds(tokens)
    prefill = p.pp * (max(p_mem, p_flop) + prefill_comm)
    return Roofline(
        gpu=gpu.name, memory_bandwidth_gbps=gpu.memory_bandwidth_gbps, peak_tflops=peak_tflops,
        compute_dtype=peak_key, decode_bytes_per_step=decode_bytes, decode_flops_per_step=decode_flops,
        decode_step_seconds=step, decode_bound="memory" if t_mem >= t_flop else "compute",
        decode_comm_seconds=p.pp * decode_comm, prefill_comm_seconds=p.pp * prefill_comm,
        decode_tokens_per_second=aggregate, decode_tokens_per_second_per_gpu=aggregate / p.gpus,
        decode_tokens_per_second_per_sequence=1.0 / step, prefill_flops=prefill_flops, prefill_seconds=prefill,
        prefill_bound="compute" if p_flop >= p_mem else "memory",
        prefill_tokens_per_second_per_gpu=replicas * tokens / prefill / p.gpus,
        time_to_first_token_seconds=prefill, notes=notes)
