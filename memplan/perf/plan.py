"""`memplan plan`: enumerate the layouts that reach the global batch (perf/search/enumerate.py), time each with the
op walk (perf/step.py), drop what cannot fit (perf/search/prune.py), rank the rest (perf/search/rank.py).

Speed: each layout's step reuses the walk's per-layer costs and its pipeline part (layouts that differ only in
ZeRO or offload share it), and a model-state lower bound on its memory is a sum; the full memory estimate
(memplan.memory) runs only on the best-ranked layouts, best first, until `top` fit.  A `reference` layout (e.g.
the one a paper ran) is timed and estimated too, and its rank among the fitting layouts explained.
"""
from __future__ import annotations

import math
import time as _time
from collections.abc import Callable

from memplan.errors import MemplanError
from memplan.memory.estimate import estimate_memory
from memplan.perf.efficiency import check_positive, peak_for
from memplan.perf.flops import flops_per_token
from memplan.spec.units import format_count
from memplan.perf.search.enumerate import RECOMPUTE_ORDER, SEARCH_RULES, enumerate_families
from memplan.perf.search.prune import Dominance, model_state_bound, state_bytes
from memplan.perf.search.rank import compare, gap, sort_key
from memplan.perf.step import DEFAULT_CPU_BANDWIDTH_GBPS, StepResult
from memplan.perf.time import _breakdown, build_step_model, price_of
from memplan.results.plan import Candidate, PlanResult
from memplan.results.time import describe_layout
from memplan.spec.hardware import GPUSpec
from memplan.spec.layout import Layout
from memplan.spec.setup import TrainingSetup
from memplan.spec.units import format_bytes

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: compute-optimal ~20 tokens per parameter
# CPU RAM per node when --cpu-memory is not given: 1 TiB, below every 8-GPU training node listed here (DGX A100
# 40GB: 1 TB; DGX A100 80GB and DGX H100: 2 TB; AWS p4d: 1,152 GiB; p5: 2 TiB -- vendor datasheets, recalled).
DEFAULT_CPU_MEMORY_BYTES = 2**40
MAX_REFERENCE_CHECKS = 200  # full estimates spent finding which faster layouts fit, for the reference's rank


MAX_TOP = 1000


def check_options(**opts) -> None:
    """The search's whole-number options, each a whole number within its bound or one MemplanError naming it:
    the CLI's types check them, the Python API passes what it is given (max_gpus=inf would loop, global_batch=0
    divide by zero, steps=-1 give negative days)."""
    from memplan.spec.layout import MAX_GPUS, MAX_MICRO_BATCH
    from memplan.perf.time import MAX_GLOBAL_BATCH, MAX_STEPS, check_count

    bounds = {"global_batch": MAX_GLOBAL_BATCH, "top": MAX_TOP, "max_gpus": MAX_GPUS, "steps": MAX_STEPS,
              "max_micro_batch": MAX_MICRO_BATCH}
    for key, bound in bounds.items():
        if opts.get(key) is not None:
            check_count(opts[key], "--" + key.replace("_", "-"), bound)
    for n in opts.get("gpus") or ():
        check_count(n, "--gpus", MAX_GPUS)


def gpu_counts_upto(start: int, stop: int, gpn: int) -> list[int]:
    """1, 2, 4, ... up to a node, then whole nodes: the counts --min-gpus tries, ascending."""
    small = [n for n in (1, 2, 4) if n < gpn]
    return [n for n in small + list(range(gpn, stop + 1, gpn)) if start <= n <= stop]


