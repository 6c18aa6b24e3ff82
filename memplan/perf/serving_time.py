"""Seconds of one engine step of a continuous-batching server (vLLM, SGLang) from the serving roofline.

A step runs `decode` sequences one token each (every one reading its cached keys and values) and `prefill` prompt
tokens (chunked prefill: at most max_num_batched_tokens tokens in all), in one forward pass:

    step = max(bytes / (bandwidth x eff_bw), FLOPs / (peak x eff_flops)) + TP all-reduces + per-step overhead

with the bytes and FLOPs of perf/roofline.py (weights read once per step, of a MoE layer the experts the step's
tokens touch; the KV of every decoding sequence; 2 FLOPs per active weight per token, the attention products over
the keys in view, the LM head for every sequence that samples).  The efficiencies and the overhead are what the
roofline does not know: achieved HBM bandwidth of decode's GEMV and attention kernels, achieved tensor-core share of
prefill's GEMMs, and the CPU side of a step (scheduler, sampling, detokenisation, launch gaps) that CUDA graphs
shorten but do not remove.  Their values (`Efficiency`) are fitted on a stated subset of published benchmarks
(tests/test_capacity.py) and printed with every answer.

Speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding", eq. 1):
the draft proposes k tokens (k draft decode steps), the target verifies k + 1 positions per sequence in one step;
with acceptance rate a each verify step yields (1 - a^(k+1)) / (1 - a) tokens on average.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from memplan.perf.comm import all_reduce_bytes, seconds
from memplan.perf.roofline import _peak, expected_expert_fraction, keys_in_view
from memplan.memory.kv_cache import kind_of
from memplan.results.inference import KVLayerKind, ServedWeights
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup


@dataclass(frozen=True)
class Efficiency:
    """What the roofline cannot know, as shares of the GPU profile's peaks (fitted: tests/test_capacity.py)."""

    bandwidth: float = 0.85  # achieved HBM bandwidth in decode (weights + KV reads)
    compute: float = 0.60    # achieved dense tensor-core share in prefill GEMMs and attention
    overhead_s: float = 0.001  # per engine step: scheduling, sampling, launch gaps (CUDA graphs on)
    serial: float = 1.0  # share of the shorter of (bytes time, FLOPs time) not hidden under the longer

    def describe(self) -> str:
        return (f"achieved {self.bandwidth:.0%} of peak memory bandwidth, {self.compute:.0%} of dense peak FLOP/s, "
                f"{self.overhead_s * 1e3:.1f} ms of CPU/scheduler overhead per engine step; "
                f"{self.serial:.0%} of the shorter of memory and compute time not overlapped with the longer")


