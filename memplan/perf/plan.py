"""Strategy search: enumerate layouts that reach the global batch, drop what does not fit, rank the rest.

A layout is data x tensor x pipeline parallel sizes, a ZeRO stage, offload, recomputation and a micro-batch (the
gradient accumulation follows from the global batch).  Rules, each from the engines that run them:
  - TP stays inside a node and divides the attention heads and the KV heads (or is a multiple of the KV heads):
    Megatron-LM splits heads across TP ranks (Shoeybi et al. 2019, sec. 3);
  - PP divides the layers evenly (Megatron-LM's uniform split, as memplan's memory model assumes);
  - with PP, ZeRO stage 0 or 1 only (DeepSpeed's pipeline engine and Megatron's distributed optimizer);
  - ZeRO >= 1 with one data-parallel rank only with CPU offload (ZeRO-Offload on one GPU);
  - offload: the optimizer to CPU with ZeRO >= 1, parameters too with ZeRO-3 (NVMe is left out of the search);
  - sequence parallelism on whenever TP > 1 (same communication volume, less activation memory: Korthikanti
    et al. 2022); one virtual stage.
Speed: each layout's step time (perf/time.py StepModel) and a model-state lower bound on its memory are cheap;
the full memory estimate (memplan.memory) runs only on the best-ranked layouts, best first, until `top` fit.  A
layout whose lower bound exceeds the GPU's memory cannot fit and is dropped without the full estimate.
"""
from __future__ import annotations

import math
import time as _time
from collections.abc import Callable

from memplan.errors import MemplanError
from memplan.memory.estimate import estimate_memory
from memplan.perf.time import (DEFAULT_CPU_BANDWIDTH_GBPS, StepModel, optimizer_bytes_per_param, peak_for, price_of,
                               resolve_efficiency, resolve_links)
from memplan.results.plan import Candidate, PlanResult
from memplan.results.time import Layout
from memplan.spec.hardware import GPUSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import Workload
from memplan.spec.units import format_bytes

RECOMPUTE_ORDER = ("none", "selective", "full")
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: compute-optimal ~20 tokens per parameter


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _offloads(zero: int, dp: int) -> list[tuple[str, str]]:
    out = [("none", "none")] if (zero == 0 or dp > 1) else []
    if zero >= 1:
        out.append(("cpu", "none"))
    if zero == 3:
        out.append(("cpu", "cpu"))
    return out


def enumerate_layouts(setup: TrainingSetup, gpus: int, global_batch: int, max_micro_batch: int | None = None,
                      fixed: dict | None = None):
    """Yield (tp, pp, dp, zero, offload_optimizer, offload_params, micro_batch, grad_accum, recompute).

    `fixed` pins dimensions the user chose (keys: tp, pp, zero, offload_optimizer, offload_params, micro_batch,
    recompute)."""
    fx = fixed or {}
    a = setup.model.arch
    gpn = setup.layout.gpus_per_node
    engine = setup.layout.engine
    for tp in divisors(gpn):
        if tp > gpus or a.n_heads % tp or (a.kv_heads % tp and tp % a.kv_heads) or fx.get("tp", tp) != tp:
            continue
        for pp in divisors(a.n_layers):
            if gpus % (tp * pp) or fx.get("pp", pp) != pp:
                continue
            dp = gpus // (tp * pp)
            if global_batch % dp:
                continue
            per_rank = global_batch // dp
            zeros = (0, 1) if (pp > 1 or engine == "megatron") else (0, 1, 2, 3)
            for zero in zeros:
                if fx.get("zero", zero) != zero:
                    continue
                for off_opt, off_par in _offloads(zero, dp):
                    if (engine == "megatron" and off_opt != "none") or fx.get("offload_optimizer", off_opt) != off_opt \
                            or fx.get("offload_params", off_par) != off_par:
                        continue
                    for mb in divisors(per_rank):
                        if max_micro_batch and mb > max_micro_batch:
                            break
                        if fx.get("micro_batch", mb) != mb:
                            continue
                        for rc in RECOMPUTE_ORDER:
                            if fx.get("recompute", rc) != rc:
                                continue
                            yield tp, pp, dp, zero, off_opt, off_par, mb, per_rank // mb, rc


