"""A replica under load: continuous batching with chunked prefill, in steady state, and the queue in front of it.

The fluid model (each quantity a long-run mean; Little's law, N = X x T, ties them):
- Aggregated (vLLM V1 / SGLang with chunked prefill): every step decodes the running sequences and spends what is
  left of the token budget (max_num_batched_tokens - running) on waiting prompts.  At request rate X per replica a
  step of t seconds carries N = X x (O / g) x t decoding sequences (g tokens per decode step: 1, or the speculative
  yield) and X x P' x t prompt tokens (P' = prompt x (1 - prefix-cache hit rate)).  t = step(N, P'...) is solved as
  a fixed point.  The replica is stable when N <= min(max_num_seqs, the sequences its KV blocks hold at the
  context) and the prompts fit the budget left (X P' t <= budget - N); utilisation rho is the larger share.
- TPOT is the step time over g; a request's TPOT averages ~O steps, so its p90 is taken at the p90 of the running
  count (Poisson: N + 1.28 sqrt(N)).
- TTFT = half a step (the request arrives mid-step) + its prompt's chunks (ceil(P' / budget) steps carrying a full
  prefill budget) + the wait for the prefill budget, an M/D/1 queue at utilisation rho: mean wait rho/(2(1-rho))
  service, an exponential tail P(W > x) = rho exp(-x rho / W) for the p50/p90.
- Disaggregated (prefill and decode on separate replicas, the KV sent between them): prefill replicas run full
  chunks only (their token rate is budget / step(0 decode, budget)), decode replicas decode only; TTFT adds the
  KV transfer of the prompt over the link.
- Closed loop (a benchmark's --max-concurrency C): min(C, max_num_seqs, KV) requests run, the rest wait; each
  request costs one prefill step (or its chunks) and (O - 1) / g decode steps.

Not modelled: preemption and recomputation when the KV blocks run out mid-decode (vLLM recomputes; here the
admission is capped instead), the scheduler's per-request CPU cost, prefix-cache hit rates that vary by request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from memplan.perf.serving_time import StepCost, tokens_per_verify

Z90 = 1.2816  # standard normal 90th percentile
RHO_MAX = 0.95  # a replica busier than this is counted unstable: its queue (and the wait for a KV seat) explodes


@dataclass(frozen=True)
class Load:
    """Tokens per request: means (throughput) and p90s (tail latency), prefix-cache hit rate, speculation."""

    prompt: float
    output: float
    prompt_p90: float
    output_p90: float
    prefix_hit: float = 0.0

    @property
    def new_prompt(self) -> float:
        return max(1.0, self.prompt * (1.0 - self.prefix_hit))

    @property
    def new_prompt_p90(self) -> float:
        return max(1.0, self.prompt_p90 * (1.0 - self.prefix_hit))

    @property
    def context(self) -> float:
        """Mean tokens in view over a request's decode: its prompt plus half its output."""
        return self.prompt + self.output / 2.0


@dataclass(frozen=True)
class Spec:
    """Speculative decoding: k drafted tokens, acceptance rate, the draft's own step model (None: no draft cost,
    e.g. n-gram or MTP heads counted in the target)."""

    k: int = 0
    acceptance: float = 0.0
    draft: StepCost | None = None

    @property
    def yield_per_step(self) -> float:
        return tokens_per_verify(self.k, self.acceptance)


@dataclass
class ReplicaState:
    stable: bool
    limit: str            # what bounds the replica: "kv", "max_num_seqs", "prefill budget", "" when under
    utilization: float
    step_s: float
    running: float
    ttft_p50: float
    ttft_p90: float
    tpot_p50: float
    tpot_p90: float
    output_tps: float     # output tokens per second of this replica
    request_rate: float


def _decode_step(cost: StepCost, spec: Spec, n: float, context: float, prefill: float = 0.0,
                 prompt: float = 0.0) -> float:
    """One decode iteration: k draft steps (the draft's model) and one target step verifying k + 1 positions."""
    t = cost.step(n, context, prefill, prompt, verify=spec.k + 1)
    if spec.k and spec.draft is not None:
        t += spec.k * spec.draft.step(n, context)
    return t