class _Search:
    """The state one plan() call shares between its phases."""

    def __init__(self, setup: TrainingSetup, gpu: GPUSpec, cpu_memory: int, progress):
        self.setup, self.gpu, self.cpu_memory, self.progress = setup, gpu, cpu_memory, progress
        self.dominance = Dominance()
        self.checked = self.rejected = self.skipped = self.rejected_cpu = 0
        self.memo: dict[Layout, tuple[bool, int, int]] = {}
        self.last_report = _time.perf_counter()

    def report(self, msg: str) -> None:
        now = _time.perf_counter()
        if self.progress and now - self.last_report > 1.0:
            self.last_report = now
            self.progress(msg)

    def fits(self, L: Layout) -> tuple[bool, int, int]:
        """(fits, GPU bytes required, CPU bytes per node) from the full estimate, dominance first."""
        got = self.memo.get(L)
        if got is not None:
            return got
        if self.dominance.dominated(L):
            self.skipped += 1
            self.rejected += 1
            return False, 0, 0
        self.checked += 1
        try:
            valid = Layout.model_validate(L.model_dump())
            est = estimate_memory(self.setup.model_copy(update={"layout": valid}), self.gpu)
        except MemplanError:
            self.rejected += 1
            self.memo[L] = (False, 0, 0)
            return False, 0, 0
        ok = bool(est.fits)
        cpu = est.cpu.total
        if ok and cpu > self.cpu_memory:
            ok = False
            self.rejected_cpu += 1
        if not ok:
            self.rejected += 1
            self.dominance.record_failure(L)
        got = (ok, est.per_gpu.required, cpu)
        self.memo[L] = got
        return got


