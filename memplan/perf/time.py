"""`memplan time`: the step of a layout (the op walk, perf/step.py) or an end-to-end figure, then FLOPs, days,
GPU-hours, cost and whether it fits.

Two ways to get the step, never mixed:
  - the op walk (default): every kernel of every layer on the busiest pipeline stage at the GPU's efficiency
    profile (profiles/efficiency/, each curve with its source; `--kernel-scale` multiplies the kernel
    efficiencies, `--system RUN.json` replaces them by a `memplan bench --system` record), communication as it
    overlaps, the pipeline schedule;
  - an end-to-end figure: `--achieved-tflops X` (hardware FLOPs per GPU per second over the whole step, as
    Megatron-LM reports it: the step takes hardware FLOPs / X and prints X), `--mfu X` (model FLOPs / peak, as
    PaLM reports it) or `--measured RUN.json` (a `memplan profile --device cuda` record's achieved TFLOP/s).
    The walk's prediction is still computed and shown beside it.
"""
from __future__ import annotations

import math

from memplan.errors import MemplanError
from memplan.perf.comm import Network, resolve_links
from memplan.perf.efficiency import Kernels, check_positive, efficiency_profile, peak_for
from memplan.perf.execution import execution_profile
from memplan.perf.flops import flops_per_token
from memplan.perf.step import (CPU_ADAM_BYTES_PER_PARAM, DEFAULT_CPU_BANDWIDTH_GBPS, OVERLAP_MODES, StepModel,
                               StepResult, attention_kernel)
from memplan.results.time import (CommItem, Efficiency, FlopsPerToken, KernelEfficiency, StageTime, StepBreakdown,
                                  TimeEstimate, describe_layout)
from memplan.spec.hardware import GPUSpec
from memplan.spec.layout import MAX_GRAD_ACCUM, Layout
from memplan.spec.setup import TrainingSetup


def price_of(gpu: GPUSpec, price: float | None) -> tuple[float | None, str | None]:
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise MemplanError(f"--price must be a finite number, zero or more, got {price}")
        return price, "--price"
    if gpu.price_per_hour is not None:
        src = next((s for s in gpu.sources if s.startswith("price_per_hour")), "")
        return gpu.price_per_hour, f"labelled default of the {gpu.name} profile: {src.removeprefix('price_per_hour: ')}"
    return None, None


MAX_STEPS = 10**15  # optimizer steps: at a millisecond each, 30,000 years
MAX_GLOBAL_BATCH = 1 << 40  # sequences per step: the Layout bounds (micro-batch x accumulation x GPUs) are below