def _setup_for(base: TrainingSetup, gpus: int, row: tuple) -> TrainingSetup:
    tp, pp, dp, zero, off_opt, off_par, mb, ga, rc = row
    p = base.layout
    parallel = Layout(gpus=gpus, gpus_per_node=p.gpus_per_node, tp=tp, pp=pp, sequence_parallel=tp > 1,
                           zero=zero, offload_optimizer=off_opt, offload_params=off_par, engine=p.engine)
    w = base.workload
    workload = Workload(micro_batch=mb, seq=base.seq, grad_accum=ga, recompute=rc, attention=w.attention,
                        implementation=w.implementation)
    return base.model_copy(update={"layout": parallel, "workload": workload})


def _layout(gpus: int, gpn: int, row: tuple) -> Layout:
    tp, pp, dp, zero, off_opt, off_par, mb, ga, rc = row
    return Layout(gpus=gpus, gpus_per_node=gpn, dp=dp, tp=tp, pp=pp, zero=zero, offload_optimizer=off_opt,
                  offload_params=off_par, micro_batch=mb, grad_accum=ga, recompute=rc, sequence_parallel=tp > 1)


def gpu_counts_upto(start: int, stop: int, gpn: int) -> list[int]:
    """1, 2, 4, ... up to a node, then whole nodes: the counts --min-gpus tries, ascending."""
    small = [n for n in (1, 2, 4) if n < gpn]
    counts = [n for n in small + list(range(gpn, stop + 1, gpn)) if start <= n <= stop]
    return counts


