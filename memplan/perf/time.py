"""Step time: compute, the pipeline bubble and exposed communication; then days, GPU-hours and cost.

  compute  = hardware FLOPs per GPU per step / (dense peak for the recipe's compute dtype x efficiency)
  bubble   = compute x (p-1) / (v m)      1F1B with m micro-batches, v virtual stages: the idle share is
                                          (p-1)/(v m + p-1) of the step (Narayanan et al. 2021, sec. 2.2)
  comm     = bytes per GPU / link bandwidth for each collective (see comm.py); what overlap leaves exposed
  step     = compute + bubble + exposed comm
The efficiency is always explicit (`Efficiency.source`): the GPU profile's default for its generation, `--mfu`,
`--achieved-tflops`, or a measured `memplan profile` record.  It applies to the FLOPs the GPU executes
(recomputation included), without communication and bubble, which are added on top: so the MFU reported for the
whole step comes out below the efficiency put in.

`StepModel.evaluate` is the hot loop of `memplan plan` (tens of thousands of layouts per search): it works on
plain numbers, and builds no pydantic objects unless `detail=True`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from memplan.errors import MemplanError
from memplan.perf import comm
from memplan.perf.flops import FlopsPerToken, flops_per_token
from memplan.results.time import CommItem, Efficiency, Layout, TimeEstimate
from memplan.spec.hardware import GPUSpec, InterconnectSpec
from memplan.spec.model import ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import DType, Recipe

OVERLAP_MODES = {
    "none": "no communication overlaps compute: every transfer is on the critical path",
    "dp": "data-parallel gradient reduction overlaps the backward pass it follows (PyTorch DDP buckets, ZeRO "
          "overlap_comm; ZeRO-3 prefetches parameters during forward and backward); tensor-parallel all-reduces, "
          "pipeline sends, the post-step parameter all-gather and offload copies are exposed",
    "all": "all communication overlaps compute, up to the compute time (an optimistic bound)",
}
RECOMPUTE_MODES = ("none", "selective", "full")

# Host memory bandwidth of a node, GB/s: a 2-socket server with 8 DDR4-3200 channels per socket peaks at
# 2 x 8 x 25.6 = 409.6 GB/s (DDR5-4800: 614.4); STREAM-style kernels sustain roughly half to two thirds of peak.
# 200 GB/s is the stated default for the CPU optimizer step of ZeRO-Offload (--cpu-bandwidth to change).
DEFAULT_CPU_BANDWIDTH_GBPS = 200.0
# Bytes one Adam step touches per parameter on the CPU (DeepSpeed CPU-Adam, ZeRO-Offload sec. 5.1): read fp32
# master, exp_avg, exp_avg_sq (12) and the 16-bit gradient (2); write the three fp32 tensors back (12) and the
# 16-bit parameter copy (2). The update is memory-bound at a few FLOPs per parameter.
CPU_ADAM_BYTES_PER_PARAM = 28


@dataclass(frozen=True)
class Links:
    intra: InterconnectSpec
    inter: InterconnectSpec
    host: InterconnectSpec


def resolve_links(gpu: GPUSpec, interconnect: str | None = None, internode: str | None = None,
                  host_link: str | None = None) -> Links:
    """The GPU profile's links unless overridden (--interconnect, --internode)."""
    from memplan.catalog import get_interconnect

    intra_name = interconnect or gpu.interconnect
    if intra_name is None:
        raise MemplanError(f"GPU profile {gpu.name} names no interconnect; pass --interconnect NAME")
    inter_name = internode or gpu.internode or intra_name
    host_name = host_link or gpu.host_link or ("pcie4" if not intra_name.startswith("pcie") else intra_name)
    return Links(get_interconnect(intra_name), get_interconnect(inter_name), get_interconnect(host_name))


def peak_for(gpu: GPUSpec, dtype: DType) -> float:
    key = dtype.value
    if key not in gpu.peak_tflops:
        have = ", ".join(sorted(gpu.peak_tflops))
        hint = " (use --precision fp16-mixed)" if "fp16" in gpu.peak_tflops and key in ("bf16", "fp8") else ""
        raise MemplanError(f"{gpu.name} has no {key} peak in its profile (it has: {have}){hint}")
    return gpu.peak_tflops[key]


