"""Capacity planning: how many GPUs, with which engine settings, serve a request rate under TTFT/TPOT targets.

Composes the floors below: for every engine setting searched (TP x max_num_seqs x max_num_batched_tokens) the
memory side says whether the engine starts and how many sequences of the mean context its KV cache holds
(answers/inference.py: vLLM's startup and blocks, or SGLang's token pool); perf/serving_time.py times an engine
step from the roofline; perf/batching.py puts a replica under load (continuous batching, the queue for the prefill
budget).  Then replicas: aggregated (prefill and decode in the same steps) or disaggregated (prefill replicas and
decode replicas, the P:D ratio), the fewest GPUs that meet the targets, and the Pareto table of output tokens/s per
GPU against latency.  "No layout meets the targets" is a result with the closest layout, not an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from memplan.answers.capacity_load import build_load
from memplan.errors import InputError, MemplanError
from memplan.perf.batching import (Load, ReplicaState, Spec, aggregated, closed_loop, disaggregated_decode,
                                   disaggregated_prefill)
from memplan.perf.serving_time import Efficiency, StepCost, step_cost, tokens_per_verify
from memplan.results.capacity import CapacityLayout, CapacityLoad, CapacityPlan, CapacityTargets, Speculation
from memplan.spec.hardware import GPUSpec

TP_CHOICES = (1, 2, 4, 8)
SEQS_CHOICES = (16, 32, 64, 128, 256, 512, 1024)
CHUNK_CHOICES = (1024, 2048, 4096, 8192, 16384)
REPLICA_STEPS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)  # Pareto points: multiples of the fewest stable replicas
MAX_REPLICAS = 100_000
PARETO_ROWS = 15


@dataclass
class Engine:
    """One replica's engine settings and what memory and time say of them."""

    tp: int
    seqs: int
    chunk: int
    cost: StepCost
    kv_seqs: float
    kv_bytes_per_token: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Ask:
    model: str
    gpu: GPUSpec
    engine: str
    load: CapacityLoad
    targets: CapacityTargets
    serving_kw: dict
    max_model_len: int
    spec: Spec
    speculation: Speculation | None
    max_gpus: int
    eff: Efficiency


# ---- the memory side: does it start, how many sequences its KV holds --------------------------------------
def _engine(ask: Ask, tp: int, seqs: int | None, chunk: int | None) -> Engine | str:
    """seqs/chunk None: the engine's own defaults for this GPU (what a benchmark ran), read back from it."""
    from memplan.answers.inference import estimate_inference
    from memplan.setups import serving_setup

    L = ask.load
    prompt, output = max(1, round(L.prompt_mean)), max(1, round(L.output_mean))
    try:
        setup = serving_setup(ask.model, engine=ask.engine, tp=tp, gpus=tp, prompt=prompt, output=output,
                              max_model_len=ask.max_model_len, max_num_seqs=seqs, max_num_batched_tokens=chunk,
                              **ask.serving_kw)
        est = estimate_inference(setup, ask.gpu, max_batch=True)
    except MemplanError as exc:
        return f"TP{tp}: {exc}"
    ctx = L.prompt_mean + L.output_mean
    if ask.engine == "sglang":
        st = est.sglang
        if not st.starts:
            return f"TP{tp}, max_num_seqs {seqs}, chunk {chunk}: SGLang does not start ({st.refusal or 'no KV'})"
        pool_tokens = float(st.max_total_num_tokens)
        seqs, chunk = st.max_running_requests, st.chunked_prefill_size
    else:
        st = est.vllm
        if not st.starts:
            return f"TP{tp}, max_num_seqs {seqs}, chunk {chunk}: vLLM does not start ({st.refusal})"
        pool_tokens = float(st.num_gpu_blocks * st.block_size)
        seqs, chunk = st.max_num_seqs, st.max_num_batched_tokens
    bpt = est.kv_bytes_per_token
    notes = []
    if ask.spec.draft is not None and ask.speculation is not None:
        d = ask.speculation
        # the draft's weights come out of the KV pool, its KV rides along every token (same block table)
        pool_bytes = pool_tokens * bpt - d.draft_weights_per_gpu / tp
        pool_tokens = max(pool_bytes, 0.0) / (bpt + d.draft_kv_bytes_per_token / tp)
    kv_seqs = pool_tokens / ctx
    if ask.engine != "sglang" and ask.spec.draft is None:
        kv_seqs = est.vllm.concurrency_at_context or kv_seqs  # vLLM's own count: whole blocks per request
    cost = step_cost(setup, ask.gpu, est.weights, est.kv_layers, ask.eff)
    return Engine(tp, seqs, chunk, cost, kv_seqs, bpt, notes)