def check_count(value, flag: str, maximum: int, minimum: int = 1) -> int:
    """A whole number in [minimum, maximum] (a whole float such as 8.0 counts), else one MemplanError naming
    the flag: the API passes what a caller gives (inf, -1, 0, '8', True), the CLI's types are checked already."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if len(repr(value)) < 40 else type(value).__name__
        raise MemplanError(f"{flag} must be a whole number, got {shown}")
    if not minimum <= value <= maximum:
        raise MemplanError(f"{flag} must be from {minimum:,} to {maximum:,}, got {value:,}")
    return value


def check_mfu(hfu: float, kernel_scale: float) -> None:
    """The op walk's hardware FLOPs per second over the GPU's dense peak: above 1 no GPU runs it.  Only a
    --kernel-scale above the profile's calibration can get there; refuse it, saying which scale would stay
    within the peak (the compute scales with it, communication and the bubble do not: an upper estimate)."""
    if hfu <= 1:
        return
    if kernel_scale != 1:
        raise MemplanError(f"--kernel-scale {kernel_scale:g} makes the kernels run at {hfu:.0%} of the GPU's dense "
                           f"peak (MFU over 100%): no GPU runs faster than its peak; use --kernel-scale "
                           f"{math.floor(kernel_scale / hfu * 100) / 100:g} or less")
    raise MemplanError(f"the op walk runs at {hfu:.0%} of the GPU's dense peak (MFU over 100%): the efficiency "
                       "profile or --system record overstates the kernels")


def gpu_hours_for(tokens: float, tokens_per_second_per_gpu: float) -> float:
    """GPU-hours to process `tokens` at a per-GPU rate (how LLaMA's Table 15 figures are made)."""
    return tokens / tokens_per_second_per_gpu / 3600


def steps_for(tokens: float | None, steps: int | None, tokens_per_step: int) -> tuple[int, float]:
    if steps is not None and tokens is not None:
        raise MemplanError("give --tokens or --steps, not both")
    if steps is not None:
        steps = check_count(steps, "--steps", MAX_STEPS)
        return steps, float(steps) * tokens_per_step
    if tokens is None:
        raise MemplanError("say how long to train: --tokens 300B, or --steps N with --global-batch B")
    check_positive(tokens, "--tokens")
    n = math.ceil(tokens / tokens_per_step)
    return n, float(tokens)


def layout_for_batch(layout: Layout, global_batch: int | None) -> Layout:
    """--global-batch sets gradient accumulation = B / (micro-batch x dp)."""
    if global_batch is None:
        return layout
    global_batch = check_count(global_batch, "--global-batch", MAX_GLOBAL_BATCH)
    per_step = layout.micro_batch * layout.dp
    if global_batch % per_step:
        raise MemplanError(f"--global-batch {global_batch} is not a multiple of micro-batch x dp = "
                           f"{layout.micro_batch} x {layout.dp} = {per_step}; change --micro-batch, --gpus, --tp, "
                           "--pp or --cp")
    ga = global_batch // per_step
    if ga > MAX_GRAD_ACCUM:
        raise MemplanError(f"--global-batch {global_batch:,} over micro-batch x dp = {per_step:,} is {ga:,} "
                           f"accumulation steps; the limit is {MAX_GRAD_ACCUM:,}: raise --micro-batch or --gpus")
    if layout.grad_accum not in (1, ga):
        raise MemplanError(f"--grad-accum {layout.grad_accum} contradicts --global-batch {global_batch} "
                           f"(= micro-batch {layout.micro_batch} x dp {layout.dp} x {ga}); drop one")
    return layout.replace(grad_accum=ga)


def build_step_model(setup: TrainingSetup, gpu: GPUSpec, *, overlap: str = "auto", interconnect: str | None = None,
                     internode: str | None = None, execution: str | None = None, kernel_scale: float = 1.0,
                     system=None, cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS) -> StepModel:
    """The walk's machinery for a setup (the planner builds it once and evaluates many layouts)."""
    check_positive(cpu_bandwidth_gbps, "--cpu-bandwidth")
    if overlap not in OVERLAP_MODES:
        raise MemplanError(f"--overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap!r}")
    links = resolve_links(gpu, interconnect, internode)
    profile = efficiency_profile(gpu)
    kernels = Kernels(gpu, setup.recipe.compute, profile, kernel_scale, system)
    net = Network(links, profile, setup.layout.gpus_per_node, system)
    ex = execution_profile(execution, setup.layout.engine)
    trainable = 1.0
    if setup.lora is not None:
        from memplan.memory.lora import adapter_parameters, resolve_targets

        names = setup.lora.roles or resolve_targets(setup.model.arch, setup.lora.targets)
        trainable = min(1.0, adapter_parameters(setup.model.arch, setup.lora.rank, names) /
                        max(setup.model.parameters.total, 1))
    return StepModel(setup.model.arch, setup.recipe, setup.optimizer, setup.seq, kernels, net, ex,
                     attention_kernel(setup.workload.attention), overlap, cpu_bandwidth_gbps, trainable)


def _end_to_end(f: FlopsPerToken, tokens_per_gpu: float, peak: float, mfu: float | None,
                achieved_tflops: float | None, measured: str | None) -> tuple[float, str, float | None] | None:
    """(step seconds, source, measured step) from an end-to-end figure, or None for the walk."""
    given = [x is not None for x in (mfu, achieved_tflops, measured)]
    if sum(given) > 1:
        raise MemplanError("give at most one of --mfu, --achieved-tflops and --measured")
    if mfu is not None:
        check_positive(mfu, "--mfu")
        if mfu > 1:
            raise MemplanError(f"--mfu must be in (0, 1], got {mfu}")
        return f.model * tokens_per_gpu / (mfu * peak * 1e12), f"--mfu {mfu:g} (end to end: model FLOPs / " \
                                                               f"({mfu:g} x {peak:g} TFLOP/s))", None
    if achieved_tflops is not None:
        check_positive(achieved_tflops, "--achieved-tflops")
        if achieved_tflops > peak:
            raise MemplanError(f"--achieved-tflops must be in (0, {peak:g}] (the dense peak), got {achieved_tflops:g}")
        return f.hardware * tokens_per_gpu / (achieved_tflops * 1e12), \
            f"--achieved-tflops {achieved_tflops:g} (end to end: hardware FLOPs / {achieved_tflops:g} TFLOP/s)", None
    if measured is not None:
        from memplan.perf.system import measured_step

        tflops, step = measured_step(measured)
        if tflops > peak * 1.05:
            raise MemplanError(f"{measured}: {tflops:.1f} TFLOP/s exceeds the {peak:g} TFLOP/s dense peak")
        return f.hardware * tokens_per_gpu / (tflops * 1e12), \
            f"measured {tflops:.1f} TFLOP/s in {measured} (end to end)", step
    return None


def _breakdown(r: StepResult) -> StepBreakdown:
    return StepBreakdown(
        step_seconds=r.step, gemm_seconds=r.gemm, attention_seconds=r.attention, memory_bound_seconds=r.memory,
        tp_exposed_seconds=r.tp_exposed, tp_hidden_seconds=r.tp_hidden, cp_exposed_seconds=r.cp_exposed,
        ep_exposed_seconds=r.ep_exposed, pp_p2p_seconds=r.p2p, bubble_seconds=r.bubble,
        dp_exposed_seconds=r.dp_exposed, dp_total_seconds=r.dp_total, optimizer_seconds=r.optimizer,
        offload_exposed_seconds=r.offload_exposed, micro_batches=r.micro_batches, busiest_stage=r.busiest,
        stages=[StageTime(stage=i, layers=n, forward_seconds=f, backward_seconds=b, busiest=i == r.busiest)
                for i, (n, f, b) in enumerate(zip(r.stage_layers, r.stage_forward, r.stage_backward))])


def estimate_time(setup: TrainingSetup, gpu: GPUSpec, *, tokens: float | None = None, steps: int | None = None,
                  global_batch: int | None = None, mfu: float | None = None, achieved_tflops: float | None = None,
                  measured: str | None = None, overlap: str = "auto", interconnect: str | None = None,
                  internode: str | None = None, price: float | None = None, causal: bool = False,
                  cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS, execution: str | None = None,
                  kernel_scale: float = 1.0, system: str | None = None) -> TimeEstimate:
    """Time, GPU-hours and cost of training `setup` on `gpu` for `tokens` (or `steps` optimizer steps): the seconds
    only; memplan.answers.time.estimate_time adds the memory verdict (`memplan time`'s answer)."""
    # None from the API means "not given": the defaults, as the CLI's
    causal = bool(causal) if causal is not None else False
    overlap = "auto" if overlap is None else overlap
    kernel_scale = 1.0 if kernel_scale is None else kernel_scale
    cpu_bandwidth_gbps = DEFAULT_CPU_BANDWIDTH_GBPS if cpu_bandwidth_gbps is None else cpu_bandwidth_gbps
    layout = layout_for_batch(setup.layout, global_batch)
    setup = setup.model_copy(update={"layout": layout})
    seq = setup.seq
    peak = peak_for(gpu, setup.recipe.compute)
    tokens_per_step = layout.global_batch * seq
    n_steps, n_tokens = steps_for(tokens, steps, tokens_per_step)
    f = flops_per_token(setup.model, seq, layout.recompute, causal, layout.recompute_every)
    tokens_per_gpu = tokens_per_step / layout.gpus
    given = _end_to_end(f, tokens_per_gpu, peak, mfu, achieved_tflops, measured)
    record = None
    if system is not None:
        from memplan.perf.system import load_system

        record = load_system(system, gpu)

    walk: StepResult | None = None
    kernels: list[KernelEfficiency] = []
    ex_name = ""
    assumptions: list[str] = []
    links = resolve_links(gpu, interconnect, internode)
    if setup.model.architecture is not None:
        from memplan.memory.layout import check_layout

        check_layout(setup.model.arch, layout)
        sm = build_step_model(setup, gpu, overlap=overlap, interconnect=interconnect, internode=internode,
                              execution=execution, kernel_scale=kernel_scale, system=record,
                              cpu_bandwidth_gbps=cpu_bandwidth_gbps)
        walk = sm.evaluate(layout, detail=True)
        kernels = sm.k.describe()
        ex_name = sm.ex.name
        kernels.append(KernelEfficiency(name=f"execution profile {sm.ex.name}", value=None,
                                        source=sm.ex.description + "; " + "; ".join(sm.ex.sources[:1])))
        kernels.append(KernelEfficiency(name=f"intra-node collectives ({links.intra.name})", value=sm.net.intra_eff,
                                        source=sm.net.sources["intra"]))
        kernels.append(KernelEfficiency(name=f"inter-node collectives ({links.inter.name})", value=sm.net.inter_eff,
                                        source=sm.net.sources["inter"]))
        if sm.k.profile.placeholder and record is None:
            assumptions.append(f"the {gpu.name}'s efficiency profile ({sm.k.profile.name}) is a stated placeholder "
                               "(no published sweep or calibrated run of this GPU): measure yours with "
                               "`memplan bench --system` and pass --system")
    elif given is None:
        # a bare parameter count: no layers to walk; the GPU profile's end-to-end default
        step = f.hardware * tokens_per_gpu / (peak * 1e12 * gpu.default_mfu)
        given = (step, f"the {gpu.name} profile's default end-to-end efficiency {gpu.default_mfu:g} (a bare "
                       "parameter count has no layers to walk; its notes cite the figure)", None)

    if given is not None:
        step, step_source, measured_step = given
        compute, bubble, exposed = step, 0.0, 0.0
    else:
        step, step_source, measured_step = walk.step, "op walk", None
        compute, bubble, exposed = walk.compute, walk.bubble, walk.exposed_comm
    predicted = walk.step if walk is not None else step

    tps = tokens_per_step / step
    seconds = n_steps * step
    gpu_hours = gpu_hours_for(n_steps * tokens_per_step, tps / layout.gpus)
    price_per_hour, price_source = price_of(gpu, price)
    achieved = f.hardware * tps / layout.gpus / 1e12
    comm = [] if walk is None else [
        CommItem(name=i.name, parallelism=i.parallelism, group=i.group, link=i.link, bandwidth_gbps=i.busbw / 1e9,
                 bytes_per_step=i.bytes_sent, seconds=i.seconds, exposed_seconds=i.exposed,
                 hidden_under=i.hidden_under) for i in walk.items]
    assumptions = _assumptions(setup, gpu, layout, f, walk, given is not None, step_source, overlap, links,
                               causal, cpu_bandwidth_gbps, predicted, peak) + assumptions
    est = TimeEstimate(
        model=setup.model.name, parameters=setup.model.parameters.total, gpu=gpu.name, layout=layout,
        precision=setup.recipe.name, compute_dtype=setup.recipe.compute.value, execution=ex_name, peak_tflops=peak,
        efficiency=Efficiency(value=achieved / peak, source=step_source), kernels=kernels, overlap=overlap,
        links={"intra": links.intra.name, "inter": links.inter.name, "host": links.host.name},
        flops=f, flops_per_token=f.model, hardware_flops_per_token=f.hardware,
        global_batch=layout.global_batch, seq=seq, tokens_per_step=tokens_per_step, steps=n_steps, tokens=n_tokens,
        step_seconds=step, step_source=step_source, predicted_step_seconds=predicted,
        compute_seconds=compute, bubble_seconds=bubble, exposed_comm_seconds=exposed,
        comm_seconds=walk.comm_total if walk is not None else 0.0, comm=comm,
        walk=_breakdown(walk) if walk is not None else None,
        tokens_per_second=tps, tokens_per_second_per_gpu=tps / layout.gpus,
        mfu=f.model * tps / (layout.gpus * peak * 1e12), hfu=f.hardware * tps / (layout.gpus * peak * 1e12),
        achieved_tflops_per_gpu=achieved, seconds=seconds, days=seconds / 86400, gpu_hours=gpu_hours,
        price_per_hour=price_per_hour, price_source=price_source,
        cost=gpu_hours * price_per_hour if price_per_hour is not None else None,
        measured_step_seconds=measured_step, assumptions=assumptions, assumed=setup.assumed)
    if walk is not None and given is None:
        check_mfu(est.hfu, kernel_scale)
    return est


def _assumptions(setup, gpu, layout, f, walk, end_to_end, step_source, overlap, links, causal, cpu_bw, predicted,
                 peak) -> list[str]:
    out = [] if f.exact else [
        "bare parameter count: FLOPs by the 6N rule, attention not counted; give an architecture for the exact count "
        "and the op walk"]
    if end_to_end and walk is not None:
        out.append(f"step from {step_source}; the op walk at the efficiencies below predicts {predicted:.3f} s "
                   f"({f.hardware * layout.global_batch * setup.seq / layout.gpus / predicted / 1e12:.1f} TFLOP/s "
                   "per GPU)")
    elif walk is not None:
        out.append("step = the op walk: every GEMM, attention kernel and memory-bound op of the busiest pipeline "
                   "stage at the efficiencies listed, communication as it overlaps, the pipeline schedule")
    out += [
        f"overlap={overlap}: {OVERLAP_MODES.get(overlap, '')}",
        "FLOPs: matrix products only (PaLM app. B); attention counted "
        + ("over the causal half" if causal else "over the full sequence, as PaLM and Megatron count it"),
        f"links: intra-node {links.intra.name} {links.intra.bandwidth_gbps:g} GB/s, inter-node {links.inter.name} "
        f"{links.inter.bandwidth_gbps:g} GB/s, host {links.host.name} {links.host.bandwidth_gbps:g} GB/s per GPU "
        "per direction; ring collectives, ranks ordered TP, CP, DP, PP; a group spanning nodes drives one NIC per "
        "rank on each node; an expert-parallel all-to-all sends to other nodes through each GPU's own NIC",
    ]
    if layout.pp > 1 and walk is not None:
        out.append(f"pipeline: {'interleaved ' if layout.virtual_stages > 1 else ''}1F1B, {layout.grad_accum} "
                   f"micro-batches, {layout.virtual_stages} virtual stage(s), layers per stage "
                   f"{walk.stage_layers}; the embedding on the first stage, the LM head and loss on the last; "
                   f"stage {walk.busiest} sets the pace")
    if setup.workload.attention == "eager":
        out.append("attention eager: scores Q K^T, softmax and P V through HBM (as Megatron-LM 2021/2022 and "
                   "transformers' eager attention run it)")
    if layout.offload_optimizer != "none":
        out.append(f"CPU optimizer step: memory-bound, {CPU_ADAM_BYTES_PER_PARAM} bytes per parameter at "
                   f"{cpu_bw:g} GB/s host memory bandwidth per node (--cpu-bandwidth)")
    return out


__all__ = ["check_count", "check_mfu", "estimate_time", "build_step_model", "layout_for_batch", "price_of", "gpu_hours_for", "steps_for",
           "describe_layout", "DEFAULT_CPU_BANDWIDTH_GBPS", "OVERLAP_MODES"]