def resolve_efficiency(gpu: GPUSpec, peak_tflops: float, mfu: float | None = None,
                       achieved_tflops: float | None = None, measured: str | None = None) -> Efficiency:
    given = [x is not None for x in (mfu, achieved_tflops, measured)]
    if sum(given) > 1:
        raise MemplanError("give at most one of --mfu, --achieved-tflops and --measured")
    if mfu is not None:
        if not 0 < mfu <= 1:
            raise MemplanError(f"--mfu must be in (0, 1], got {mfu}")
        return Efficiency(value=mfu, source=f"--mfu {mfu:g}")
    if achieved_tflops is not None:
        if not 0 < achieved_tflops <= peak_tflops:
            raise MemplanError(f"--achieved-tflops must be in (0, {peak_tflops:g}] (the {gpu.name} dense peak), "
                               f"got {achieved_tflops:g}")
        return Efficiency(value=achieved_tflops / peak_tflops,
                          source=f"--achieved-tflops {achieved_tflops:g} / {peak_tflops:g} peak")
    if measured is not None:
        tflops = measured_tflops(measured)
        return Efficiency(value=min(tflops / peak_tflops, 1.0),
                          source=f"measured {tflops:.1f} TFLOP/s in {measured} / {peak_tflops:g} peak")
    return Efficiency(value=gpu.default_mfu,
                      source=f"the {gpu.generation} default of the {gpu.name} profile; its notes cite the figure")


def measured_tflops(path: str) -> float:
    """Achieved hardware TFLOP/s from a `memplan profile` record (ProfileRecord or MeasuredStep JSON)."""
    from memplan.results.records import load_timing

    step = load_timing(path, "--measured")
    if step.oom:
        raise MemplanError(f"--measured file {path}: the measured step ran out of memory, so it has no timing; "
                           "use a run that completed")
    cuda = step.cuda
    if cuda is not None and cuda.achieved_tflops:
        return cuda.achieved_tflops
    if cuda is not None and cuda.flops_per_step and cuda.step_seconds:
        return cuda.flops_per_step / cuda.step_seconds / 1e12
    raise MemplanError(f"--measured file {path} holds no timing (cuda.achieved_tflops); measure with "
                       "`memplan profile --device cuda`")


def _comm_dtype_bytes(recipe: Recipe) -> float:
    # Activations cross TP/PP links in the compute dtype; fp8 recipes still exchange bf16 activations
    # (Transformer Engine casts to fp8 only inside the GEMMs).
    return max(recipe.compute.bytes, 2) if recipe.compute != DType.fp32 else 4