# ---- one layout row ---------------------------------------------------------------------------------------------
def _pick(ask: Ask, state: ReplicaState, which: str) -> float:
    return (state.ttft_p90 if which == "ttft" else state.tpot_p90) if ask.targets.percentile == "p90" else \
        (state.ttft_p50 if which == "ttft" else state.tpot_p50)


def _meets(ask: Ask, ttft: float, tpot: float) -> bool:
    t = ask.targets
    return (math.isfinite(ttft) and math.isfinite(tpot) and (t.ttft_ms is None or ttft * 1e3 <= t.ttft_ms)
            and (t.tpot_ms is None or tpot * 1e3 <= t.tpot_ms))


def _row(ask: Ask, e: Engine, replicas: int, s: ReplicaState, mode: str = "aggregated", prefill: tuple | None = None
         ) -> CapacityLayout:
    gpus = replicas * e.tp
    ttft50, ttft90 = s.ttft_p50, s.ttft_p90
    extra = {}
    if prefill is not None:
        pe, n_p, pt50, pt90 = prefill
        gpus += n_p * pe.tp
        ttft50, ttft90 = pt50, pt90
        extra = dict(prefill_tp=pe.tp, prefill_replicas=n_p, prefill_max_num_batched_tokens=pe.chunk,
                     pd_ratio=f"{n_p * pe.tp}:{replicas * e.tp}")
    out = s.output_tps * replicas if s.stable else 0.0
    ttft = ttft90 if ask.targets.percentile == "p90" else ttft50
    tpot = s.tpot_p90 if ask.targets.percentile == "p90" else s.tpot_p50
    return CapacityLayout(
        mode=mode, tp=e.tp, max_num_seqs=e.seqs, max_num_batched_tokens=e.chunk, replicas=replicas, gpus=gpus,
        kv_sequences=round(e.kv_seqs, 1), running=round(s.running, 2), step_ms=s.step_s * 1e3,
        ttft_ms_p50=ttft50 * 1e3, ttft_ms_p90=ttft90 * 1e3, tpot_ms_p50=s.tpot_p50 * 1e3,
        tpot_ms_p90=s.tpot_p90 * 1e3, utilization=round(s.utilization, 3), limit=s.limit,
        output_tokens_per_s=out, output_tokens_per_s_per_gpu=out / gpus, meets=s.stable and _meets(ask, ttft, tpot),
        **extra)


# ---- aggregated replicas ------------------------------------------------------------------------------------------
def _agg_state(ask: Ask, e: Engine, replicas: int) -> ReplicaState:
    return aggregated(e.cost, _load(ask), ask.load.rate / replicas, e.seqs, e.chunk, e.kv_seqs, _spec(ask, e))