def _quantile_wait(mean_wait: float, rho: float, q: float) -> float:
    """The q-quantile of an M/D/1-like wait: P(W > x) = rho exp(-x rho / mean_wait)."""
    if rho <= 0 or mean_wait <= 0 or rho <= 1.0 - q:
        return 0.0
    return mean_wait / rho * math.log(rho / (1.0 - q))


def _poisson_p90(mean: float) -> float:
    return mean + Z90 * math.sqrt(max(mean, 0.0))


def aggregated(cost: StepCost, load: Load, rate: float, max_seqs: int, budget: int, kv_seqs: float,
               spec: Spec = Spec()) -> ReplicaState:
    """A replica serving `rate` requests/s with prefill and decode in the same steps."""
    g = spec.yield_per_step
    steps_per_req = max(load.output - 1.0, 0.0) / g
    p = load.new_prompt
    cap = min(float(max_seqs), kv_seqs)
    t = _decode_step(cost, spec, 1.0, load.context)
    for _ in range(200):
        n = rate * steps_per_req * t
        pf = rate * p * t
        t_new = _decode_step(cost, spec, n, load.context, pf, p)
        if t_new > 1e4:
            break
        if abs(t_new - t) < 1e-9:
            t = t_new
            break
        t = 0.5 * (t + t_new) if t_new > 2 * t else t_new
    n = rate * steps_per_req * t
    pf = rate * p * t
    room = budget - min(n, budget - 1)
    rho_kv = n / cap if cap > 0 else math.inf
    rho_pf = pf / room if room > 0 else math.inf
    rho = max(rho_kv, rho_pf)
    limit = ("kv" if kv_seqs <= max_seqs else "max_num_seqs") if rho_kv >= rho_pf else "prefill budget"
    stable = rho < RHO_MAX and t < 1e3
    if not stable:
        return ReplicaState(False, limit, rho, t, n, math.inf, math.inf, math.inf, math.inf,
                            _saturated_output(cost, load, max_seqs, budget, kv_seqs, spec), rate)
    full = _decode_step(cost, spec, n, load.context, room, p)  # a step that carries a full prefill budget
    n90 = min(_poisson_p90(n), cap)
    t90 = _decode_step(cost, spec, n90, load.context, pf, p)
    ttft50 = _ttft(load.new_prompt, room, full, t, rho, 0.5)
    ttft90 = _ttft(load.new_prompt_p90, room, full, t, rho, 0.9)
    return ReplicaState(True, limit if rho > 0.8 else "", rho, t, n, ttft50, ttft90, t / g, t90 / g,
                        rate * load.output, rate)


def _ttft(prompt: float, room: float, full_step: float, step: float, rho: float, q: float) -> float:
    chunks = math.ceil(prompt / max(room, 1.0))
    service = chunks * (full_step if chunks > 1 else step + (full_step - step) * min(prompt / room, 1.0))
    mean_wait = rho / (2.0 * (1.0 - rho)) * service
    return step / 2.0 + service + _quantile_wait(mean_wait, rho, q)


def _saturated_output(cost: StepCost, load: Load, max_seqs: int, budget: int, kv_seqs: float,
                      spec: Spec) -> float:
    """Output tokens/s of a replica that is always full (what a saturating benchmark measures)."""
    return closed_loop(cost, load, 10**9, max_seqs, budget, kv_seqs, spec).output_tps