class StepModel:
    """Everything about a step that does not depend on the layout, precomputed once."""

    def __init__(self, model: ModelSpec, recipe: Recipe, gpu: GPUSpec, seq: int, links: Links, efficiency: Efficiency,
                 overlap: str = "dp", gpus_per_node: int = 8, causal: bool = False,
                 cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS):
        if overlap not in OVERLAP_MODES:
            raise MemplanError(f"--overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap!r}")
        self.model, self.recipe, self.gpu, self.seq, self.links = model, recipe, gpu, seq, links
        self.efficiency, self.overlap, self.gpus_per_node = efficiency, overlap, gpus_per_node
        self.peak_tflops = peak_for(gpu, recipe.compute)
        self.flops = {rc: flops_per_token(model, seq, rc, causal) for rc in RECOMPUTE_MODES}
        self.params = model.parameters.total
        a = model.architecture
        self.layers, self.hidden = (a.n_layers, a.hidden_size) if a is not None else (None, None)
        self.grad_bytes = recipe.gradients.bytes
        self.weight_bytes = recipe.weights.bytes
        self.act_bytes = _comm_dtype_bytes(recipe)
        self.flop_rate = self.peak_tflops * 1e12 * efficiency.value  # executed FLOP/s per GPU
        self.cpu_bandwidth_gbps = cpu_bandwidth_gbps

    def evaluate(self, gpus: int, tp: int, pp: int, zero: int, micro_batch: int, grad_accum: int,
                 recompute: str = "none", offload_optimizer: str = "none", offload_params: str = "none",
                 sequence_parallel: bool = False, virtual_stages: int = 1, detail: bool = False):
        """(step, compute, bubble, exposed_comm, total_comm) seconds; with detail, also the CommItem list."""
        dp = gpus // (tp * pp)
        if self.hidden is None and (tp > 1 or pp > 1):
            self.model.arch  # raises: TP/PP traffic needs the hidden size and layer count
        f = self.flops[recompute]
        tokens = micro_batch * grad_accum * dp * self.seq
        compute = f.hardware * tokens / gpus / self.flop_rate
        bubble = compute * (pp - 1) / (virtual_stages * grad_accum) if pp > 1 else 0.0
        micro_compute = compute / grad_accum
        backward_share = (f.hardware - f.forward) / f.hardware  # backward (+ recompute) share of executed FLOPs
        links, gpn = self.links, self.gpus_per_node
        items: list[tuple] = []  # (name, parallelism, group, link, bytes, seconds, exposed)

        shard = self.params / (tp * pp)
        if dp > 1:
            link = comm.group_link(dp, tp, gpn, links.intra, links.inter)
            vols = comm.zero_volumes(zero, dp, grad_accum, shard, self.grad_bytes, self.weight_bytes)
            secs = {name: comm.seconds(b, link, steps, calls) for name, b, calls, steps in vols}
            # What overlap leaves exposed, per the stated mode (OVERLAP_MODES["dp"]).
            if self.overlap == "dp":
                if zero == 3:
                    exposed_total = max(0.0, sum(secs.values()) - compute)
                    exposed = {n: exposed_total * s / sum(secs.values()) for n, s in secs.items()}
                else:
                    exposed = {}
                    for n, s in secs.items():
                        if n == "param all-gather":
                            exposed[n] = s  # after the optimizer step: nothing left to overlap with
                        elif zero == 2:
                            exposed[n] = max(0.0, s - backward_share * compute)  # every micro-batch's backward
                        else:
                            exposed[n] = max(0.0, s - backward_share * micro_compute)  # the last micro-batch's
            elif self.overlap == "none":
                exposed = dict(secs)
            else:
                exposed = {n: None for n in secs}
            for n, b, _, _ in vols:
                items.append((n, "dp", dp, link, b, secs[n], exposed[n]))

        if tp > 1:
            size = micro_batch * self.seq * self.hidden * self.act_bytes
            calls = grad_accum * (self.layers / pp) * comm.tp_all_reduces_per_layer(recompute)
            b = calls * comm.all_reduce_bytes(size, tp)
            s = comm.seconds(b, links.intra, 2 * (tp - 1), calls)
            name = "activation reduce-scatter/all-gather" if sequence_parallel else "activation all-reduce"
            items.append((name, "tp", tp, links.intra, b, s, s if self.overlap != "all" else None))

        if pp > 1:
            # Activations forward and their gradients backward at each stage boundary, per micro-batch (and per
            # virtual stage); split across the TP group (Narayanan et al. 2021, sec. 4.1 scatter/gather).
            size = micro_batch * self.seq * self.hidden * self.act_bytes / tp
            calls = 2 * grad_accum * virtual_stages
            b = calls * size
            link = links.intra if gpus <= gpn else links.inter
            s = comm.seconds(b, link, 1, calls)
            items.append(("stage send/recv", "pp", 2, link, b, s, s if self.overlap != "all" else None))

        host_shard = shard / max(dp, 1) if zero >= 1 else shard
        if offload_optimizer != "none":
            # ZeRO-Offload (Ren et al. 2021, sec. 4): gradients down to the CPU, updated parameters back, per step.
            b = host_shard * (self.grad_bytes + self.weight_bytes)
            s = comm.seconds(b, links.host)
            items.append(("optimizer offload (grads down, params up)", "offload", 1, links.host, b, s,
                          s if self.overlap != "all" else None))
            # The CPU runs the optimizer for the shards of every GPU on its node; it is memory-bound, and without
            # ZeRO-Offload's delayed parameter update it sits between backward and the next forward.
            on_node = min(gpus, gpn)
            cpu_b = host_shard * on_node * CPU_ADAM_BYTES_PER_PARAM
            cpu_link = InterconnectSpec(name="host-memory", bandwidth_gbps=self.cpu_bandwidth_gbps, latency_us=0,
                                        scope="intra-node")
            cs = cpu_b / (self.cpu_bandwidth_gbps * 1e9)
            items.append((f"CPU optimizer step ({on_node} GPU shards per node)", "offload", 1, cpu_link, cpu_b, cs,
                          cs if self.overlap != "all" else None))
        if offload_params != "none":
            # ZeRO-Infinity/ZeRO-3 offload: each GPU fetches its parameter shard from host memory for forward and
            # again for backward, every micro-batch.
            b = grad_accum * 2 * host_shard * self.weight_bytes
            s = comm.seconds(b, links.host)
            items.append(("parameter offload fetch", "offload", 1, links.host, b, s,
                          s if self.overlap != "all" else None))

        total_comm = sum(it[5] for it in items)
        if self.overlap == "all":
            exposed_comm = max(0.0, total_comm - compute)
            items = [(*it[:6], it[5] * exposed_comm / total_comm if total_comm else 0.0) for it in items]
        else:
            exposed_comm = sum(it[6] for it in items)
        step = compute + bubble + exposed_comm
        if not detail:
            return step, compute, bubble, exposed_comm, total_comm
        comm_items = [CommItem(name=n, parallelism=p, group=g, link=l.name, bandwidth_gbps=l.bandwidth_gbps,
                               bytes_per_step=b, seconds=s, exposed_seconds=e) for n, p, g, l, b, s, e in items]
        return step, compute, bubble, exposed_comm, total_comm, comm_items

    def memory_lower_bound(self, tp: int, pp: int, dp: int, zero: int, offload_optimizer: str,
                           offload_params: str, optimizer_bytes_per_param: float) -> float:
        """Model-state bytes per GPU with an even TP/PP split: a floor under the full estimate (which adds
        activations, buffers and the most loaded stage's embeddings), so pruning with it drops nothing that fits."""
        shard = self.params / (tp * pp)
        master = self.recipe.master_weights.bytes if self.recipe.master_weights else 0.0
        w = self.weight_bytes / (dp if zero >= 3 else 1)
        g = self.grad_bytes / (dp if zero >= 2 else 1)
        o = (master + optimizer_bytes_per_param) / (dp if zero >= 1 else 1)
        if offload_optimizer != "none":
            o = 0.0
            g = 0.0  # ZeRO-Offload streams gradients to the CPU: count none on the GPU (a floor)
        if offload_params != "none":
            w = 0.0
        return shard * (w + g + o)