def _fewest_stable(stable, hi_limit: int) -> int | None:
    """The fewest replicas n (1..hi_limit) with stable(n), stability being monotone in n."""
    hi = 1
    while not stable(hi):
        if hi >= hi_limit:
            return None
        hi = min(hi * 2, hi_limit)
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if stable(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _aggregated_rows(ask: Ask, e: Engine) -> list[CapacityLayout]:
    limit = max(1, min(MAX_REPLICAS, ask.max_gpus // e.tp))
    n0 = _fewest_stable(lambda n: _agg_state(ask, e, n).stable, limit)
    if n0 is None:
        return [_row(ask, e, limit, _agg_state(ask, e, limit))]
    counts = sorted({min(limit, max(n0, math.ceil(n0 * f))) for f in REPLICA_STEPS})
    rows = [_row(ask, e, n, _agg_state(ask, e, n)) for n in counts]
    if not any(r.meets for r in rows):  # more replicas until the targets are met (latency falls with load)
        n = counts[-1]
        while n < limit:
            n = min(limit, max(n + 1, math.ceil(n * 1.25)))
            r = _row(ask, e, n, _agg_state(ask, e, n))
            rows.append(r)
            if r.meets or r.tpot_ms_p50 >= rows[-2].tpot_ms_p50 * 0.98 and r.ttft_ms_p50 >= \
                    rows[-2].ttft_ms_p50 * 0.98:  # more replicas no longer help: the floor is one request's
                break
    else:  # the fewest replicas that meet
        first = next(r for r in rows if r.meets)
        below = [n for n in range(n0, first.replicas) if n not in counts]
        for n in below:
            r = _row(ask, e, n, _agg_state(ask, e, n))
            rows.append(r)
            if r.meets:
                break
    return rows


# ---- disaggregated: prefill pool + decode pool ------------------------------------------------------------------
def _transfer_s(ask: Ask, e: Engine, prompt: float) -> float:
    """The prompt's KV from a prefill replica to a decode replica: each TP rank sends its shard over the GPU's
    inter-node link (its own NIC), plus the link's latency."""
    from memplan.catalog import get_interconnect

    name = ask.gpu.internode or ask.gpu.interconnect
    if name is None:
        return 0.0
    link = get_interconnect(name)
    return prompt * e.kv_bytes_per_token / (link.bandwidth_gbps * 1e9) + link.latency_us * 1e-6


def _prefill_pool(ask: Ask, engines: list[Engine]) -> tuple | None:
    """(engine, replicas, ttft50, ttft90) of the prefill pool with the fewest GPUs meeting the TTFT target."""
    L = _load(ask)
    best = None
    for e in engines:
        if e.seqs != min(x.seqs for x in engines if x.tp == e.tp):
            continue  # max_num_seqs hardly matters to a prefill replica: one per (TP, chunk)
        transfer = _transfer_s(ask, e, L.new_prompt)

        def at(n: int, e=e, transfer=transfer):
            return disaggregated_prefill(e.cost, L, ask.load.rate / n, e.chunk, transfer)

        limit = max(1, ask.max_gpus // e.tp)
        n = _fewest_stable(lambda k: at(k)[0] < 0.95, limit)
        if n is None:
            continue
        while True:
            rho, _, t50, t90 = at(n)
            t = t90 if ask.targets.percentile == "p90" else t50
            if ask.targets.ttft_ms is None or t * 1e3 <= ask.targets.ttft_ms or n >= limit:
                break
            n += max(1, n // 4)
        key = (not (ask.targets.ttft_ms is None or t * 1e3 <= ask.targets.ttft_ms), n * e.tp, t)
        if best is None or key < best[0]:
            best = (key, (e, n, t50, t90))
    return best[1] if best else None


def _disaggregated_rows(ask: Ask, e: Engine, prefill: tuple) -> list[CapacityLayout]:
    L, spec = _load(ask), _spec(ask, e)
    limit = max(1, min(MAX_REPLICAS, ask.max_gpus // e.tp))

    def at(n: int) -> ReplicaState:
        return disaggregated_decode(e.cost, L, ask.load.rate / n, e.seqs, e.kv_seqs, spec)

    n0 = _fewest_stable(lambda n: at(n).stable, limit)
    if n0 is None:
        return []
    rows = []
    for n in sorted({max(n0, math.ceil(n0 * f)) for f in REPLICA_STEPS}):
        rows.append(_row(ask, e, n, at(n), "disaggregated", prefill))
    return rows


# ---- inputs -> the search ---------------------------------------------------------------------------------------
def _load(ask: Ask) -> Load:
    L = ask.load
    return Load(L.prompt_mean, L.output_mean, L.prompt_p90, L.output_p90, L.prefix_hit_rate)


def _spec(ask: Ask, e: Engine) -> Spec:
    if not ask.spec.k:
        return ask.spec
    draft = ask.spec.draft
    if draft is not None and draft.tp != e.tp:
        draft = _draft_cost(ask, e.tp)[0]
    return Spec(ask.spec.k, ask.spec.acceptance, draft)


_DRAFTS: dict = {}


def _draft_cost(ask: Ask, tp: int) -> tuple[StepCost, int, int]:
    """The draft model's step, its weights per GPU and KV bytes per token per GPU, at the target's TP (vLLM runs
    the draft in the target's workers; a draft whose heads do not split over TP is run at TP 1)."""
    from memplan.answers.inference import estimate_inference
    from memplan.setups import serving_setup

    name = ask.speculation.draft
    key = (name, tp, ask.gpu.name)
    if key not in _DRAFTS:
        try:
            setup = serving_setup(name, tp=tp, gpus=tp, prompt=64, output=64)
        except MemplanError:
            setup = serving_setup(name, tp=1, gpus=1, prompt=64, output=64)
        est = estimate_inference(setup, None)
        _DRAFTS[key] = (step_cost(setup, ask.gpu, est.weights, est.kv_layers, ask.eff), est.weights.total,
                        est.kv_bytes_per_token)
    return _DRAFTS[key]


def _speculation(ask: Ask, draft: str | None, k: int | None, acceptance: float | None) -> None:
    if not k:
        if draft is not None or acceptance is not None:
            raise InputError("num_speculative_tokens", "is needed with draft/acceptance_rate (tokens drafted per "
                                                       "step, e.g. 3)")
        return
    if acceptance is None:
        raise InputError("acceptance_rate", "is needed with num_speculative_tokens: the share of drafted tokens "
                                            "the target accepts (measure it on your traffic; 0.6-0.8 is typical)")
    spec = Speculation(draft=draft, num_speculative_tokens=k, acceptance_rate=acceptance,
                       tokens_per_step=tokens_per_verify(k, acceptance))
    ask.speculation = spec
    if draft is not None:
        cost, w, bpt = _draft_cost(ask, 1)
        spec.draft_weights_per_gpu, spec.draft_kv_bytes_per_token = w, bpt
        ask.spec = Spec(k, acceptance, cost)
    else:
        ask.spec = Spec(k, acceptance, None)


def _max_model_len(ask_len: int | None, longest: int, positions: int) -> int:
    if ask_len is not None:
        if longest > ask_len:
            raise InputError("max_model_len", f"is {ask_len:,} but the longest request is {longest:,} tokens "
                                              "(prompt + output): the engine would reject it; raise it or shorten the "
                                              "requests")
        return ask_len
    if longest > positions:
        text = (f"the longest request is {longest:,} tokens (prompt + output), beyond the model's {positions:,} "
                "positions")
        raise InputError("prompt", text, keyword_text=text, flag_text=text)
    return min(positions, int(math.ceil(longest / 1024) * 1024))


def plan_capacity(model: str, gpu: GPUSpec, *, engine: str = "vllm", rate: float | None = None,
                  concurrency: int | None = None, prompt: int | None = None, output: int | None = None,
                  prompt_p90: int | None = None, output_p90: int | None = None, trace: str | None = None,
                  ttft_ms: float | None = None, tpot_ms: float | None = None, percentile: str = "p90",
                  tp: int | None = None, max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                  mode: str = "both", max_gpus: int = 4096, prefix_hit_rate: float | None = None,
                  draft: str | None = None, num_speculative_tokens: int | None = None,
                  acceptance_rate: float | None = None, max_model_len: int | None = None,
                  efficiency: Efficiency | None = None, **serving_kw) -> CapacityPlan:
    from memplan.setups import resolve_model

    load = build_load(prompt, output, prompt_p90, output_p90, trace, rate, concurrency, prefix_hit_rate)
    if engine not in ("vllm", "sglang"):
        raise InputError("engine", f"must be 'vllm' or 'sglang' for serve, got {engine!r}")
    spec_model = resolve_model(model)
    positions = spec_model.arch.max_positions if spec_model.architecture else 1 << 20
    mml = _max_model_len(max_model_len, load.longest, positions)
    targets = CapacityTargets(ttft_ms=ttft_ms, tpot_ms=tpot_ms, percentile=percentile)
    ask = Ask(model, gpu, engine, load, targets, serving_kw, mml, Spec(), None, max_gpus, efficiency or Efficiency())
    _speculation(ask, draft, num_speculative_tokens, acceptance_rate)
    engines, skipped = [], []
    # a benchmark (concurrency) ran the engine's defaults unless told: those are not searched
    seq_choices = (max_num_seqs,) if max_num_seqs or concurrency else SEQS_CHOICES
    chunk_choices = (max_num_batched_tokens,) if max_num_batched_tokens or concurrency else CHUNK_CHOICES
    for t in ((tp,) if tp else TP_CHOICES):
        if t > max_gpus:
            continue
        for s in seq_choices:
            for c in chunk_choices:
                e = _engine(ask, t, s, c)
                if isinstance(e, str):
                    if not any(x.startswith(f"TP{t},") or x.startswith(f"TP{t}:") for x in skipped):
                        skipped.append(e)  # one reason per TP: the first setting that does not start
                    continue
                engines.append(e)
    plan = CapacityPlan(model=spec_model.name, gpu=gpu.name, engine=engine, load=load, targets=targets,
                        speculation=ask.speculation, meets_targets=False, skipped=_short(skipped))
    plan.assumptions, plan.unknowns = _assumptions(ask, engines), UNKNOWNS
    if not engines:
        plan.why = "no engine setting starts on " + gpu.name + ": " + (skipped[-1] if skipped else "")
        return plan
    if load.concurrency is not None:
        return _benchmark(plan, ask, engines)
    rows: list[CapacityLayout] = []
    if mode in ("both", "aggregated"):
        for e in engines:
            rows += _aggregated_rows(ask, e)
    if mode in ("both", "disaggregated"):
        pre = _prefill_pool(ask, engines)
        if pre is not None:
            decode: dict[tuple[int, int], Engine] = {}  # the chunk hardly matters to a decode replica: its most KV
            for e in engines:
                k = (e.tp, e.seqs)
                if k not in decode or e.kv_seqs > decode[k].kv_seqs:
                    decode[k] = e
            for e in decode.values():
                rows += _disaggregated_rows(ask, e, pre)
    plan.candidates = len(rows)
    _choose(plan, ask, rows)
    return plan


def _choose(plan: CapacityPlan, ask: Ask, rows: list[CapacityLayout]) -> None:
    lat = "ttft_ms_p90" if ask.targets.percentile == "p90" else "ttft_ms_p50"
    tp_ = "tpot_ms_p90" if ask.targets.percentile == "p90" else "tpot_ms_p50"
    ok = [r for r in rows if r.meets]
    if ok:
        plan.best = min(ok, key=lambda r: (r.gpus, getattr(r, tp_), getattr(r, lat)))
        plan.meets_targets = True
    else:
        def miss(r: CapacityLayout) -> float:
            t = ask.targets
            worst = 0.0
            if t.ttft_ms:
                worst = max(worst, getattr(r, lat) / t.ttft_ms)
            if t.tpot_ms:
                worst = max(worst, getattr(r, tp_) / t.tpot_ms)
            return worst if math.isfinite(worst) else math.inf

        pool = [r for r in rows if r.output_tokens_per_s > 0] or rows
        if pool:  # the smallest miss; within 3% of it (no real difference), the fewest GPUs
            least = min(miss(r) for r in pool)
            plan.closest = min((r for r in pool if miss(r) <= least * 1.03), key=lambda r: (r.gpus, miss(r)))
        plan.why = _why(ask, plan.closest)
    front = _pareto([r for r in rows if r.output_tokens_per_s > 0], tp_, lat)
    for r in front:
        r.pareto = True
    plan.pareto = sorted(front, key=lambda r: (-r.output_tokens_per_s_per_gpu, r.gpus))[:PARETO_ROWS]


def _pareto(rows: list[CapacityLayout], tpot: str, ttft: str) -> list[CapacityLayout]:
    """Rows no other row beats on all of: output tokens/s per GPU (higher), TPOT and TTFT (lower)."""
    def key(r):  # 3 significant digits: a difference below that is no trade-off
        return tuple(float(f"{x:.3g}") for x in (-r.output_tokens_per_s_per_gpu, getattr(r, tpot), getattr(r, ttft)))

    out = []
    for r in rows:
        kr = key(r)
        if not any(all(a <= b for a, b in zip(key(o), kr)) and key(o) != kr for o in rows):
            if all(key(o) != kr for o in out):
                out.append(r)
    return out


def _why(ask: Ask, r: CapacityLayout | None) -> str:
    if r is None:
        return "no layout is stable at this rate within max_gpus"
    t, parts = ask.targets, []
    lat = r.ttft_ms_p90 if t.percentile == "p90" else r.ttft_ms_p50
    tpot = r.tpot_ms_p90 if t.percentile == "p90" else r.tpot_ms_p50
    if t.tpot_ms and tpot > t.tpot_ms:
        parts.append(f"TPOT {tpot:.1f} ms > {t.tpot_ms:g} ms even at light load: one decode step reads the weights "
                     f"(TP{r.tp}); a larger TP, a smaller/quantised model or speculative decoding lowers it")
    if t.ttft_ms and lat > t.ttft_ms:
        parts.append(f"TTFT {lat:.0f} ms > {t.ttft_ms:g} ms: the prompt's prefill alone is that long on TP{r.tp}; "
                     "a larger TP or prefix caching lowers it")
    return "; ".join(parts) or "no layout is stable at this rate within max_gpus"


def _benchmark(plan: CapacityPlan, ask: Ask, engines: list[Engine]) -> CapacityPlan:
    """concurrency=C: the throughput of one replica under a benchmark's fixed concurrency (no replicas search)."""
    rows = []
    for e in engines:
        s = closed_loop(e.cost, _load(ask), ask.load.concurrency, e.seqs, e.chunk, e.kv_seqs, _spec(ask, e))
        rows.append(_row(ask, e, 1, s))
    plan.candidates = len(rows)
    _choose(plan, ask, rows)
    return plan


def _short(skipped: list[str]) -> list[str]:
    return skipped[:8] + ([f"... and {len(skipped) - 8} more"] if len(skipped) > 8 else [])


def _assumptions(ask: Ask, engines: list[Engine]) -> list[str]:
    L, out = ask.load, []
    out.append(f"load: {L.source}; prompt mean {L.prompt_mean:,.0f} (p90 {L.prompt_p90:,.0f}), output mean "
               f"{L.output_mean:,.0f} (p90 {L.output_p90:,.0f}) tokens; "
               + (f"{L.rate:g} requests/s, Poisson arrivals" if L.rate is not None else
                  f"closed loop at concurrency {L.concurrency} (a benchmark's --max-concurrency, request rate inf)"))
    out.append(f"max_model_len {ask.max_model_len:,} (the longest request rounded up to 1024 unless given); the KV "
               "capacity is counted at the mean context (prompt + output)")
    if engines:
        out.append("step time: " + engines[0].cost.eff.describe() + " (fitted on one published sweep, "
                   "tests/test_capacity.py); " + engines[0].cost.describe())
    out.append("continuous batching with chunked prefill: each step decodes every running sequence and fills the "
               "rest of max_num_batched_tokens with prompts; TTFT = half a step + the prompt's chunks + an M/D/1 "
               "wait for the prefill budget; a request's TPOT p90 at the p90 of the running count (Poisson)")
    if L.prefix_hit_rate:
        out.append(f"prefix cache: {L.prefix_hit_rate:.0%} of prompt tokens are not recomputed (KV still held per "
                   "request: shared blocks not credited)")
    if ask.speculation:
        s = ask.speculation
        out.append(f"speculative decoding: {s.num_speculative_tokens} drafted tokens at acceptance {s.acceptance_rate}"
                   f" -> {s.tokens_per_step:.2f} tokens per verify step (Leviathan et al. 2023); "
                   + (f"draft {s.draft}: {s.draft_weights_per_gpu / 2**30:.2f} GiB of weights (TP1 size, split over "
                      f"the target's TP) out of the KV pool and {s.draft_kv_bytes_per_token:,} B of KV per token"
                      if s.draft else "no draft model cost (n-gram / MTP heads)"))
    out.append("disaggregated: prefill replicas run full chunks only, decode replicas decode only; the prompt's KV "
               f"goes over the GPU's {ask.gpu.internode or ask.gpu.interconnect or 'no'} link per TP rank")
    return out


UNKNOWNS = [
    "kernel efficiency per model/GPU/release (attention backend, CUDA graphs, torch.compile): one fitted set of "
    "efficiencies is used for every GPU",
    "the scheduler's CPU cost per request (tokenisation, detokenisation, the API server): a fixed per-step overhead",
    "preemption and recomputation when KV blocks run out mid-decode, and the waves a fixed-length benchmark's "
    "synchronised requests form",
    "the real prefix-cache hit rate and speculative acceptance rate of your traffic: both are inputs",
    "network contention for disaggregated KV transfer, and routing imbalance between replicas (assumed even)",
]