def plan(setup: TrainingSetup, gpu: GPUSpec, *, global_batch: int, gpus: list[int] | None = None, by: str = "time",
         top: int = 5, min_gpus: bool = False, max_gpus: int = 4096, tokens: float | None = None,
         steps: int | None = None, overlap: str = "auto", interconnect: str | None = None,
         internode: str | None = None, price: float | None = None, max_micro_batch: int | None = None,
         cpu_memory_bytes: int | None = None, fixed: dict | None = None,
         cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS, execution: str | None = None,
         kernel_scale: float = 1.0, system: str | None = None, reference: Layout | None = None,
         progress: Callable[[str], None] | None = None) -> PlanResult:
    if by not in ("time", "cost", None):
        raise MemplanError(f"--by must be time or cost, got {by!r}")
    if global_batch is None:
        raise MemplanError("plan needs --global-batch B (global_batch=B: sequences per optimizer step)")
    check_options(global_batch=global_batch, top=top, max_gpus=max_gpus, steps=steps,
                  max_micro_batch=max_micro_batch, gpus=gpus)
    # None from the API means "not given": the defaults, as the CLI's
    top = 5 if top is None else top
    max_gpus = 4096 if max_gpus is None else max_gpus
    overlap = "auto" if overlap is None else overlap
    kernel_scale = 1.0 if kernel_scale is None else kernel_scale
    cpu_bandwidth_gbps = DEFAULT_CPU_BANDWIDTH_GBPS if cpu_bandwidth_gbps is None else cpu_bandwidth_gbps
    by = "time" if by is None else by
    m = setup.model.arch  # raises the clear "needs an architecture" error for a bare count
    t0 = _time.perf_counter()
    seq = setup.seq
    gpn = setup.layout.gpus_per_node
    cpu_memory = DEFAULT_CPU_MEMORY_BYTES if cpu_memory_bytes is None else int(check_positive(cpu_memory_bytes,
                                                                                              "--cpu-memory"))
    record = None
    if system is not None:
        from memplan.perf.system import load_system

        record = load_system(system, gpu)
    sm = build_step_model(setup, gpu, overlap=overlap, interconnect=interconnect, internode=internode,
                          execution=execution, kernel_scale=kernel_scale, system=record,
                          cpu_bandwidth_gbps=cpu_bandwidth_gbps)
    peak = peak_for(gpu, setup.recipe.compute)
    price_per_hour, price_source = price_of(gpu, price)
    memory = gpu.memory_bytes
    tokens_per_step = global_batch * seq
    assumptions = [f"step times from the op walk (execution {sm.ex.name}, overlap={overlap}, efficiency profile "
                   f"{sm.k.profile.name}" + (", a placeholder" if sm.k.profile.placeholder and record is None else "")
                   + "); `memplan time` with a candidate's flags prints its breakdown and every source",
                   f"CPU RAM per node: {format_bytes(cpu_memory)}" + (" (--cpu-memory)" if cpu_memory_bytes else
                                                                      " (the default: set --cpu-memory)")]
    if tokens is None and steps is None:
        tokens = CHINCHILLA_TOKENS_PER_PARAM * setup.model.parameters.total
        assumptions.append(f"days and cost for {format_count(tokens)} tokens: 20 tokens per parameter (Chinchilla, "
                           "Hoffmann et al. 2022); set --tokens or --steps")
    elif tokens is not None:
        check_positive(tokens, "--tokens")
    n_steps = steps if steps is not None else math.ceil(tokens / tokens_per_step)
    hw_flops = flops_per_token(setup.model, seq, "none").model
    s = _Search(setup, gpu, cpu_memory, progress)
    evaluated = pruned = 0
    per_param = state_bytes(setup)

    def scored_layouts(n: int):
        nonlocal evaluated, pruned
        for L, fam in enumerate_families(m, setup.layout, n, global_batch, seq, max_micro_batch, fixed,
                                          sm.ex.supports):
            evaluated += 1
            try:
                _, params, _, _ = sm.stages(L)
            except MemplanError:
                continue
            bound = model_state_bound(setup, params, L, per_param)
            if bound > memory:
                pruned += 1
                continue
            yield L, fam, bound

    counts = list(gpus or [setup.layout.gpus])
    found_min: int | None = None
    if min_gpus:
        for n in gpu_counts_upto(1, max_gpus, gpn):
            # per family (all but micro-batch and recompute) the smallest micro-batch with the most recomputation
            # needs the least memory, so it alone decides whether the family can fit
            frugal: dict[tuple, tuple] = {}
            for L, f, bound in scored_layouts(n):
                rank = (L.micro_batch, -RECOMPUTE_ORDER.index(L.recompute))
                if f not in frugal or rank < frugal[f][1]:
                    frugal[f] = (bound, rank, L)
            for _, _, L in sorted(frugal.values(), key=lambda v: v[0]):
                if s.fits(L)[0]:
                    found_min = n
                    break
            s.report(f"memplan plan: --min-gpus tried {n} GPUs ({evaluated:,} strategies, {s.checked} full "
                     "estimates)")
            if found_min:
                break
        if found_min is None:
            raise MemplanError(f"nothing fits on up to {max_gpus} x {gpu.name} at global batch {global_batch}; "
                               "raise --max-gpus, or lower --global-batch or --seq")
        counts = [found_min]

    scored: list[tuple] = []
    frugal: dict[tuple, tuple] = {}  # family -> (its least memory-hungry member's rank, the member)
    for n in counts:
        for L, f, bound in scored_layouts(n):
            r = sm.evaluate(L)
            scored.append((sort_key(r.step, L, by), L, bound, r, f))
            rank = (L.micro_batch, -RECOMPUTE_ORDER.index(L.recompute))
            cur = frugal.get(f)
            if cur is None or rank < cur[0]:
                frugal[f] = (rank, L)
        s.report(f"memplan plan: {evaluated:,} strategies scored")
    if not scored:
        pins = f"; pinned by flags: {fixed}" if fixed else ""
        raise MemplanError(f"no layout of {counts} GPUs is possible at global batch {global_batch}: TP must divide "
                           "the attention heads and fit in a node, the data-parallel size must divide the global "
                           f"batch, and the model states must fit {format_bytes(memory)}{pins}")
    scored.sort(key=lambda x: x[0])

    def candidate(L: Layout, r: StepResult, bound: float, required: int, cpu: int, rank: int, why: str) -> Candidate:
        tps = tokens_per_step / r.step
        gpu_hours = n_steps * r.step * L.gpus / 3600
        valid = Layout.model_validate(L.model_dump())
        return Candidate(layout=valid, rank=rank, memory_required_bytes=required,
                         memory_lower_bound_bytes=int(bound), cpu_memory_bytes=cpu, fits=required <= memory,
                         step_seconds=r.step, compute_seconds=r.compute, bubble_seconds=r.bubble,
                         exposed_comm_seconds=r.exposed_comm, mfu=hw_flops * tps / (L.gpus * peak * 1e12),
                         tokens_per_second=tps, days=n_steps * r.step / 86400, gpu_hours=gpu_hours,
                         cost=gpu_hours * price_per_hour if price_per_hour is not None else None,
                         breakdown=_breakdown(r), why=why)

    chosen: list[tuple[Layout, StepResult, float, int, int]] = []
    fastest_unfit = None
    family_fits: set[tuple] = set()
    for key, L, bound, r, f in scored:
        if f not in family_fits and frugal[f][1] is not L:
            # check the family's most frugal member first: if it fails, dominance rejects the whole family
            s.fits(frugal[f][1])
        ok, required, cpu = s.fits(L)
        if not ok:
            if fastest_unfit is None:
                fastest_unfit = (L, r, required, cpu)
            s.report(f"memplan plan: {s.checked} full memory estimates, {len(chosen)} fit so far")
            continue
        family_fits.add(f)
        chosen.append((L, r, bound, required, cpu))
        if len(chosen) >= top:
            break
    if not chosen:
        need = ""
        if fastest_unfit is not None:
            L, _, required, cpu = fastest_unfit
            need = (f"; the fastest layout ({describe_layout(L)}) needs "
                    + (f"{format_bytes(required)} per GPU" if required else "more than the GPU holds")
                    + (f" and {format_bytes(cpu)} of CPU RAM per node" if cpu > cpu_memory else ""))
        if s.rejected_cpu:
            need += (f"; {s.rejected_cpu} layout(s) fit the GPU but need more than {format_bytes(cpu_memory)} of "
                     "CPU RAM per node")
        raise MemplanError(f"no strategy fits on {counts} x {gpu.name} ({format_bytes(memory)}, "
                           f"{format_bytes(cpu_memory)} CPU RAM per node){need}; try --min-gpus, more --gpus, a "
                           "smaller --global-batch/--seq, or --cpu-memory if your nodes hold more")
    best_r = chosen[0][1]
    from memplan.perf.time import check_mfu

    check_mfu(hw_flops * tokens_per_step / best_r.step / (chosen[0][0].gpus * peak * 1e12), kernel_scale)
    cands = []
    for i, (L, r, bound, required, cpu) in enumerate(chosen, 1):
        if i == 1:
            why = "the fastest that fits" if by == "time" else "the cheapest that fits"
            if len(chosen) > 1:
                why += f"; against #2: {compare(r, chosen[1][1])}"
        else:
            why = f"{gap(best_r.step, r.step)} step time vs #1: {compare(best_r, r)}"
        cands.append(candidate(L, r, bound, required, cpu, i, why))

    ref = ref_rank = None
    why_lines = _why(cands, chosen, fastest_unfit, memory, cpu_memory, by, s)
    if reference is not None:
        ref, ref_rank, lines = _rank_reference(reference, sm, s, scored, chosen, setup, memory, by, candidate)
        why_lines += lines
    elapsed = _time.perf_counter() - t0
    if fixed:
        assumptions.append("pinned by flags: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    sup = sm.ex.supports
    limits = [name for name, ok in (("sequence parallelism", sup.sequence_parallel), ("CP", sup.context_parallel),
                                    ("EP", sup.expert_parallel), ("interleaving", sup.interleaving),
                                    ("uneven stages", sup.uneven_stages), ("offload", sup.offload)) if not ok]
    assumptions.append("searched: " + SEARCH_RULES + f"; limited to what {sm.ex.name} supports: recompute "
                       f"{'/'.join(sup.recompute)}, ZeRO {'/'.join(map(str, sup.zero))}"
                       + (f", no {', no '.join(limits)}" if limits else "") + " (a pinned flag wins)")
    kernels = sm.k.describe()
    best = cands[0]
    achieved = flops_per_token(setup.model, seq, best.layout.recompute, False,
                               best.layout.recompute_every).hardware * best.tokens_per_second / \
        best.layout.gpus / 1e12
    return PlanResult(
        model=setup.model.name, parameters=setup.model.parameters.total, gpu=gpu.name, gpu_memory_bytes=memory,
        gpus=counts, global_batch=global_batch, seq=seq, precision=setup.recipe.name, by=by, overlap=overlap,
        execution=sm.ex.name, efficiency=achieved / peak,
        efficiency_source=f"the best candidate's op walk ({achieved:.1f} TFLOP/s of {peak:g})", kernels=kernels,
        price_per_hour=price_per_hour, price_source=price_source, tokens=float(n_steps * tokens_per_step),
        steps=n_steps, cpu_memory_bytes=cpu_memory, candidates=cands, evaluated=evaluated, pruned_by_bound=pruned,
        checked_full=s.checked, rejected_full=s.rejected, rejected_cpu_memory=s.rejected_cpu,
        skipped_dominated=s.skipped, search_seconds=elapsed,
        candidates_per_second=evaluated / elapsed if elapsed else 0.0, min_gpus=found_min, reference=ref,
        reference_rank=ref_rank, why=why_lines, assumptions=assumptions)


def _why(cands: list[Candidate], chosen, fastest_unfit, memory: int, cpu_memory: int, by: str, s: _Search) -> list[str]:
    best = cands[0]
    L = best.layout
    out = [f"best: {describe_layout(L)} on {L.gpus} GPUs: {best.step_seconds:.3f} s/step (compute "
           f"{best.compute_seconds:.3f}, exposed comm {best.exposed_comm_seconds:.3f}, bubble "
           f"{best.bubble_seconds:.3f}), needs {format_bytes(best.memory_required_bytes)} of {format_bytes(memory)}"
           + (f" and {format_bytes(best.cpu_memory_bytes)} of CPU RAM per node" if best.cpu_memory_bytes else "")]
    for c in cands[1:]:
        what = "cost" if by == "cost" else "step time"
        out.append(f"#{c.rank} {describe_layout(c.layout)}: {c.why.replace('step time', what, 1)}")
    if fastest_unfit is not None:
        Lu, ru, required, cpu = fastest_unfit
        if ru.step < best.step_seconds:
            if cpu > cpu_memory:
                need = f"needs {format_bytes(cpu)} of CPU RAM per node (> {format_bytes(cpu_memory)})"
            elif required:
                need = f"needs {format_bytes(required)} per GPU (> {format_bytes(memory)})"
            else:
                need = "does not fit (a smaller micro-batch with as much recomputation already failed)"
            shown = describe_layout(Lu) + (" rc:none" if Lu.recompute == "none" else "")  # the table's rc column
            out.append(f"faster layouts do not fit: the fastest, {shown} ({ru.step:.3f} s/step), "
                       f"{need}")
    if s.rejected_cpu:
        out.append(f"{s.rejected_cpu} layout(s) that fit the GPU were dropped for CPU RAM: more than "
                   f"{format_bytes(cpu_memory)} per node")
    return out


def _rank_reference(reference: Layout, sm, s: _Search, scored, chosen, setup, memory, by, candidate):
    """Time and estimate the reference layout; its rank = 1 + the fitting layouts faster than it."""
    from memplan.perf.search.prune import model_state_bound

    r = sm.evaluate(reference)
    _, params, _, _ = sm.stages(reference)
    bound = model_state_bound(setup, params, reference)
    ok, required, cpu = s.fits(reference)
    key = sort_key(r.step, reference, by)
    faster = [(k, L) for k, L, _, _, _ in scored if k < key and L != reference]
    fit_faster, checked, unknown = 0, 0, 0
    for _, L in faster:
        if L in s.memo or checked < MAX_REFERENCE_CHECKS:
            if L not in s.memo:
                checked += 1
            if s.fits(L)[0]:
                fit_faster += 1
        else:
            unknown += 1
    rank = fit_faster + 1
    ref = candidate(reference, r, bound, required, cpu, rank if ok else 0, "")
    best_L, best_r = chosen[0][0], chosen[0][1]
    counted = (f"{len(faster)} scored faster, {fit_faster} of them fit" + (f", {unknown} not checked" if unknown
                                                                          else ""))
    if ok:
        lines = [f"reference {describe_layout(reference)}: {r.step:.3f} s/step, fits; rank {rank} among the "
                 f"layouts that fit ({counted})"]
    else:  # a layout that does not fit is not ranked among those that do (issue 22)
        lines = [f"reference {describe_layout(reference)}: {r.step:.3f} s/step, does NOT fit "
                 f"({format_bytes(required)} per GPU of {format_bytes(memory)}): not ranked; by time alone it would "
                 f"come after {fit_faster} faster layout(s) that fit ({counted})"]
        rank = None
    if reference == best_L:
        lines.append("reference: it is the planner's best")
    else:
        lines.append(f"reference vs the best ({describe_layout(best_L)}): {gap(best_r.step, r.step)} step time; "
                     f"{compare(best_r, r, top=3)}")
    ref.why = lines[-1]
    return ref, rank, lines