@dataclass
class StepCost:
    """One replica's forward step, per GPU of its (TP) group: the terms that do not change with the batch are
    computed once (weights, linear FLOPs per token, attention FLOPs per key, all-reduce bytes per token)."""

    gpu: GPUSpec
    tp: int
    pp: int
    weight_bytes: float
    expert_bytes: float
    experts: int
    top_k: int
    kv: list[tuple[int, int | None]]  # (bytes per token on this GPU, window) per layer kind
    linear_flops: float               # per token, whole model, before the TP split
    head_flops: float                 # per sampled token
    attention: list[tuple[float, str, int | None]]  # (FLOPs per key per token, kind, window) per group
    act_bytes: int
    layers: int
    peak: float
    peak_key: str
    eff: Efficiency = field(default_factory=Efficiency)
    link: object = None

    @property
    def share(self) -> int:
        return self.tp * self.pp

    def kv_bytes_per_token(self) -> int:
        return sum(b for b, _ in self.kv)

    def _attention_flops(self, context: float, causal: bool) -> float:
        return sum(c * keys_in_view(w, kind, int(context), causal) for c, kind, w in self.attention)

    def _kv_read(self, context: float) -> float:
        return sum(b * (context if w is None else min(context, w)) for b, w in self.kv)

    def _comm(self, tokens: float) -> float:
        if self.link is None or self.tp <= 1 or tokens <= 0:
            return 0.0
        one = all_reduce_bytes(tokens * self.act_bytes * self.hidden, self.tp)
        return seconds(2 * self.layers * one, self.link, ring_steps=2 * (self.tp - 1), calls=2 * self.layers)

    hidden: int = 0

    def step(self, decode: float, context: float, prefill: float = 0.0, prompt: float = 0.0,
             verify: int = 1) -> float:
        """Seconds of one step: `decode` sequences at a mean `context` (each verifying `verify` positions:
        1 without speculation), `prefill` prompt tokens of prompts of `prompt` tokens (their causal mean keys)."""
        dec_tokens = decode * verify
        tokens = dec_tokens + prefill
        if tokens <= 0:
            return 0.0
        touched = expected_expert_fraction(self.experts, self.top_k, max(1, int(round(tokens)))) \
            if self.experts else 1.0
        nbytes = self.weight_bytes - self.expert_bytes * (1 - touched)
        nbytes += decode * self._kv_read(context) + prefill * self.kv_bytes_per_token()
        flops = tokens * self.linear_flops + dec_tokens * self._attention_flops(context, causal=False)
        if prefill:
            flops += prefill * self._attention_flops(max(prompt, 1.0), causal=True)
        sampled = dec_tokens + (prefill / prompt if prompt else 0.0)
        flops += sampled * self.head_flops
        flops /= self.share
        bw = self.gpu.memory_bandwidth_gbps * 1e9 * self.eff.bandwidth
        t_mem, t_flop = nbytes / bw, flops / (self.peak * self.eff.compute)
        t = max(t_mem, t_flop) + self.eff.serial * min(t_mem, t_flop)
        return self.pp * (t + self._comm(tokens)) + self.eff.overhead_s

    def describe(self) -> str:
        return (f"{self.weight_bytes / 2**30:.2f} GiB of weights per GPU read every step, "
                f"{self.kv_bytes_per_token():,} B of KV per token per GPU, {self.linear_flops / 1e9:.2f} GFLOP per "
                f"token; {self.gpu.name}: {self.gpu.memory_bandwidth_gbps:,.0f} GB/s, {self.peak / 1e12:,.0f} "
                f"TFLOP/s dense {self.peak_key}")


def step_cost(setup: InferenceSetup, gpu: GPUSpec, weights: ServedWeights, kinds: list[KVLayerKind],
              eff: Efficiency | None = None) -> StepCost:
    """The step model of one replica of `setup` (its layout's TP/PP) from the estimate's weights and KV kinds."""
    model, p = setup.model.arch, setup.layout
    compute = "fp8" if weights.quantized_dtype == "fp8" else weights.dtype
    peak_tflops, key = _peak(gpu, compute)
    linear = 0.0
    attention = []
    for g in model.groups:
        a = g.layer.attention
        linear += g.count * sum(2.0 * x.in_features * x.out_features * (x.top_k if x.routed else 1)
                                for x in model.linears(g.layer))
        kind = kind_of(a)
        attention.append((g.count * 2.0 * a.heads * (a.head_dim + a.value_dim), kind,
                          a.window if kind in ("sliding", "chunked") else None))
    head = 2.0 * model.hidden_size * model.vocab_size if model.head.lm_head else 0.0
    moe = next((g.layer.ffn for g in model.groups if g.layer.ffn.moe), None)
    link = None
    if p.tp > 1 and gpu.interconnect:
        from memplan.catalog import get_interconnect

        link = get_interconnect(gpu.interconnect)
    return StepCost(gpu=gpu, tp=p.tp, pp=p.pp, weight_bytes=float(weights.total), expert_bytes=float(weights.experts),
                    experts=moe.experts if moe else 0, top_k=moe.top_k if moe else 0,
                    kv=[(k.bytes_per_token, k.window) for k in kinds], linear_flops=linear, head_flops=head,
                    attention=attention, act_bytes=2 if weights.dtype in ("bf16", "fp16") else 4,
                    layers=math.ceil(model.n_layers / p.pp), peak=peak_tflops * 1e12, peak_key=key,
                    eff=eff or Efficiency(), link=link, hidden=model.hidden_size)


def tokens_per_verify(k: int, acceptance: float) -> float:
    """Expected tokens one verify step yields with k drafted tokens at acceptance rate a (Leviathan et al. eq. 1):
    (1 - a^(k+1)) / (1 - a); k + 1 when every draft is accepted."""
    if k <= 0:
        return 1.0
    if acceptance >= 1.0:
        return float(k + 1)
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)