def optimizer_bytes_per_param(setup: TrainingSetup) -> float:
    """Persistent optimizer-state bytes per parameter, floor (factored Adafactor state counted as zero)."""
    opt = setup.optimizer
    if opt.factored:
        return 0.0
    per = opt.state_bytes if opt.state_bytes is not None else setup.recipe.optimizer_states.bytes
    return opt.states * per


def price_of(gpu: GPUSpec, price: float | None) -> tuple[float | None, str | None]:
    if price is not None:
        return price, "--price"
    if gpu.price_per_hour is not None:
        src = next((s for s in gpu.sources if s.startswith("price_per_hour")), "")
        return gpu.price_per_hour, f"labelled default of the {gpu.name} profile: {src.removeprefix('price_per_hour: ')}"
    return None, None


def gpu_hours_for(tokens: float, tokens_per_second_per_gpu: float) -> float:
    """GPU-hours to process `tokens` at a per-GPU rate (how LLaMA's Table 15 figures are made)."""
    return tokens / tokens_per_second_per_gpu / 3600


def steps_for(tokens: float | None, steps: int | None, tokens_per_step: int) -> tuple[int, float]:
    if steps is not None and tokens is not None:
        raise MemplanError("give --tokens or --steps, not both")
    if steps is not None:
        return steps, float(steps) * tokens_per_step
    if tokens is None:
        raise MemplanError("say how long to train: --tokens 300B, or --steps N with --global-batch B")
    n = math.ceil(tokens / tokens_per_step)
    return n, float(tokens)


