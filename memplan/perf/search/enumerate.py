"""The layouts a planner may propose: only what some engine runs, each dimension with the rule it comes from.

  - TP inside a node, dividing every layer kind's attention heads and its KV heads (or a multiple of them):
    Megatron-LM splits whole heads across TP ranks (Shoeybi et al. 2019, sec. 3; memory/layout.check_layout);
    sequence parallelism on or off with TP (Korthikanti et al. 2022);
  - CP (context parallelism, ring attention) only for long sequences: the sequence splits into 2 x cp chunks for
    Megatron's load-balanced causal CP, each at least MIN_CP_TOKENS long;
  - EP dividing a MoE layer's routed experts, expert-TP = TP (Megatron-Core's default) or 1;
  - PP up to the layer count, with any split (Layout.stage_layers: the ends take the shortfall when the layers do
    not divide, as Megatron's --account-for-embedding/loss-in-pipeline-split intend) and, when the layers do
    divide, also one layer fewer on the first and last stage (--decoder-first/last-pipeline-num-layers);
    interleaving v > 1 when the layers split into pp x v equal chunks, the embedding and the loss counted as a
    layer each where that makes them split (--account-for-embedding/loss-in-pipeline-split), and the
    micro-batches into groups of pp (Megatron's interleaved schedule); a pinned v over any split
    (--pipeline-model-parallel-layout);
  - ZeRO 0-3, the stages the engine runs (memplan/engines/<engine>.py ZERO_STAGES: Megatron's distributed
    optimizer is 0-1, FSDP has no stage 1) and 0-1 with PP (DeepSpeed's pipeline engine), ZeRO >= 1 with one
    data-parallel rank only with CPU offload; offload of the optimizer (ZeRO >= 1)
    and of the parameters (ZeRO-3) to the CPU, never NVMe;
  - every micro-batch dividing the per-replica batch (gradient accumulation follows), recompute none / selective
    / full;
  - and only what the engine version supports (the execution profile's `supports`: Megatron-LM of 2021 has no
    sequence parallelism, selective recompute, distributed optimizer or uneven stages).  A pinned flag wins.
Layouts are built unvalidated (a copy of the base layout with the dimensions replaced) for speed: every rule of
Layout's validator is applied here; the few that get a full memory estimate or are reported are validated again.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import memplan.engines as engines
from memplan.spec.execution import Supports
from memplan.spec.layout import Layout
from memplan.spec.model import Model

RECOMPUTE_ORDER = ("none", "selective", "selective-op", "full")  # most kept to least (hints.py)
MIN_CP_TOKENS = 2048  # a CP chunk shorter than this leaves the ring exchange no attention compute to hide under
CP_FROM_SEQ = 16384   # below this a sequence fits one GPU's activations with recompute: CP is not searched
MAX_VIRTUAL = 8

SEARCH_RULES = ("TP within a node dividing the heads (SP on/off), CP for sequences from 16K, EP dividing the "
                "experts, PP up to the layers with even or ends-lighter splits, interleaving when the layers and "
                "micro-batches allow, ZeRO 0-3 (0-1 with PP), CPU offload, recompute none/selective/full, every "
                "micro-batch dividing the per-replica batch; no NVMe")


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _tp_ok(m: Model, tp: int) -> bool:
    for layer, _ in m.kinds():
        a = layer.attention
        if a.heads % tp or (a.kv_heads % tp and tp % a.kv_heads):
            return False
    return True


def _offloads(zero: int, dp: int) -> list[tuple[str, str]]:
    out = [("none", "none")] if (zero == 0 or dp > 1) else []
    if zero >= 1:
        out.append(("cpu", "none"))
    if zero == 3:
        out.append(("cpu", "cpu"))
    return out


def _stage_splits(n_layers: int, pp: int) -> list[tuple[int | None, int | None]]:
    if pp == 1:
        return [(None, None)]
    out: list[tuple[int | None, int | None]] = [(None, None)]
    if n_layers % pp == 0 and pp > 2:
        each = n_layers // pp
        rest = n_layers - 2 * (each - 1)
        if each > 1 and rest % (pp - 2) == 0:
            out.append((each - 1, each - 1))
    return out


def _experts(m: Model) -> int:
    return max((layer.ffn.experts for layer, _ in m.kinds() if layer.ffn.moe), default=0)


def enumerate_layouts(m: Model, base: Layout, gpus: int, global_batch: int, seq: int,
                      max_micro_batch: int | None = None, fixed: dict | None = None,
                      supports: Supports | None = None) -> Iterator[Layout]:
    """Every layout of `gpus` GPUs reaching `global_batch` sequences per step; `fixed` pins dimensions the user
    chose (any Layout field name); `supports` is what the engine version can run (its execution profile)."""
    for L, _ in enumerate_families(m, base, gpus, global_batch, seq, max_micro_batch, fixed, supports):
        yield L


def enumerate_families(m: Model, base: Layout, gpus: int, global_batch: int, seq: int,
                       max_micro_batch: int | None = None, fixed: dict | None = None,
                       supports: Supports | None = None) -> Iterator[tuple[Layout, tuple]]:
    """(layout, its family: everything but micro-batch, accumulation and recomputation; prune.family's tuple)."""
    sup = supports or Supports()
    fx = fixed or {}
    gpn, engine = base.gpus_per_node, base.engine
    conventions = engines.MODULES[engine]  # its ZeRO stages and offload (memplan/engines/<engine>.py)
    L = m.n_layers
    experts = _experts(m)

    def pinned(key, value) -> bool:
        return key not in fx or fx[key] == value

    for tp in divisors(gpn):
        if tp > gpus or not pinned("tp", tp) or not _tp_ok(m, tp):
            continue
        sps = (False,) if tp == 1 or not sup.sequence_parallel else (True, False)
        cps = [c for c in (1, 2, 4, 8, 16, 32) if c == 1 or (sup.context_parallel and seq >= CP_FROM_SEQ
                                                             and seq % (2 * c) == 0 and seq // c >= MIN_CP_TOKENS)]
        for cp in cps:
            if not pinned("cp", cp) or gpus % (tp * cp):
                continue
            for pp in divisors(gpus // (tp * cp)):
                if pp > L or not pinned("pp", pp) or (not sup.uneven_stages and L % pp):
                    continue
                dp = gpus // (tp * cp * pp)
                if global_batch % dp:
                    continue
                per_rank = global_batch // dp
                stage_gpus = gpus // pp
                eps = [1]
                if experts and sup.expert_parallel:
                    eps = [e for e in divisors(experts) if stage_gpus % e == 0]
                zeros = [z for z in ((0, 1) if pp > 1 else (0, 1, 2, 3))
                         if (z in sup.zero and z in conventions.ZERO_STAGES) or "zero" in fx]
                for ep in eps:
                    if not pinned("ep", ep):
                        continue
                    etps = [None] if ep == 1 or tp == 1 else [None, 1]
                    for etp in etps:
                        if stage_gpus % (ep * (tp if etp is None else etp)) or not pinned("etp", etp):
                            continue
                        for first, last in (_stage_splits(L, pp) if sup.uneven_stages else [(None, None)]):
                            if not pinned("first_stage_layers", first) or not pinned("last_stage_layers", last):
                                continue
                            yield from _inner(base, fx, gpus, tp, cp, pp, ep, etp, sps, first, last, dp, per_rank,
                                              zeros, L, max_micro_batch, engine, sup)


def _interleavable(n_layers: int, pp: int, v: int) -> bool:
    """Megatron's interleaved schedule: the layers split into pp x v equal chunks, counting the embedding and/or
    the loss as a layer when --account-for-embedding/loss-in-pipeline-split are set (Llama 3.1 405B's 126 layers
    + 2 = 128 = 8 x 8 x 2 in Megatron-Bridge's H100 recipe, pp 8 x v 8)."""
    return any((n_layers + extra) % (pp * v) == 0 and n_layers + extra >= pp * v for extra in (0, 1, 2))


def _inner(base, fx, gpus, tp, cp, pp, ep, etp, sps, first, last, dp, per_rank, zeros, n_layers, max_mb, engine,
           sup: Supports):
    recomputes = [rc for rc in RECOMPUTE_ORDER if rc in sup.recompute or fx.get("recompute") == rc]
    conventions = engines.MODULES[engine]

    def pinned(key, value) -> bool:
        return key not in fx or fx[key] == value

    for sp in sps:
        if not pinned("sequence_parallel", sp):
            continue
        for mb in divisors(per_rank):
            if max_mb and mb > max_mb:
                break
            if not pinned("micro_batch", mb):
                continue
            ga = per_rank // mb
            vs = [1]
            if pp > 1 and first is None and sup.interleaving:
                vs += [v for v in range(2, MAX_VIRTUAL + 1) if _interleavable(n_layers, pp, v) and ga % pp == 0]
                pv = fx.get("virtual_stages")
                if pv and pv > 1 and pv not in vs and n_layers >= pp * pv - 2:
                    vs.append(pv)  # a pinned v over any split (--pipeline-model-parallel-layout)
            for v in vs:
                if not pinned("virtual_stages", v):
                    continue
                for zero in zeros:
                    if not pinned("zero", zero):
                        continue
                    for off_opt, off_par in _offloads(zero, dp):
                        if ((not conventions.OFFLOAD_OPTIMIZER or not sup.offload) and off_opt != "none"
                                and "offload_optimizer" not in fx) or not pinned("offload_optimizer", off_opt) \
                                or not pinned("offload_params", off_par):
                            continue
                        for rc in recomputes:
                            if not pinned("recompute", rc):
                                continue
                            yield base.model_copy(update={
                                "gpus": gpus, "tp": tp, "pp": pp, "cp": cp, "ep": ep, "etp": etp,
                                "sequence_parallel": sp, "virtual_stages": v, "first_stage_layers": first,
                                "last_stage_layers": last, "zero": zero, "offload_optimizer": off_opt,
                                "offload_params": off_par, "micro_batch": mb, "grad_accum": ga, "recompute": rc}), \
                                (gpus, tp, pp, cp, ep, etp, sp, v, first, last, zero, off_opt, off_par)
