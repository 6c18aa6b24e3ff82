"""One training step of a layout, from the walk over the model's layer groups.

For each layer kind on each pipeline stage, the ops of one micro-batch (perf/ops.py) are priced on this GPU
(perf/cost.py: kernels from the efficiency profile, collectives on the links, overlap computed); a stage's
micro-batch is the sum of its layers, plus the embedding on the first stage and the LM head and loss on the last;
the pipeline schedule (perf/pipeline.py) turns the stages into the pipeline's time; then what the data-parallel
path leaves exposed (perf/dataparallel.py), the tied-embedding gradient sync between the first and last stage,
the optimizer step (memory-bound, bytes per parameter from the execution profile) and offload traffic.

`StepModel.evaluate(layout)` is the planner's hot loop: layer costs are cached per (layer kind, micro-batch
context), so the thousands of layouts that differ in dp, ZeRO, offload or accumulation share them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from memplan.errors import MemplanError
from memplan.perf.comm import FACTORS, Item, Links, Network, ranks_per_node
from memplan.perf.cost import Groups, PhaseCost, price
from memplan.perf.dataparallel import DPInputs, data_parallel
from memplan.perf.efficiency import Kernels
from memplan.perf.ops import Context, LayerWalk, Phases, embedding_phases, head_phases, make_context
from memplan.perf.pipeline import one_f_one_b
from memplan.perf.shards import StageParams, stage_parameters
from memplan.spec.execution import ExecutionProfile
from memplan.spec.layout import Layout
from memplan.spec.model import Model
from memplan.spec.training import DType, OptimizerSpec, Recipe

OVERLAP_MODES = {
    "auto": "computed from the execution profile: what the engine overlaps, bounded by the compute it hides under",
    "none": "nothing overlaps: every collective on the critical path",
    "dp": "as auto, and the data-parallel gradient reduction overlaps the backward whatever the engine does",
    "all": "every collective hidden up to the step's compute (an optimistic bound)",
}

# Host memory bandwidth of a node, GB/s: a 2-socket server with 8 DDR4-3200 channels per socket peaks at
# 2 x 8 x 25.6 = 409.6 GB/s (DDR5-4800: 614.4); STREAM-style kernels sustain roughly half to two thirds of peak.
# 200 GB/s is the stated default for the CPU optimizer step of ZeRO-Offload (--cpu-bandwidth to change).
DEFAULT_CPU_BANDWIDTH_GBPS = 200.0
# Bytes one Adam step touches per parameter on the CPU (DeepSpeed CPU-Adam, ZeRO-Offload sec. 5.1): read fp32
# master, exp_avg, exp_avg_sq (12) and the 16-bit gradient (2); write the three fp32 tensors back (12) and the
# 16-bit parameter copy (2). The update is memory-bound at a few FLOPs per parameter.
CPU_ADAM_BYTES_PER_PARAM = 28


@dataclass(slots=True)
class StepResult:
    step: float
    gemm: float = 0.0
    attention: float = 0.0
    memory: float = 0.0
    tp_exposed: float = 0.0
    tp_hidden: float = 0.0
    cp_exposed: float = 0.0
    ep_exposed: float = 0.0
    p2p: float = 0.0
    bubble: float = 0.0
    dp_exposed: float = 0.0
    dp_total: float = 0.0
    optimizer: float = 0.0
    offload_exposed: float = 0.0
    comm_total: float = 0.0
    micro_batches: int = 1
    busiest: int = 0
    stage_forward: list[float] = field(default_factory=list)
    stage_backward: list[float] = field(default_factory=list)
    stage_layers: list[int] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)

    @property
    def compute(self) -> float:
        return self.gemm + self.attention + self.memory + self.optimizer

    @property
    def exposed_comm(self) -> float:
        return self.tp_exposed + self.cp_exposed + self.ep_exposed + self.p2p + self.dp_exposed + \
            self.offload_exposed


@dataclass(frozen=True)
class _Pipe:
    sched: object
    costs: list
    fwd: list
    bwd: list
    work: list
    work_first: list
    params: list
    groups: Groups
    layers: list
    dp_memo: dict  # ZeRO stage -> the data-parallel items (layouts differing only in offload share them)


def attention_kernel(workload_attention: str) -> str:
    """eager materialises the scores (unfused); sdpa picks a flash kernel for 16-bit causal attention on GPUs."""
    return "eager" if workload_attention == "eager" else "flash"


class StepModel:
    """Everything about a step that does not depend on the layout, and the caches the layouts share."""

    def __init__(self, model: Model, recipe: Recipe, optimizer: OptimizerSpec, seq: int, kernels: Kernels,
                 network: Network, execution: ExecutionProfile, attention: str = "flash", overlap: str = "auto",
                 cpu_bandwidth_gbps: float = DEFAULT_CPU_BANDWIDTH_GBPS, trainable_fraction: float = 1.0):
        if overlap not in OVERLAP_MODES:
            raise MemplanError(f"--overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap!r}")
        self.model, self.recipe, self.optimizer, self.seq = model, recipe, optimizer, seq
        self.k, self.net, self.attention, self.overlap = kernels, network, attention, overlap
        self.cpu_bandwidth = cpu_bandwidth_gbps * 1e9
        # LoRA: the base is frozen (no weight-gradient GEMMs); gradients, their reduction and the optimizer step
        # are the adapters' (this share of the parameters)
        self.trainable = trainable_fraction
        self.ex = _with_overlap(execution, overlap)
        comp = recipe.compute
        self.elem = 4.0 if comp == DType.fp32 else 2.0  # activations: fp8 recipes keep bf16 activations
        self.gemm_elem = 1.0 if comp == DType.fp8 else self.elem
        self.grad_bytes = 4.0 if self.ex.dp_reduce_dtype == "fp32" else recipe.gradients.bytes
        self.weight_bytes = recipe.weights.bytes
        self._layers: dict[tuple, tuple[PhaseCost, PhaseCost, PhaseCost]] = {}
        self._ends: dict[tuple, tuple[PhaseCost, PhaseCost]] = {}
        self._stages: dict[tuple, list] = {}
        self._pipes: dict[tuple, _Pipe] = {}
        self._stage_memo: dict[tuple, tuple[PhaseCost, float]] = {}
        self._ctx_ids: dict[tuple, int] = {}
        self._opt_memo: dict[tuple, tuple] = {}

    # ---- cached pieces -----------------------------------------------------------------------------------------
    def context(self, L: Layout) -> Context:
        return make_context(L, self.seq, self.attention, self.ex, self.elem, self.gemm_elem, self.trainable < 1.0)

    def groups(self, L: Layout) -> Groups:
        g = L.gpus_per_node
        return Groups(tp=L.tp, tp_per_node=ranks_per_node(L.tp, 1, g), cp=L.cp,
                      cp_per_node=ranks_per_node(L.cp, L.tp, g), ep=L.ep,
                      ep_per_node=ranks_per_node(L.ep, L.expert_tp, g))

    def _price(self, phases: Phases, groups: Groups) -> tuple[PhaseCost, PhaseCost, PhaseCost]:
        k, net, ge = self.k, self.net, self.gemm_elem
        return (price(phases.fwd, k, net, groups, ge), price(phases.bwd, k, net, groups, ge),
                price(phases.recompute, k, net, groups, ge))

    def layer_cost(self, gi: int, ctx: Context, groups: Groups, recompute: str):
        key = (gi, ctx, groups, recompute)
        got = self._layers.get(key)
        if got is None:
            layer = self.model.groups[gi].layer
            got = self._price(LayerWalk(self.model, layer, ctx, self.ex).phases(recompute), groups)
            self._layers[key] = got
        return got

    def end_costs(self, ctx: Context, groups: Groups) -> tuple[PhaseCost, PhaseCost, float, float]:
        """(embedding fwd+bwd, head fwd+bwd, embedding fwd seconds, head fwd seconds) per micro-batch."""
        key = (ctx, groups)
        got = self._ends.get(key)
        if got is None:
            e, h = self._price(embedding_phases(self.model, ctx), groups), \
                self._price(head_phases(self.model, ctx, self.ex), groups)
            got = (PhaseCost().add(e[0]).add(e[1]), PhaseCost().add(h[0]).add(h[1]))
            emb_fwd, head_fwd = e[0].total, h[0].total
            got = (got[0], got[1], emb_fwd, head_fwd)
            self._ends[key] = got
        return got

    def stages(self, L: Layout):
        key = (L.pp, L.first_stage_layers, L.last_stage_layers, L.tp, L.ep, L.etp)
        got = self._stages.get(key)
        if got is None:
            from memplan.spec.stages import stage_groups

            if L.virtual_stages > 1 and self.model.n_layers < L.pp * L.virtual_stages - 2:
                raise MemplanError(f"--virtual-stages {L.virtual_stages} with --pp {L.pp}: the model's "
                                   f"{self.model.n_layers} layers cannot fill pp x v = {L.pp * L.virtual_stages} "
                                   "model chunks (the first and last may hold only the embedding and the loss)")
            stages = [tuple((gi, g.count) for gi, g in s) for s in stage_groups(self.model, L)]
            params = stage_parameters(self.model, L)
            p = L.pp
            runs: dict[tuple, list[int]] = {}  # identical stages (most middle ones) priced once
            for d, st in enumerate(stages):
                runs.setdefault((st, d == 0, d == p - 1, params[d].total), []).append(d)
            got = (stages, params, [sum(c for _, c in s) for s in stages], list(runs.items()))
            self._stages[key] = got
        return got

    def _stage_cost(self, stage: tuple, first: bool, last: bool, ctx: Context, groups: Groups,
                    recompute: str, cid: int, every: int = 1) -> tuple[PhaseCost, float]:
        """One micro-batch on one stage: its layers, the embedding (first) and the head (last); and its forward.
        `cid` numbers (ctx, groups, recompute) so the cache key hashes cheaply."""
        key = (stage, first, last, cid)
        got = self._stage_memo.get(key)
        if got is None:
            c = PhaseCost()
            f_s = 0.0
            for gi, count in stage:
                f, b, r = self.layer_cost(gi, ctx, groups, recompute)
                # --recompute-every N: only count // N of the layers are checkpointed and run again
                c.add(f, count).add(b, count).add(r, count // every if every > 1 else count)
                f_s += count * f.total
            emb, head, emb_fwd, head_fwd = self.end_costs(ctx, groups)
            if first:
                c.add(emb)
                f_s += emb_fwd
            if last:
                c.add(head)
                f_s += head_fwd
            got = (c, f_s)
            self._stage_memo[key] = got
        return got

    # ---- the step ----------------------------------------------------------------------------------------------
    def _pipeline(self, L: Layout) -> "_Pipe":
        """The pipeline part of the step (cached: layouts that differ only in ZeRO or offload share it)."""
        key = (L.tp, L.cp, L.ep, L.etp, L.sequence_parallel, L.micro_batch, L.recompute, L.recompute_every,
               L.pp, L.virtual_stages,
               L.first_stage_layers, L.last_stage_layers, L.grad_accum, L.dp, L.gpus_per_node)
        got = self._pipes.get(key)
        if got is not None:
            return got
        ex, k, m, p = self.ex, self.k, L.grad_accum, L.pp
        ctx, groups = self.context(L), self.groups(L)
        stages, params, layers, runs = self.stages(L)
        accum_bytes = ex.accumulate_bytes_per_param if ex.grad_accumulation == "autograd" else 0.0
        tied_every = 0.0
        if accum_bytes and p == 1 and self.model.head.tied and self.model.head.lm_head:
            # one GPU holds both uses of the tied embedding: its gradient accumulates on every micro-batch
            tied_every = k.memory_seconds(accum_bytes * -(-self.model.vocab_size // L.tp) * self.model.hidden_size)
        cid = self._ctx_ids.setdefault((ctx, groups, L.recompute, L.recompute_every), len(self._ctx_ids))
        fwd_t, bwd_t, work, work_first, costs = [0.0] * p, [0.0] * p, [0.0] * p, [0.0] * p, [None] * p
        for (stage, first, last, n_params), where in runs:
            c, f_s = self._stage_cost(stage, first, last, ctx, groups, L.recompute, cid, L.recompute_every)
            accum = k.memory_seconds(accum_bytes * n_params * self.trainable) if accum_bytes else 0.0
            b, w, w1 = c.total - f_s + accum + tied_every, c.total + accum + tied_every, c.total + tied_every
            for d in where:
                costs[d], fwd_t[d], bwd_t[d], work[d], work_first[d] = c, f_s, b, w, w1
        sched = one_f_one_b(work, work_first, m, L.virtual_stages, self._send_seconds(L))
        got = _Pipe(sched, costs, fwd_t, bwd_t, work, work_first, params, groups, layers, {})
        self._pipes[key] = got
        return got

    def evaluate(self, L: Layout, detail: bool = False) -> StepResult:
        ex, net, k, m, p = self.ex, self.net, self.k, L.grad_accum, L.pp
        pipe = self._pipeline(L)
        sched, params = pipe.sched, pipe.params
        bz = sched.busiest
        cb = pipe.costs[bz]
        accum_total = (pipe.work[bz] - cb.total) * (m - 1) + (pipe.work_first[bz] - cb.total)
        r = StepResult(step=0.0, micro_batches=m, busiest=bz)
        r.gemm, r.attention = m * cb.gemm, m * cb.attention
        r.memory = m * cb.memory + accum_total
        r.tp_exposed, r.cp_exposed, r.ep_exposed, r.tp_hidden = m * cb.tp, m * cb.cp, m * cb.ep, m * cb.hidden
        r.p2p, r.bubble = sched.p2p_seconds, sched.bubble_seconds
        r.stage_forward, r.stage_backward, r.stage_layers = pipe.fwd, pipe.bwd, pipe.layers
        comm_total = m * cb.comm_total + sched.p2p_seconds

        # data parallelism, tied embeddings, optimizer, offload
        sp_ = params[bz]
        if self.trainable < 1.0:
            sp_ = StageParams(dense=sp_.dense * self.trainable, expert=sp_.expert * self.trainable,
                              layers=sp_.layers)
        got = pipe.dp_memo.get(L.zero)
        if got is None:
            items = self._data_parallel(L, sp_, pipe.bwd[bz], pipe.fwd[bz], pipe.layers[bz])
            got = (items, sum(i.exposed for i in items), sum(i.seconds for i in items))
            pipe.dp_memo[L.zero] = got
        dp_items, r.dp_exposed, r.dp_total = got
        comm_total += r.dp_total
        copies = k.memory_seconds(ex.dp_copy_bytes_per_param * sp_.total) if ex.dp_copy_bytes_per_param and \
            L.dp > 1 else 0.0
        r.memory += copies
        emb_sync = 0.0
        if p > 1 and params[-1].tied_copy:
            emb_sync = net.collective("all_reduce", params[-1].tied_copy * self.grad_bytes, 2, 1)
            r.dp_exposed += emb_sync
            r.dp_total += emb_sync
            comm_total += emb_sync
        okey = (sp_.dense, sp_.expert, L.dp, L.edp, L.zero, L.offload_optimizer, L.offload_params, L.tp,
                L.grad_accum, L.gpus_on_a_node)
        got = self._opt_memo.get(okey)
        if got is None:
            t, items = self._optimizer(L, sp_)
            got = (t, items, sum(i.exposed for i in items), sum(i.seconds for i in items))
            self._opt_memo[okey] = got
        r.optimizer, off_items, r.offload_exposed, off_total = got
        comm_total += off_total
        r.comm_total = comm_total
        r.step = sched.seconds + r.dp_exposed + r.optimizer + r.offload_exposed + copies
        if self.overlap == "all":
            compute = sched.seconds - sched.p2p_seconds - m * (cb.tp + cb.cp + cb.ep) + r.optimizer + copies
            r.step = max(compute, r.comm_total)
            r.tp_exposed = r.cp_exposed = r.ep_exposed = r.p2p = r.offload_exposed = 0.0
            r.dp_exposed = r.step - compute
        if detail:
            r.items = self._items(L, pipe, cb, dp_items, emb_sync, off_items)
        return r

    def _items(self, L: Layout, pipe: "_Pipe", cb: PhaseCost, dp_items, emb_sync: float, off_items) -> list[Item]:
        net, m, params = self.net, L.grad_accum, pipe.params
        names = {"tp": "tensor-parallel collectives", "cp": "context-parallel K/V ring",
                 "ep": "expert-parallel all-to-all"}
        items: list[Item] = []
        for g, (b, s, e) in cb.comm_by_group.items():
            size, per = pipe.groups.of(g)
            path = net.path(size, per)
            busbw = net.all_to_all_busbw(size, per) if g == "ep" else path.busbw
            items.append(Item(names[g], g, size, path.link, busbw, m * b, m * s, m * e,
                              "neighbouring GEMMs" if e < s else ""))
        if L.pp > 1:
            across = self._across(L)
            items.append(Item("stage send/recv" + (" (interleaved)" if L.virtual_stages > 1 else ""), "pp", 2,
                              net.links.inter.name if across else net.links.intra.name,
                              net.nic if across else net.intra_busbw,
                              self._send_bytes(L) * 2 * L.virtual_stages * m, pipe.sched.p2p_seconds,
                              pipe.sched.p2p_seconds))
        items += dp_items
        if emb_sync:
            items.append(Item("tied-embedding gradient all-reduce (first and last stage)", "dp", 2,
                              net.links.inter.name, net.nic, params[-1].tied_copy * self.grad_bytes, emb_sync,
                              emb_sync))
        return items + off_items

    # ---- pieces of the step --------------------------------------------------------------------------------------
    def _across(self, L: Layout) -> bool:
        """Pipeline neighbours are tp x cp x dp ranks apart: another node once that fills one."""
        return L.tp * L.cp * L.dp >= L.gpus_per_node

    def _send_bytes(self, L: Layout) -> float:
        return L.micro_batch * (self.seq // L.cp) * self.model.hidden_size * self.elem

    def _send_seconds(self, L: Layout) -> float:
        if L.pp <= 1:
            return 0.0
        act = self._send_bytes(L)
        across = self._across(L)
        if L.sequence_parallel:
            return self.net.send(act / L.tp, across)  # each TP rank sends its own sequence shard
        if self.ex.p2p == "scatter-gather" and L.tp > 1:
            return self.net.send(act / L.tp, across) + self.net.collective("all_gather", act, L.tp, L.tp)
        return self.net.send(act, across)

    def _data_parallel(self, L: Layout, sp_, backward: float, forward: float, layers: int) -> list[Item]:
        g = L.gpus_per_node
        common = dict(grad_bytes=self.grad_bytes, weight_bytes=self.weight_bytes, micro_batches=L.grad_accum,
                      backward_window=backward, backward_each=backward, forward_each=forward, layers=layers)
        out = data_parallel(DPInputs(params=sp_.dense, group=L.dp,
                                     per_node=ranks_per_node(L.dp, L.tp * L.cp, g), **common),
                            L.zero, self.ex, self.net)
        if sp_.expert:
            out += data_parallel(DPInputs(params=sp_.expert, group=L.edp,
                                          per_node=ranks_per_node(L.edp, L.ep * L.expert_tp, g),
                                          label="expert ", **common), L.zero, self.ex, self.net)
        return out

    def _optimizer(self, L: Layout, sp_) -> tuple[float, list[Item]]:
        """The optimizer step on the GPU (memory-bound), or with offload the PCIe traffic and the CPU's step."""
        shard = sp_.dense / (L.dp if L.zero >= 1 else 1) + sp_.expert / (L.edp if L.zero >= 1 else 1)
        items: list[Item] = []
        if L.offload_optimizer == "none":
            t = self.k.memory_seconds(self.ex.optimizer_bytes_per_param.value * shard)
            if L.tp > 1:  # grad-norm and found-inf all-reduces across the model-parallel group
                t += 3 * self.net.collective("all_reduce", 4, L.tp, L.tp)
        else:
            t = 0.0
            # ZeRO-Offload (Ren et al. 2021, sec. 4): gradients down, updated parameters back, per step
            b = shard * (self.recipe.gradients.bytes + self.recipe.weights.bytes)
            s = self.net.host_copy(b)
            host = self.net.links.host
            items.append(Item("optimizer offload (grads down, params up)", "offload", 1, host.name,
                              host.bandwidth_gbps * 1e9, b, s, s))
            # the node's CPU updates the shards of every GPU on it, memory-bound, between backward and forward
            on_node = L.gpus_on_a_node
            cb = shard * on_node * CPU_ADAM_BYTES_PER_PARAM
            cs = cb / self.cpu_bandwidth
            items.append(Item(f"CPU optimizer step ({on_node} GPU shards per node)", "offload", 1, "host-memory",
                              self.cpu_bandwidth, cb, cs, cs))
        if L.offload_params != "none":
            # ZeRO-Infinity: each GPU fetches its parameter shard from host memory for forward and backward
            b = L.grad_accum * 2 * shard * self.recipe.weights.bytes
            s = self.net.host_copy(b)
            host = self.net.links.host
            items.append(Item("parameter offload fetch", "offload", 1, host.name, host.bandwidth_gbps * 1e9, b, s,
                              s))
        return t, items


def _with_overlap(ex: ExecutionProfile, overlap: str) -> ExecutionProfile:
    """The execution profile with --overlap applied (auto: as it is)."""
    if overlap == "none":
        return ex.model_copy(update={"tp_comm": "blocking", "dp_overlap": "none", "param_gather_overlap": False,
                                     "zero3_prefetch": False})
    if overlap == "dp":
        return ex.model_copy(update={"dp_overlap": "backward"})
    return ex


__all__ = ["StepModel", "StepResult", "OVERLAP_MODES", "attention_kernel", "Links", "FACTORS"]