def estimate_time(setup: TrainingSetup, gpu: GPUSpec, *, tokens: float | None = None, steps: int | None = None,
                  global_batch: int | None = None, mfu: float | None = None, achieved_tflops: float | None = None,
                  measured: str | None = None, overlap: str = "dp", interconnect: str | None = None,
                  internode: str | None = None, price: float | None = None, causal: bool = False,
                  cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS, with_memory: bool = True) -> TimeEstimate:
    """Time, GPU-hours and cost of training `setup` on `gpu` for `tokens` (or `steps` optimizer steps)."""
    p, w = setup.layout, setup.workload
    seq = setup.seq
    grad_accum = p.grad_accum
    if global_batch is not None:
        per_step = p.micro_batch * p.dp
        if global_batch % per_step:
            raise MemplanError(f"--global-batch {global_batch} is not a multiple of micro-batch x dp = "
                               f"{p.micro_batch} x {p.dp} = {per_step}; change --micro-batch, --gpus, --tp or --pp")
        if p.grad_accum not in (1, global_batch // per_step):
            raise MemplanError(f"--grad-accum {p.grad_accum} contradicts --global-batch {global_batch} "
                               f"(= micro-batch {p.micro_batch} x dp {p.dp} x {global_batch // per_step}); drop one")
        grad_accum = global_batch // per_step
    global_batch = p.micro_batch * grad_accum * p.dp
    if p.pp > 1 and setup.model.architecture is not None and setup.model.arch.n_layers % p.pp:
        raise MemplanError(f"--pp {p.pp} does not divide the model's {setup.model.arch.n_layers} layers")

    links = resolve_links(gpu, interconnect, internode)
    peak = peak_for(gpu, setup.recipe.compute)
    eff = resolve_efficiency(gpu, peak, mfu, achieved_tflops, measured)
    sm = StepModel(setup.model, setup.recipe, gpu, seq, links, eff, overlap, p.gpus_per_node, causal,
                   cpu_bandwidth_gbps)
    step, compute, bubble, exposed, total_comm, items = sm.evaluate(
        p.gpus, p.tp, p.pp, p.zero, p.micro_batch, grad_accum, p.recompute, p.offload_optimizer, p.offload_params,
        p.sequence_parallel, p.virtual_stages, detail=True)
    f: FlopsPerToken = sm.flops[p.recompute]
    tokens_per_step = global_batch * seq
    n_steps, n_tokens = steps_for(tokens, steps, tokens_per_step)
    seconds = n_steps * step
    tps = tokens_per_step / step
    gpu_hours = gpu_hours_for(n_steps * tokens_per_step, tps / p.gpus)
    price_per_hour, price_source = price_of(gpu, price)

    assumptions = [] if f.exact else [
        "bare parameter count: FLOPs by the 6N rule, attention not counted; give an architecture for the exact count"]
    assumptions += [
        f"efficiency {eff.value:.3g} of the {peak:g} TFLOP/s dense {setup.recipe.compute.value} peak "
        f"({eff.source}), applied to executed FLOPs; communication and bubble on top",
        f"overlap={overlap}: {OVERLAP_MODES[overlap]}",
        "FLOPs: matrix products only (PaLM app. B); attention counted "
        + ("over the causal half" if causal else "over the full sequence, as PaLM and Megatron count it"),
        f"links: intra-node {links.intra.name} {links.intra.bandwidth_gbps:g} GB/s, inter-node {links.inter.name} "
        f"{links.inter.bandwidth_gbps:g} GB/s, host {links.host.name} {links.host.bandwidth_gbps:g} GB/s per GPU "
        "per direction; ring collectives, ranks ordered TP, DP, PP",
    ]
    if p.pp > 1:
        assumptions.append(f"pipeline: 1F1B, {grad_accum} micro-batches, {p.virtual_stages} virtual stage(s); "
                           "layers split evenly, the LM head's extra work on the last stage ignored")
    if p.offload_optimizer != "none":
        assumptions.append(f"CPU optimizer step: memory-bound, {CPU_ADAM_BYTES_PER_PARAM} bytes per parameter at "
                           f"{cpu_bandwidth_gbps:g} GB/s host memory bandwidth per node (--cpu-bandwidth)")

    est = TimeEstimate(
        model=setup.model.name, parameters=setup.model.parameters.total, gpu=gpu.name,
        layout=Layout(gpus=p.gpus, gpus_per_node=p.gpus_per_node, dp=p.dp, tp=p.tp, pp=p.pp, zero=p.zero,
                      offload_optimizer=p.offload_optimizer, offload_params=p.offload_params,
                      micro_batch=p.micro_batch, grad_accum=grad_accum, recompute=p.recompute,
                      sequence_parallel=p.sequence_parallel, virtual_stages=p.virtual_stages),
        precision=setup.recipe.name, compute_dtype=setup.recipe.compute.value, peak_tflops=peak, efficiency=eff,
        overlap=overlap, links={"intra": links.intra.name, "inter": links.inter.name, "host": links.host.name},
        flops=f, flops_per_token=f.model, hardware_flops_per_token=f.hardware,
        global_batch=global_batch, seq=seq, tokens_per_step=tokens_per_step, steps=n_steps, tokens=n_tokens,
        step_seconds=step, compute_seconds=compute, bubble_seconds=bubble, exposed_comm_seconds=exposed,
        comm_seconds=total_comm, comm=items,
        tokens_per_second=tps, tokens_per_second_per_gpu=tps / p.gpus,
        mfu=f.model * tps / (p.gpus * peak * 1e12), hfu=f.hardware * tps / (p.gpus * peak * 1e12),
        achieved_tflops_per_gpu=f.hardware * tps / p.gpus / 1e12,
        seconds=seconds, days=seconds / 86400, gpu_hours=gpu_hours,
        price_per_hour=price_per_hour, price_source=price_source,
        cost=gpu_hours * price_per_hour if price_per_hour is not None else None,
        assumptions=assumptions,
    )
    if with_memory:
        from memplan.memory.estimate import estimate_memory

        mem = estimate_memory(setup.model_copy(update={"layout": p.replace(grad_accum=grad_accum)}),
                              gpu)
        est.memory_required_bytes, est.fits = mem.per_gpu.required, mem.fits
    return est