def plan(setup: TrainingSetup, gpu: GPUSpec, *, global_batch: int, gpus: list[int] | None = None, by: str = "time",
         top: int = 5, min_gpus: bool = False, max_gpus: int = 4096, tokens: float | None = None,
         steps: int | None = None, mfu: float | None = None, achieved_tflops: float | None = None,
         measured: str | None = None, overlap: str = "dp", interconnect: str | None = None,
         internode: str | None = None, price: float | None = None, max_micro_batch: int | None = None,
         cpu_memory_bytes: int | None = None, fixed: dict | None = None,
         cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS,
         progress: Callable[[str], None] | None = None) -> PlanResult:
    if by not in ("time", "cost"):
        raise MemplanError(f"--by must be time or cost, got {by!r}")
    if setup.model.architecture is None:
        setup.model.arch  # raises the clear "needs an architecture" error
    t0 = _time.perf_counter()
    seq = setup.seq
    gpn = setup.layout.gpus_per_node
    links = resolve_links(gpu, interconnect, internode)
    peak = peak_for(gpu, setup.recipe.compute)
    eff = resolve_efficiency(gpu, peak, mfu, achieved_tflops, measured)
    sm = StepModel(setup.model, setup.recipe, gpu, seq, links, eff, overlap, gpn,
                   cpu_bandwidth_gbps=cpu_bandwidth_gbps)
    opt_bpp = optimizer_bytes_per_param(setup)
    memory = gpu.memory_bytes
    price_per_hour, price_source = price_of(gpu, price)
    assumptions = [f"efficiency {eff.value:.3g} of {peak:g} TFLOP/s ({eff.source}); overlap={overlap}"]
    if cpu_memory_bytes is None:
        assumptions.append("CPU RAM per node is not checked for offload layouts (set --cpu-memory)")
    tokens_per_step = global_batch * seq
    if tokens is None and steps is None:
        tokens = CHINCHILLA_TOKENS_PER_PARAM * setup.model.parameters.total
        assumptions.append(f"days and cost for {tokens:.3g} tokens: 20 tokens per parameter (Chinchilla, "
                           "Hoffmann et al. 2022); set --tokens or --steps")
    n_steps = steps if steps is not None else math.ceil(tokens / tokens_per_step)
    evaluated = pruned = checked = rejected = 0
    last_report = [t0]

    def report(msg: str) -> None:
        now = _time.perf_counter()
        if progress and now - last_report[0] > 1.0:
            last_report[0] = now
            progress(msg)

    failed: dict[tuple, list[tuple[int, int]]] = {}
    skipped = 0

    def fits(n: int, row: tuple) -> tuple[bool, int, int]:
        """(fits, GPU bytes required, CPU bytes per node) from the full estimate.

        Memory grows with the micro-batch and shrinks with more recomputation, all else equal; so a layout whose
        smaller-or-equal micro-batch with at-least-as-much recomputation already failed is rejected unestimated.
        """
        nonlocal checked, rejected, skipped
        key, mb, level = (n, *row[:6]), row[6], RECOMPUTE_ORDER.index(row[8])
        if any(m <= mb and lv >= level for m, lv in failed.get(key, ())):
            skipped += 1
            rejected += 1
            return False, 0, 0
        checked += 1
        try:
            est = estimate_memory(_setup_for(setup, n, row), gpu)
        except MemplanError:
            rejected += 1
            return False, 0, 0
        ok = bool(est.fits) and (cpu_memory_bytes is None or est.cpu.total <= cpu_memory_bytes)
        if not ok:
            rejected += 1
            failed.setdefault(key, []).append((mb, level))
        return ok, est.per_gpu.required, est.cpu.total

    counts = list(gpus or [setup.layout.gpus])
    found_min: int | None = None
    if min_gpus:
        for n in gpu_counts_upto(1, max_gpus, gpn):
            # Memory grows with the micro-batch and shrinks with recomputation: per layout family (everything but
            # those two) the smallest micro-batch with the most recomputation needs the least, so it alone decides
            # whether the family can fit. One full estimate per family, families in order of their bound.
            frugal: dict[tuple, tuple] = {}
            for row in enumerate_layouts(setup, n, global_batch, max_micro_batch, fixed):
                evaluated += 1
                bound = sm.memory_lower_bound(row[0], row[1], row[2], row[3], row[4], row[5], opt_bpp)
                if bound > memory:
                    pruned += 1
                    continue
                key = row[:6]
                rank = (row[6], -RECOMPUTE_ORDER.index(row[8]))
                if key not in frugal or rank < frugal[key][1]:
                    frugal[key] = (bound, rank, row)
            for _, _, row in sorted(frugal.values(), key=lambda v: v[0]):
                if fits(n, row)[0]:
                    found_min = n
                    break
            report(f"memplan plan: --min-gpus tried {n} GPUs ({evaluated:,} strategies, {checked} full estimates)")
            if found_min:
                break
        if found_min is None:
            raise MemplanError(f"nothing fits on up to {max_gpus} x {gpu.name} at global batch {global_batch}; "
                               "raise --max-gpus, or lower --global-batch or --seq")
        counts = [found_min]

    scored = []  # (key, n, row, bound, timing)
    frugal: dict[tuple, tuple] = {}  # layout family -> its least memory-hungry member (smallest mb, most recompute)
    for n in counts:
        for row in enumerate_layouts(setup, n, global_batch, max_micro_batch, fixed):
            tp, pp, dp, zero, off_opt, off_par, mb, ga, rc = row
            evaluated += 1
            timing = sm.evaluate(n, tp, pp, zero, mb, ga, rc, off_opt, off_par, tp > 1)
            bound = sm.memory_lower_bound(tp, pp, dp, zero, off_opt, off_par, opt_bpp)
            if bound > memory:
                pruned += 1
                continue
            key = timing[0] * n if by == "cost" else timing[0]
            scored.append((key, n, row, bound, timing))
            family, rank = (n, *row[:6]), (mb, -RECOMPUTE_ORDER.index(rc))
            if family not in frugal or rank < frugal[family][0]:
                frugal[family] = (rank, row)
        report(f"memplan plan: {evaluated:,} strategies scored")
    if not scored and not evaluated:
        a = setup.model.arch
        pins = f"; pinned by flags: {fixed}" if fixed else ""
        raise MemplanError(f"no layout of {counts} GPUs is possible: TP must divide the {a.n_heads} heads and fit in "
                           f"a node, PP must divide the {a.n_layers} layers, and the data-parallel size must divide "
                           f"--global-batch {global_batch}{pins}")
    # Exact ties (the time model does not see micro-batch size or engine overheads): prefer the larger micro-batch,
    # then fewer moving parts: no offload, lower ZeRO stage, less recomputation.
    scored.sort(key=lambda s: (s[0], -s[2][6], (s[2][4] != "none") + (s[2][5] != "none"), s[2][3],
                               RECOMPUTE_ORDER.index(s[2][8])))
    fastest_unfit = None
    chosen: list[Candidate] = []
    family_fits: set[tuple] = set()
    for key, n, row, bound, timing in scored:
        family = (n, *row[:6])
        if family not in family_fits:
            # Check the family's most frugal member first: if it fails, dominance rejects the whole family.
            if frugal[family][1] == row or fits(n, frugal[family][1])[0]:
                family_fits.add(family)
        ok, required, cpu_bytes = fits(n, row)
        if not ok:
            if fastest_unfit is None:
                if not required:  # rejected by dominance: estimate it once, to say what it would need
                    try:
                        required = estimate_memory(_setup_for(setup, n, row), gpu).per_gpu.required
                    except MemplanError:
                        required = 0
                fastest_unfit = (n, row, required, timing)
            report(f"memplan plan: {checked} full memory estimates, {len(chosen)} fit so far")
            continue
        step = timing[0]
        tps = tokens_per_step / step
        seconds = n_steps * step
        gpu_hours = seconds * n / 3600
        chosen.append(Candidate(
            layout=_layout(n, gpn, row), memory_required_bytes=required, memory_lower_bound_bytes=int(bound),
            cpu_memory_bytes=cpu_bytes,
            fits=True, step_seconds=step, compute_seconds=timing[1], bubble_seconds=timing[2],
            exposed_comm_seconds=timing[3], mfu=sm.flops["none"].model * tps / (n * peak * 1e12),
            tokens_per_second=tps, days=seconds / 86400, gpu_hours=gpu_hours,
            cost=gpu_hours * price_per_hour if price_per_hour is not None else None))
        if len(chosen) >= top:
            break
    elapsed = _time.perf_counter() - t0
    if not chosen:
        need = f"; the fastest layout needs {format_bytes(fastest_unfit[2])}" if fastest_unfit and fastest_unfit[2] \
            else ""
        raise MemplanError(f"no strategy fits on {counts} x {gpu.name} ({format_bytes(memory)}){need}; "
                           "try --min-gpus, more --gpus, or a smaller --global-batch/--seq")
    if fixed:
        assumptions.append("pinned by flags: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    assumptions.append("searched: TP within a node dividing the heads, PP dividing the layers, ZeRO 0-3 (0-1 with "
                       "PP), CPU offload, recompute none/selective/full, every micro-batch dividing the per-replica "
                       "batch; sequence parallelism with TP; no NVMe, no interleaving")
    return PlanResult(
        model=setup.model.name, parameters=setup.model.parameters.total, gpu=gpu.name, gpu_memory_bytes=memory,
        gpus=counts, global_batch=global_batch, seq=seq, precision=setup.recipe.name, by=by, overlap=overlap,
        efficiency=eff.value, efficiency_source=eff.source, price_per_hour=price_per_hour,
        price_source=price_source, tokens=float(n_steps * tokens_per_step), steps=n_steps,
        candidates=chosen, evaluated=evaluated, pruned_by_bound=pruned, checked_full=checked,
        rejected_full=rejected, skipped_dominated=skipped, search_seconds=elapsed,
        candidates_per_second=evaluated / elapsed if elapsed else 0.0,
        min_gpus=found_min, why=_why(chosen, fastest_unfit, memory, by), assumptions=assumptions)


def _why(chosen: list[Candidate], fastest_unfit, memory: int, by: str) -> list[str]:
    best = chosen[0]
    out = [f"best: {best.layout.short()} on {best.layout.gpus} GPUs: {best.step_seconds:.3f} s/step "
           f"(compute {best.compute_seconds:.3f}, exposed comm {best.exposed_comm_seconds:.3f}, bubble "
           f"{best.bubble_seconds:.3f}), MFU {best.mfu:.1%}, needs {format_bytes(best.memory_required_bytes)} of "
           f"{format_bytes(memory)}"
           + (f" and {format_bytes(best.cpu_memory_bytes)} of CPU RAM per node" if best.cpu_memory_bytes else "")]
    if len(chosen) > 1:
        nxt = chosen[1]
        parts = {"compute": nxt.compute_seconds - best.compute_seconds,
                 "exposed communication": nxt.exposed_comm_seconds - best.exposed_comm_seconds,
                 "pipeline bubble": nxt.bubble_seconds - best.bubble_seconds}
        main = max(parts, key=lambda k: abs(parts[k]))
        if by == "cost":
            gap, what = nxt.step_seconds * nxt.layout.gpus / (best.step_seconds * best.layout.gpus) - 1, "cost"
        else:
            gap, what = nxt.step_seconds / best.step_seconds - 1, "step time"
        out.append(f"runner-up {nxt.layout.short()} on {nxt.layout.gpus} GPUs is {gap:.1%} worse in {what}; the "
                   f"largest difference is {main} ({parts[main]:+.3f} s/step)")
    if fastest_unfit is not None:
        n, row, required, timing = fastest_unfit
        if timing[0] < best.step_seconds:
            lay = _layout(n, best.layout.gpus_per_node, row)
            need = f"needs {format_bytes(required)}" if required else "is rejected by the memory model"
            out.append(f"faster layouts do not fit: the fastest, {lay.short()} ({timing[0]:.3f} s/step), {need} "
                       f"(> {format_bytes(memory)})")
    return out