def closed_loop(cost: StepCost, load: Load, concurrency: int, max_seqs: int, budget: int, kv_seqs: float,
                spec: Spec = Spec()) -> ReplicaState:
    """A benchmark's fixed concurrency (vllm bench serve / sglang.bench_serving --max-concurrency C, request rate
    inf): every finished request is replaced at once."""
    g = spec.yield_per_step
    running = max(1.0, min(float(concurrency), float(max_seqs), math.floor(kv_seqs) if kv_seqs >= 1 else 1.0))
    p = load.new_prompt
    dec_steps = max(load.output - 1.0, 0.0) / g
    t = _decode_step(cost, spec, running, load.context)
    for _ in range(200):
        room = max(budget - running, 1.0)
        pf_steps = max(1.0, math.ceil(p / room))
        # of the running requests, the share in prefill: pf_steps of (pf_steps + dec_steps) steps
        share = pf_steps / (pf_steps + dec_steps)
        n_dec = running * (1 - share)
        x = running / ((pf_steps + dec_steps) * t)        # requests per second
        pf = min(x * p * t, budget - n_dec)
        t_new = _decode_step(cost, spec, n_dec, load.context, pf, p)
        if abs(t_new - t) < 1e-9:
            break
        t = t_new
    x = running / ((pf_steps + dec_steps) * t)
    # the prefill budget can bound the rate instead: prompts per step <= room / P'
    x = min(x, (budget - n_dec) / (p * t)) if p > 0 else x
    # the first token waits for the steps that carry the prompt's chunks, each a full (prefill-heavy) step
    full = _decode_step(cost, spec, n_dec, load.context, min(p, budget - n_dec), p)
    ttft = full * pf_steps + t / 2.0
    if concurrency > running:  # the rest wait for a seat: (C - running) requests ahead, served at x per second
        ttft += (concurrency - running) / x
    return ReplicaState(True, "concurrency", running / max(1.0, min(float(max_seqs), kv_seqs)), t, running,
                        ttft, ttft, t / g, t / g, x * load.output, x)


def disaggregated_prefill(cost: StepCost, load: Load, rate: float, budget: int, transfer_s: float
                          ) -> tuple[float, float, float, float]:
    """Prefill replicas' utilisation and TTFT (p50, p90) at `rate` requests/s each; returns (rho, step of a full
    budget, ttft50, ttft90)."""
    p = load.new_prompt
    full = cost.step(0, 0, float(budget), p)
    capacity = budget / full  # prompt tokens per second
    rho = rate * p / capacity
    if rho >= 1.0:
        return rho, full, math.inf, math.inf

    def service(prompt: float) -> float:
        chunks = math.ceil(prompt / budget)
        return (chunks - 1) * full + cost.step(0, 0, prompt - (chunks - 1) * budget, prompt)

    s50 = service(load.new_prompt)
    mean_wait = rho / (2.0 * (1.0 - rho)) * s50
    return (rho, full, s50 + _quantile_wait(mean_wait, rho, 0.5) + transfer_s,
            service(load.new_prompt_p90) + _quantile_wait(mean_wait, rho, 0.9) + transfer_s)


def disaggregated_decode(cost: StepCost, load: Load, rate: float, max_seqs: int, kv_seqs: float,
                         spec: Spec = Spec()) -> ReplicaState:
    """A decode-only replica receiving `rate` requests/s (their KV arrives from the prefill replicas)."""
    g = spec.yield_per_step
    steps_per_req = max(load.output - 1.0, 0.0) / g
    cap = min(float(max_seqs), kv_seqs)
    t = _decode_step(cost, spec, 1.0, load.context)
    for _ in range(200):
        t_new = _decode_step(cost, spec, rate * steps_per_req * t, load.context)
        if t_new > 1e4 or abs(t_new - t) < 1e-9:
            t = t_new
            break
        t = 0.5 * (t + t_new) if t_new > 2 * t else t_new
    n = rate * steps_per_req * t
    rho = n / cap if cap > 0 else math.inf
    limit = "kv" if kv_seqs <= max_seqs else "max_num_seqs"
    if rho >= RHO_MAX or t > 1e3:
        return ReplicaState(False, limit, rho, t, n, math.inf, math.inf, math.inf, math.inf, 0.0, rate)
    t90 = _decode_step(cost, spec, min(_poisson_p90(n), cap), load.context)
    return ReplicaState(True, limit if rho > 0.8 else "", rho, t, n, 0.0, 0.0, t / g, t90 / g, rate * load.output,
                        rate)
