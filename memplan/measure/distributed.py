"""Training steps on N ranks through torch.distributed, measured per rank: DDP, ZeRO-1, FSDP2.

Strategies (what each rank holds between steps, W ranks, N parameters):
- ddp:   DistributedDataParallel; every rank keeps all weights, gradients and optimizer states, plus DDP's
         gradient buckets (a flat second copy of the gradients, bucket_cap_mb=25).          estimate: --zero 0
- zero1: DDP + torch.distributed.optim.ZeroRedundancyOptimizer: optimizer states of the parameters this rank
         owns (whole parameters, greedy split); weights and gradients full.                 estimate: --zero 1
- zero2: FSDP2 fully_shard(reshard_after_forward=False): weights, gradients and states sharded between steps;
         the unsharded parameters stay gathered from forward to backward.       estimate: --engine fsdp --zero 2
         This is *not* DeepSpeed's stage 2: DeepSpeed keeps full 16-bit weights on every rank all the time and
         partitions gradients and optimizer states only; FSDP's SHARD_GRAD_OP shards the stored parameters too and
         only differs from FULL_SHARD by not freeing the gathered ones between forward and backward.
- zero3: FSDP2 fully_shard(reshard_after_forward=True): parameters gathered per block, freed after use in
         forward and again in backward.                                          estimate: --engine fsdp --zero 3
FSDP wraps each transformer block (the ModuleList of n_layers blocks), then the root.  A recipe with fp32 master
weights (bf16-mixed) runs as MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32) over fp32 sharded
parameters: the shard *is* the master copy (states.py's fsdp convention).

Launch: `profile_distributed` spawns W local ranks with torch.multiprocessing (MASTER_ADDR=127.0.0.1, a free
port, env:// rendezvous exactly as torchrun sets it up; gloo on cpu, nccl with one GPU per rank on cuda), or,
when torchrun already started this process (RANK/WORLD_SIZE/LOCAL_RANK in the environment), runs this rank and
gathers every rank's record on rank 0.  device "fake": one process, PyTorch's fake process group
(torch.testing._internal.distributed.fake_pg: collectives do nothing) and FakeTensorMode, emulating rank r of W
for any W (8, 64, 1024) at no memory cost; only FSDP's shard layout is meaningful there (no losses).

Accounting: helper-3's StorageTracker (measure/tracker.py), extended here by `_RankTracker` with what a rank
needs: DTensor parameters and states are counted by their local tensor; FSDP2 frees and re-allocates its
unsharded parameters with UntypedStorage.resize_ (_fsdp_param.py alloc_storage/free_storage), which no dispatch
mode sees, so those two functions are wrapped while the step is measured; a transient storage handed to a c10d
collective is a communication buffer.  Model-state shard bytes are read from the live tensors (distinct storages).
What no tracker sees: gloo's and NCCL's own buffers (on cuda `backend_device_bytes` is the device memory outside
torch's allocator that init_process_group and a first all-reduce took, measured around them alone: the libraries
the step loads later are not NCCL's).  An out-of-memory error on any rank is a result (RankRecord.oom), agreed
by every rank before the loss all-reduce; spawned ranks meet through a file store (no TCP port race).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import gc
import os
import socket
import tempfile
import weakref
from collections.abc import Iterable

import torch
import torch.distributed as dist
from pydantic import BaseModel, Field
from torch import nn

from memplan.errors import MemplanError
from memplan.measure.models import build_model
from memplan.measure.oom import first_line, is_out_of_memory
from memplan.measure.runner import (TORCH_DTYPES, LossScaler, MasterWeightsOptimizer, ScaledOptimizer, _Phases,
                                    default_optimizer_impl, make_optimizer, run_training_step, training_loss)
from memplan.measure.tracker import FORWARD, StorageTracker, _Entry
from memplan.memory import shard_layout
from memplan.results.distributed import (COMPARED, DistributedProfile, RankEstimated, RankMeasured, RankResult)
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import DType

STRATEGIES = ("ddp", "zero1", "zero2", "zero3")
# strategy -> (estimate engine, ZeRO stage): the memplan convention whose per-GPU figures a rank is compared with
ESTIMATE_CONVENTION = {"ddp": ("plain", 0), "zero1": ("plain", 1), "zero2": ("fsdp", 2), "zero3": ("fsdp", 3)}
DDP_BUCKET_CAP_MB = 25  # torch.nn.parallel.DistributedDataParallel default
ESTIMATE_BUCKET_LINES = ("DDP gradient buckets", "ZeRO reduce bucket")  # memory/overheads.py component names
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedRequest(BaseModel):
    """One multi-rank measurement (pickled to the ranks as JSON)."""

    setup: TrainingSetup
    strategy: str
    nproc: int = Field(1, ge=1)
    device: str = "cpu"
    model_source: str = "hf"
    mixed_precision: bool | None = None
    warmup_steps: int = Field(2, ge=1, description="DDP rebuilds its buckets after the 1st step: 2 by default")
    optimizer_impl: str | None = None
    seed: int = 0
    fake_ranks: list[int] | None = Field(None, description="fake device: which ranks of W to emulate (default 0, W-1)")


# ---------------------------------------------------------------------------------------------------------
# validation (in the launching process, before any rank starts)
# ---------------------------------------------------------------------------------------------------------
def check_request(req: DistributedRequest) -> None:
    s, r = req.setup, req.setup.recipe
    if req.strategy not in STRATEGIES:
        from memplan.errors import did_you_mean

        raise MemplanError(did_you_mean(req.strategy, STRATEGIES, "strategy"))
    if req.device not in ("cpu", "cuda", "fake"):
        raise MemplanError(f"--device {req.device!r}: use cuda, cpu or fake")
    p = s.layout
    if p.tp != 1 or p.pp != 1 or p.offload_optimizer != "none" or p.offload_params != "none":
        raise MemplanError("multi-rank profile runs data parallelism only: drop --tp/--pp/--offload-*")
    if s.lora is not None:
        raise MemplanError("multi-rank profile does not measure LoRA; drop --lora")
    if r.compute == DType.fp8 or r.weights not in TORCH_DTYPES:
        raise MemplanError(f"recipe {r.name} cannot be measured (fp8/quantized weights); use bf16-mixed")
    if r.gradients != r.weights or r.master_weights not in (None, DType.fp32):
        raise MemplanError(f"recipe {r.name} is not measured: gradients must match the weights, master fp32 or none")
    fsdp = req.strategy in ("zero2", "zero3")
    if req.mixed_precision and not fsdp:
        raise MemplanError("--mixed-precision maps the recipe onto FSDP's MixedPrecisionPolicy: use it with "
                           "--strategy zero2/zero3 (ddp/zero1 use --precision amp-bf16 or bf16-mixed)")
    if fsdp and req.mixed_precision is False and r.master_weights is not None:
        raise MemplanError(f"recipe {r.name} keeps fp32 master weights, which FSDP expresses only as "
                           "MixedPrecisionPolicy: drop --no-mixed-precision or use --precision bf16")
    if req.mixed_precision and r.compute not in (DType.bf16, DType.fp16):
        raise MemplanError(f"--mixed-precision needs a 16-bit compute dtype; recipe {r.name} computes in "
                           f"{r.compute.value} (use --precision bf16-mixed)")
    if fsdp and s.optimizer.name == "adafactor":
        # transformers' Adafactor (optimization.py, step) mixes plain row/column statistics with FSDP2's DTensor
        # parameters ("got mixed torch.Tensor and DTensor"): refused before any rank starts
        raise MemplanError("adafactor cannot step FSDP2's sharded (DTensor) parameters (transformers' Adafactor "
                           "keeps plain-tensor row/column statistics): use --strategy ddp or zero1 with adafactor, "
                           "or another --optimizer with zero2/zero3")
    if req.strategy != "ddp" and r.compute == DType.fp16:
        raise MemplanError("fp16 recipes need loss scaling, measured with --strategy ddp only; use a bf16 recipe")
    if req.strategy == "zero1" and r.master_weights is not None:
        raise MemplanError("ZeroRedundancyOptimizer has no fp32 master copy of 16-bit weights: use --precision "
                           "fp32 or amp-bf16 with zero1, or zero2/zero3 for bf16-mixed")
    if req.device == "cuda":
        if not torch.cuda.is_available():
            raise MemplanError("--device cuda: torch sees no CUDA device here; use --device cpu (gloo) or fake")
        if not under_torchrun() and torch.cuda.device_count() < req.nproc:
            raise MemplanError(f"--nproc {req.nproc} needs one GPU per rank; this machine has "
                               f"{torch.cuda.device_count()} (use --device cpu for gloo ranks)")
    if req.device == "fake" and req.strategy not in ("zero2", "zero3"):
        raise MemplanError("--device fake emulates FSDP ranks (zero2/zero3); DDP's C++ reducer cannot run on fake "
                           "tensors: run ddp/zero1 with --device cpu")
    if req.device == "fake" and req.fake_ranks and any(not 0 <= x < req.nproc for x in req.fake_ranks):
        raise MemplanError(f"fake ranks must lie in 0..{req.nproc - 1}")


def strategy_setup(setup: TrainingSetup, strategy: str, world: int) -> TrainingSetup:
    """The setup `memplan estimate` is given for this strategy's per-GPU figures."""
    engine, zero = ESTIMATE_CONVENTION[strategy]
    parallel = Layout(gpus=world, gpus_per_node=setup.layout.gpus_per_node, zero=zero, engine=engine)
    return setup.model_copy(update={"layout": parallel})


def estimate_flags(strategy: str, world: int) -> str:
    engine, zero = ESTIMATE_CONVENTION[strategy]
    return f"--gpus {world} --zero {zero}" + (f" --engine {engine}" if engine != "plain" else "")


def under_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS)


# ---------------------------------------------------------------------------------------------------------
# the tracker, extended for ranks
# ---------------------------------------------------------------------------------------------------------
_TRANSIENT = (FORWARD, "activations", "temporaries")
EXTRA_CATEGORIES = ("gathered_parameters", "communication")


class _RankTracker(StorageTracker):
    """StorageTracker + DTensor local tensors + FSDP's storage resizes + communication buffers."""

    def __init__(self, device_type: str) -> None:
        super().__init__(device_type)
        for c in EXTRA_CATEGORIES:
            self.current[c] = 0
            self.peak_bytes[c] = 0
        self.most: dict[str, int] = {}

    def _storage(self, t):
        from torch.distributed.tensor import DTensor

        if isinstance(t, DTensor):
            t = t._local_tensor
        return super()._storage(t)

    def _snapshot(self) -> dict[str, int]:
        snap = super()._snapshot()
        snap.update({c: self.current[c] for c in EXTRA_CATEGORIES})
        return snap

    def _update_peak(self) -> None:
        super()._update_peak()
        if self.phase is not None:
            for c, v in self.current.items():
                if v > self.most.get(c, 0):
                    self.most[c] = v

    def resized(self, t: torch.Tensor, category: str) -> None:
        """`t`'s storage was resized in place (FSDP2 free/alloc of unsharded parameters): follow its bytes."""
        st = self._storage(t)
        if st is None:
            return
        entry = self._entries.get(st)
        if entry is None:
            entry = _Entry(0, category)
            self._entries[st] = entry
            weakref.finalize(st, self._free, entry)
        nbytes = int(st.nbytes())
        self.current[entry.category] += nbytes - entry.nbytes
        self.total += nbytes - entry.nbytes
        entry.nbytes = nbytes
        self._update_peak()

    def _communication(self, t: torch.Tensor) -> None:
        st = self._storage(t)
        if st is None:
            return
        entry = self._entries.get(st)
        if entry is None:  # a buffer the backend keeps between steps, first seen now
            self._add(t, "communication")
        elif entry.category in _TRANSIENT:
            self.current[entry.category] -= entry.nbytes
            entry.category = "communication"
            self.current["communication"] += entry.nbytes
            self._update_peak()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.phase is not None and getattr(func, "namespace", None) == "c10d":
            for t in torch.utils._pytree.tree_leaves((args, kwargs or {})):
                if isinstance(t, torch.Tensor):
                    self._communication(t)
        return out


@contextlib.contextmanager
def _follow_fsdp_resizes(tracker: _RankTracker):
    """Wrap FSDP2's alloc_storage/free_storage while measuring.  They are module functions called by name from
    _fsdp_param.py and (alloc_storage, imported by name: the W=1 path) _fsdp_param_group.py; both are patched."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param as fp
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as fpg

    alloc, free = fp.alloc_storage, fp.free_storage
    group_alloc = getattr(fpg, "alloc_storage", None)

    def alloc_followed(t: torch.Tensor) -> None:
        alloc(t)
        tracker.resized(t, "gathered_parameters")

    def free_followed(t: torch.Tensor) -> None:
        free(t)
        tracker.resized(t, "gathered_parameters")

    fp.alloc_storage, fp.free_storage = alloc_followed, free_followed
    if group_alloc is not None:
        fpg.alloc_storage = alloc_followed
    try:
        yield
    finally:
        fp.alloc_storage, fp.free_storage = alloc, free
        if group_alloc is not None:
            fpg.alloc_storage = group_alloc


class _CollectiveArgs(torch.utils._python_dispatch.TorchDispatchMode):
    """Remembers (weakly) the tensors handed to c10d collectives in the last warm-up step: those still alive after
    it are the buffers the backend keeps between steps (DDP's gradient buckets), or the parameters themselves."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "namespace", None) == "c10d":
            self._refs += [weakref.ref(t) for t in torch.utils._pytree.tree_leaves((args, kwargs or {}))
                           if isinstance(t, torch.Tensor)]
        return out

    def alive(self) -> list[torch.Tensor]:
        return [t for t in (r() for r in self._refs) if t is not None]


# ---------------------------------------------------------------------------------------------------------
# storages of live tensors
# ---------------------------------------------------------------------------------------------------------
def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def storage_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind `tensors` (a storage shared by several tensors counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        st = _local(t).untyped_storage()
        seen[st._cdata] = int(st.nbytes())
    return sum(seen.values())


def _state_tensors(optimizer) -> list[torch.Tensor]:
    inner = getattr(optimizer, "optim", None) or getattr(optimizer, "inner", None) or optimizer
    return [v for state in inner.state.values() for v in state.values()
            if isinstance(v, torch.Tensor) and _local(v).dim() > 0]


# ---------------------------------------------------------------------------------------------------------
# one rank
# ---------------------------------------------------------------------------------------------------------
def _blocks(module: nn.Module, n_layers: int) -> list[nn.Module]:
    """The transformer blocks: the (first, outermost) ModuleList with n_layers entries."""
    for sub in module.modules():
        if isinstance(sub, nn.ModuleList) and len(sub) == n_layers and n_layers > 0:
            return list(sub)
    return []


class _RankStep:
    """The model wrapped by the strategy, its optimizer, this rank's batch; `run(phases)` does one step."""

    def __init__(self, req: DistributedRequest, rank: int, world: int, tdev: torch.device, mesh) -> None:
        s, r, w = req.setup, req.setup.recipe, req.setup.workload
        self.req, self.rank, self.world, self.tdev = req, rank, world, tdev
        fsdp = req.strategy in ("zero2", "zero3")
        mixed = fsdp and (req.mixed_precision or (req.mixed_precision is None and r.master_weights is not None))
        # what the parameters are stored in: FSDP keeps the master dtype in its shards; DDP the recipe's weights
        store = r.master_weights if (mixed and r.master_weights is not None) else r.weights
        torch.manual_seed(req.seed)  # the same initial weights on every rank and for every strategy
        with torch.device(tdev):
            self.built = build_model(s.model, req.model_source, w.attention, s.layout.recompute, dtype=TORCH_DTYPES[store])
        m = self.built.module
        m.train()
        if s.layout.recompute == "full" and self.built.source == "hf":
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.base = m
        blocks = _blocks(m, s.model.arch.n_layers if s.model.architecture else 0)
        self.block_elements = [sum(p.numel() for p in b.parameters() if p.requires_grad) for b in blocks]
        in_blocks = {id(p) for b in blocks for p in b.parameters()}
        self.root_shapes = [tuple(p.shape) for p in m.parameters() if p.requires_grad and id(p) not in in_blocks]
        self.block_shapes = [tuple(p.shape) for p in blocks[0].parameters() if p.requires_grad] if blocks else []
        self.buffer_bytes = sum(b.numel() * b.element_size() for b in m.buffers())
        self.shapes = [tuple(p.shape) for p in m.parameters() if p.requires_grad]
        self.numels = [p.numel() for p in m.parameters() if p.requires_grad]
        self.autocast = r.autocast
        self.compute_dtype = TORCH_DTYPES.get(r.compute, torch.float32)
        self.scaler = LossScaler() if r.compute == DType.fp16 else None
        self.mixed_precision: str | None = None
        name = s.optimizer.name
        if fsdp:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            policy = MixedPrecisionPolicy()
            if mixed:
                policy = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
                self.mixed_precision = f"MixedPrecisionPolicy(param_dtype={self.compute_dtype}, reduce_dtype=fp32)"
            reshard = req.strategy == "zero3"
            for b in blocks:
                fully_shard(b, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
            fully_shard(m, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
            self.wrapping = (f"fully_shard on {len(blocks)} blocks + root, reshard_after_forward={reshard}")
            self.model = m
            params = list(m.parameters())
            self.impl = req.optimizer_impl or default_optimizer_impl(params)
            self.optimizer = make_optimizer(name, params, self.impl)
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [tdev.index] if tdev.type == "cuda" else None
            self.model = DDP(m, device_ids=ids, bucket_cap_mb=DDP_BUCKET_CAP_MB)
            params = [p for p in m.parameters() if p.requires_grad]
            self.impl = req.optimizer_impl or default_optimizer_impl(params)
            make = functools.partial(_make_optimizer, name, self.impl)
            if req.strategy == "zero1":
                from torch.distributed.optim import ZeroRedundancyOptimizer

                self.optimizer = ZeroRedundancyOptimizer(params, optimizer_class=make)
                self.wrapping = f"DistributedDataParallel(bucket_cap_mb={DDP_BUCKET_CAP_MB}) + ZeroRedundancyOptimizer"
            else:
                self.wrapping = f"DistributedDataParallel(bucket_cap_mb={DDP_BUCKET_CAP_MB})"
                if r.master_weights is not None:
                    self.optimizer = MasterWeightsOptimizer(params, make, self.scaler)
                else:
                    inner = make(params)
                    self.optimizer = ScaledOptimizer(inner, self.scaler) if self.scaler else inner
        # each rank its own micro-batch (data parallelism), drawn from a rank-specific seed
        gen_seed = req.seed * 1_000_003 + 1 + rank
        torch.manual_seed(gen_seed)
        with torch.device(tdev):
            self.input_ids = torch.randint(0, self.built.vocab_size, (s.layout.micro_batch, s.seq))
        self._phases: _Phases | None = None
        self.grad_bytes = 0
        if self.built.lm_head is not None:
            self.built.lm_head.register_forward_hook(self._after_head)

    def _after_head(self, module, args, output) -> None:
        if self._phases is not None:
            self._phases("loss")

    def params(self) -> list[torch.Tensor]:
        return [p for p in self.base.parameters() if p.requires_grad]

    def run(self, phases: _Phases) -> torch.Tensor:
        self._phases = phases
        try:
            ctx = torch.autocast(self.tdev.type, dtype=self.compute_dtype) if self.autocast else contextlib.nullcontext()
            # next token (wrapping) as the target: the same on every strategy
            loss_fn = lambda: training_loss(self.built, self.model, self.input_ids,  # noqa: E731
                                            lambda: torch.roll(self.input_ids, -1, dims=1))

            def count_grads() -> None:
                self.grad_bytes = storage_bytes(p.grad for p in self.params())

            return run_training_step(phases, loss_fn, ctx, self.scaler, self.optimizer, after_backward=count_grads,
                                     keep_loss=True)
        finally:
            self._phases = None

    def master_tensors(self) -> list[torch.Tensor]:
        return self.optimizer.master if isinstance(self.optimizer, MasterWeightsOptimizer) else []


def _make_optimizer(name: str, impl: str, params, **_defaults):
    """ZeroRedundancyOptimizer calls optimizer_class(params, **defaults); we build exactly what runner.py builds."""
    return make_optimizer(name, list(params), impl)


class RankRecord(BaseModel):
    """What one rank sends back to the launcher."""

    rank: int
    measured: RankMeasured
    losses: list[float]
    optimizer_impl: str
    wrapping: str
    mixed_precision: str | None
    parameters: int
    model_source: str
    block_elements: list[int] = Field([], description="parameters of each transformer block (FSDP: one group each)")
    buffer_bytes: int = Field(0, description="module buffers (DDP broadcasts them from rank 0 every forward)")
    shapes: list[list[int]] = Field([], description="every trainable parameter's full shape, as the module holds it "
                                                     "(Linear: (out, in); HF GPT-2 Conv1D: (in, out))")
    root_shapes: list[list[int]] = Field([], description="parameters outside the blocks (FSDP's root group)")
    block_shapes: list[list[int]] = Field([], description="the parameters of one block")
    oom: bool = Field(False, description="this rank ran out of memory (oom_phase says where)")
    oom_phase: str | None = None
    oom_message: str | None = None
    notes: list[str] = []


def _device_outside_allocator(tdev: torch.device) -> int:
    free, total = torch.cuda.mem_get_info(tdev)
    return (total - free) - torch.cuda.memory_reserved(tdev)


def _any_rank_failed(failed: bool, tdev: torch.device) -> bool:
    """Every rank says whether it ran out of memory (one all-reduce every rank reaches), so that no rank waits
    alone in the loss all-reduce of a step another rank left."""
    flag = torch.tensor([1.0 if failed else 0.0], device=tdev)
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def run_rank(req: DistributedRequest, rank: int, world: int, tdev: torch.device, mesh=None,
             backend_bytes: int | None = None) -> RankRecord:
    """One request on this rank (the process group is up): warm-up steps, then the measured step.

    An out-of-memory error anywhere (build, warm-up, measured step) is a result: the record says where, with what
    was measured up to then.  `backend_bytes` (cuda): the device memory NCCL took at init (_init_group)."""
    fake = req.device == "fake"
    fsdp = req.strategy in ("zero2", "zero3")
    if fsdp and mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(tdev.type, (world,))  # outside FakeTensorMode: the mesh holds real rank tensors
    mode = contextlib.nullcontext()
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode()
    oom: tuple[str, str] | None = None
    step = None
    tracker = _RankTracker(tdev.type)
    losses: list[torch.Tensor] = []
    phases = _Phases([])
    with mode:
        try:
            phases.current = "build"
            step = _RankStep(req, rank, world, tdev, mesh)
            collect = _CollectiveArgs()
            for i in range(req.warmup_steps):
                last = i == req.warmup_steps - 1
                phases = _Phases([])
                with (collect if last and not fsdp else contextlib.nullcontext()):
                    losses.append(step.run(phases))
            gc.collect()
            # everything alive between steps, by category (later calls re-categorise: parameters that ZeRO-1
            # broadcasts are weights, not communication buffers)
            tracker.track(collect.alive(), "communication")  # DDP's gradient buckets (allreduced in backward)
            del collect
            tracker.track(step.params(), "weights")
            tracker.track(list(step.base.buffers()), "other")
            tracker.track(step.master_tensors(), "master_weights")
            tracker.track(_state_tensors(step.optimizer), "optimizer_states")
            tracker.track(step.input_ids, "other")
            tracker.watch_gradients(step.params())
            if tdev.type == "cuda":
                torch.cuda.synchronize(tdev)
                torch.cuda.reset_peak_memory_stats(tdev)
            phases = _Phases([tracker])
            try:
                with tracker, (_follow_fsdp_resizes(tracker) if fsdp else contextlib.nullcontext()):
                    losses.append(step.run(phases))
            finally:
                tracker.remove_hooks()
        except Exception as exc:  # noqa: BLE001 - only an out-of-memory is a result
            if not is_out_of_memory(exc):
                raise
            oom = (phases.current or "forward", first_line(exc))
            del exc
        if oom is not None:
            gc.collect()
            if tdev.type == "cuda":
                torch.cuda.empty_cache()
        params = step.params() if step is not None else []
        weights = storage_bytes(params)
        states = storage_bytes(_state_tensors(step.optimizer)) if step is not None else 0
        master = storage_bytes(step.master_tensors()) if step is not None else 0
        local = sum(_local(p).numel() for p in params)
        peak = tracker.peak
        if tdev.type == "cuda":
            torch.cuda.synchronize(tdev)
            peak = torch.cuda.max_memory_allocated(tdev)
        any_oom = oom is not None if fake else _any_rank_failed(oom is not None, tdev)
        if fake or any_oom:
            loss_values: list[float] = []
        else:
            stacked = torch.stack([x.float() for x in losses])
            dist.all_reduce(stacked)  # SUM (gloo has no AVG), then the mean over ranks
            loss_values = (stacked / world).tolist()
        at_peak = {k: v for k, v in tracker.peak_bytes.items()}
        grads = step.grad_bytes if step is not None else 0
        measured = RankMeasured(
            weights=weights, master_weights=master, gradients=grads, optimizer_states=states,
            model_states=weights + master + grads + states,
            gathered_parameters=tracker.most.get("gathered_parameters", 0),
            communication_buffers=tracker.most.get("communication", 0),
            activations=at_peak.get("activations", 0), temporaries=at_peak.get("temporaries", 0),
            other=at_peak.get("other", 0), peak_allocated=peak, tracked_peak=tracker.peak,
            peak_phase=tracker.peak_phase or (oom[0] if oom else "forward"), at_peak=at_peak, local_parameters=local,
            backend_device_bytes=backend_bytes,
            phases=[p for p in tracker.phase_results() if p.name != "done"])
        notes = []
        if oom is None and any_oom:
            notes.append("another rank ran out of memory: no loss all-reduce")
        if step is None:
            return RankRecord(rank=rank, measured=measured, losses=[], optimizer_impl=req.optimizer_impl or "foreach",
                              wrapping="(not built)", mixed_precision=None, parameters=0,
                              model_source=req.model_source, oom=True, oom_phase=oom[0] if oom else "build",
                              oom_message=oom[1] if oom else None, notes=notes)
        return RankRecord(rank=rank, measured=measured, losses=loss_values, optimizer_impl=step.impl,
                          wrapping=step.wrapping, mixed_precision=step.mixed_precision, parameters=sum(step.numels),
                          block_elements=step.block_elements, buffer_bytes=step.buffer_bytes,
                          root_shapes=step.root_shapes, block_shapes=step.block_shapes, shapes=step.shapes,
                          model_source=step.built.source, oom=oom is not None, oom_phase=oom[0] if oom else None,
                          oom_message=oom[1] if oom else None, notes=notes)


# ---------------------------------------------------------------------------------------------------------
# process groups and launch
# ---------------------------------------------------------------------------------------------------------
def _rank_device(device: str, local_rank: int) -> torch.device:
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def pg_timeout() -> _dt.timedelta:
    """The process group's timeout: a rank left alone in a collective (another rank failed outside one) ends
    with an error after this long instead of torch's default 10 minutes (MEMPLAN_PG_TIMEOUT_S, default 300)."""
    try:
        return _dt.timedelta(seconds=max(10.0, float(os.environ.get("MEMPLAN_PG_TIMEOUT_S", "300"))))
    except ValueError:
        return _dt.timedelta(seconds=300)


def _init_group(device: str, local_rank: int, init_method: str = "env://") -> tuple[torch.device, int | None]:
    """Rendezvous (env:// under torchrun, a file:// store for spawned ranks): gloo on cpu, nccl on cuda.

    On cuda, returns the device memory outside torch's allocator that NCCL took: measured right around
    init_process_group and a first all-reduce (NCCL creates its communicator and buffers there), after the CUDA
    context, cuBLAS and a matmul already exist -- so that the libraries the training step loads later (cuBLAS
    and cuDNN kernels, their workspaces) are not counted as NCCL's."""
    tdev = _rank_device(device, local_rank)
    kw = {"timeout": pg_timeout()}
    if init_method != "env://":
        kw.update(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    if device != "cuda":
        dist.init_process_group("gloo", init_method=init_method, **kw)
        return tdev, None
    x = torch.ones(64, 64, device=tdev)
    (x @ x).sum().item()  # the CUDA context, cuBLAS's handle and workspace: before the baseline
    torch.cuda.synchronize(tdev)
    baseline = _device_outside_allocator(tdev)
    dist.init_process_group("nccl", init_method=init_method, device_id=tdev, **kw)
    dist.all_reduce(torch.zeros(1, device=tdev))
    torch.cuda.synchronize(tdev)
    return tdev, _device_outside_allocator(tdev) - baseline


def _run_in_group(requests: list[DistributedRequest], local_rank: int, init_method: str = "env://"
                  ) -> list[RankRecord]:
    """Every request in turn on this rank, then tear the group down."""
    tdev, nccl_bytes = _init_group(requests[0].device, local_rank, init_method)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        return [run_rank(req, rank, world, tdev, backend_bytes=nccl_bytes) for req in requests]
    finally:
        dist.destroy_process_group()


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _spawn_entry(local_rank: int, world: int, init_method: str, payload: list[str], out_dir: str) -> None:
    import memplan.interrupt as interrupt

    interrupt.install()  # a terminal's Ctrl-C reaches every rank: each leaves quietly, as the parent does
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world))
    requests = [DistributedRequest.model_validate_json(p) for p in payload]
    if requests[0].device == "cpu":
        # W processes share the machine's cores: more intra-op threads than cores makes every rank spin-wait
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        records = _run_in_group(requests, local_rank, init_method)
    except MemplanError as exc:
        _write_atomic(os.path.join(out_dir, f"rank{local_rank}.error"), str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - a collective timeout, a backend error: one line, no traceback
        _write_atomic(os.path.join(out_dir, f"rank{local_rank}.error"),
                      f"rank {local_rank} failed: {type(exc).__name__}: {first_line(exc)}")
        return
    text = "[" + ",".join(r.model_dump_json() for r in records) + "]"
    _write_atomic(os.path.join(out_dir, f"rank{local_rank}.json"), text)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(requests: list[DistributedRequest], world: int) -> list[list[RankRecord]]:
    """W local ranks; returns records[request][rank]."""
    import json

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    payload = [r.model_dump_json() for r in requests]
    with tempfile.TemporaryDirectory(prefix="memplan-ranks-") as out_dir:
        # a file store in this run's own folder: no TCP port to pick, so no race between two runs for a free one
        init_method = "file://" + os.path.join(out_dir, "rendezvous")
        try:
            mp.start_processes(_spawn_entry, args=(world, init_method, payload, out_dir), nprocs=world,
                               join=True, start_method="spawn")
        except ProcessException as exc:  # a rank died outside its own handlers (a signal, a crash in import)
            if not any(f.endswith(".error") for f in os.listdir(out_dir)):
                raise MemplanError(f"a rank of the multi-rank profile failed: {first_line(exc)}") from None
        errors = sorted(f for f in os.listdir(out_dir) if f.endswith(".error"))
        if errors:
            with open(os.path.join(out_dir, errors[0])) as fh:
                raise MemplanError(fh.read().strip())
        per_rank = []
        for r in range(world):
            with open(os.path.join(out_dir, f"rank{r}.json")) as fh:
                per_rank.append([RankRecord.model_validate(x) for x in json.load(fh)])
    return [[per_rank[r][i] for r in range(world)] for i in range(len(requests))]


def _fake(req: DistributedRequest) -> list[RankRecord]:
    """Rank r of W in this process, fake process group + fake tensors, for each emulated rank."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    world = req.nproc
    ranks = req.fake_ranks or sorted({0, world - 1})
    records = []
    for r in ranks:
        dist.init_process_group("fake", store=FakeStore(), rank=r, world_size=world)
        try:
            records.append(run_rank(req, r, world, torch.device("cpu")))
        finally:
            dist.destroy_process_group()
    return records


def _torchrun(requests: list[DistributedRequest]) -> list[list[RankRecord]] | None:
    """Under torchrun: this process is one rank; rank 0 gathers every rank's records."""
    tdev, nccl_bytes = _init_group(requests[0].device, int(os.environ["LOCAL_RANK"]))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        mine = [run_rank(req.model_copy(update={"nproc": world}), rank, world, tdev, backend_bytes=nccl_bytes)
                for req in requests]
        gathered: list | None = [None] * world if rank == 0 else None
        dist.gather_object([m.model_dump() for m in mine], gathered, dst=0)
    finally:
        dist.destroy_process_group()
    if gathered is None:
        return None
    return [[RankRecord.model_validate(gathered[r][i]) for r in range(world)] for i in range(len(requests))]


def profile_distributed_many(requests: list[DistributedRequest]) -> list[DistributedProfile] | None:
    """Several requests in one process group (one spawn): what the tests use to stay fast.

    All requests must share nproc and device.  Returns None on torchrun ranks other than 0.
    """
    if not requests:
        return []
    for req in requests:
        check_request(req)
    if len({(r.nproc, r.device) for r in requests}) != 1:
        raise MemplanError("requests run together must share --nproc and --device")
    req0 = requests[0]
    if req0.device == "fake":
        records, launcher = [_fake(r) for r in requests], "fake"
    elif under_torchrun():
        got = _torchrun(requests)
        if got is None:
            return None
        records, launcher = got, "torchrun"
    else:
        records, launcher = _spawn(requests, req0.nproc), "spawn"
    return [assemble(req, recs, launcher) for req, recs in zip(requests, records)]


def profile_distributed(req: DistributedRequest) -> DistributedProfile | None:
    got = profile_distributed_many([req])
    return None if got is None else got[0]


# ---------------------------------------------------------------------------------------------------------
# measured beside estimated, explained
# ---------------------------------------------------------------------------------------------------------
def assemble(req: DistributedRequest, records: list[RankRecord], launcher: str) -> DistributedProfile:
    from memplan.memory.estimate import estimate_memory

    world = req.nproc if launcher != "torchrun" else len(records)
    est_setup = strategy_setup(req.setup, req.strategy, world)
    est = estimate_memory(est_setup, kernels="cuda" if req.device == "cuda" else "cpu")
    g = est.per_gpu
    # tensors the estimate counts as communication buffers (memory/overheads.py): DDP's buckets, DeepSpeed's bucket
    buckets = [c.bytes for c in est.components if c.name in ESTIMATE_BUCKET_LINES]
    nccl = [c.bytes for c in est.components if c.name == "NCCL buffers"]
    estimated = RankEstimated(weights=g.weights, master_weights=g.master_weights, gradients=g.gradients,
                              optimizer_states=g.optimizer_states, model_states=g.model_states,
                              gathered_parameters=g.gathered_parameters, peak_allocated=g.peak_allocated,
                              communication_buffers=sum(buckets) if buckets else None,
                              backend_device_bytes=sum(nccl) if nccl and req.device == "cuda" else None)
    r0 = records[0]
    ranks = []
    for rec in records:
        m = rec.measured
        diff = {f: getattr(m, f) - getattr(estimated, f) for f in COMPARED
                if getattr(estimated, f) is not None and getattr(m, f) is not None}
        ranks.append(RankResult(rank=rec.rank, measured=m, estimated=estimated, difference=diff,
                                explanations=explain(req, rec, estimated, world)))
    notes = [f"rank {rec.rank}: OUT OF MEMORY during {rec.oom_phase}: {rec.oom_message} (the figures are what was "
             "measured up to then)" for rec in records if rec.oom]
    notes += sorted({n for rec in records for n in rec.notes})
    if req.device == "fake":
        notes.append("fake process group: collectives move no data; shard layout and bytes are exact, losses absent")
    if req.device == "cpu":
        notes.append("gloo's own buffers live outside torch tensors and are not counted (cpu)")
    return DistributedProfile(
        created_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), strategy=req.strategy,
        world_size=world, backend={"cpu": "gloo", "cuda": "nccl", "fake": "fake"}[req.device], device=req.device,
        launcher=launcher, model=req.setup.model.name, parameters=r0.parameters, model_source=r0.model_source,
        recipe=req.setup.recipe.name, optimizer=req.setup.optimizer.name, optimizer_impl=r0.optimizer_impl,
        mixed_precision=r0.mixed_precision, wrapping=r0.wrapping, estimate_convention=est.convention,
        estimate_flags=estimate_flags(req.strategy, world), losses=records[0].losses, ranks=ranks, notes=notes,
        torch_version=torch.__version__, setup=req.setup)


def _element_bytes(req: DistributedRequest) -> tuple[float, float]:
    """Bytes per element of the stored parameters (and their gradients), and of the optimizer states."""
    r = req.setup.recipe
    fsdp = req.strategy in ("zero2", "zero3")
    mixed = fsdp and (req.mixed_precision or (req.mixed_precision is None and r.master_weights is not None))
    store = (r.master_weights or r.weights) if mixed else r.weights
    # torch.optim creates its states like the parameters it updates: the fp32 master copy if any
    return store.bytes, (r.master_weights or store).bytes


def explain(req: DistributedRequest, rec: RankRecord, e: RankEstimated, world: int) -> dict[str, str]:
    """Why each measured field differs from the estimate, with the exact figure where the layout predicts it."""
    m, s = rec.measured, req.setup
    out: dict[str, str] = {}
    wb, sb = _element_bytes(req)
    gb = wb  # autograd (DDP) and FSDP's reduce-scatter output (cast back) give gradients the parameters' dtype
    k = s.optimizer.states
    n = rec.parameters

    def verdict(field: str, predicted: int | None, why: str) -> None:
        got, want = getattr(m, field), getattr(e, field)
        if want is None:
            want = 0
        if got == want:
            out[field] = "equal to the estimate" + (f" ({why})" if why and predicted is None else "")
            return
        if predicted is not None and predicted == got:
            out[field] = f"{why}: predicted {predicted:,} B exactly ({got - want:+,} B vs the estimate)"
        elif predicted is not None:
            out[field] = f"{why}: predicted {predicted:,} B, measured {got:,} B (unexplained {got - predicted:+,} B)"
        else:
            out[field] = why or f"differs by {got - want:+,} B"

    shapes = [tuple(x) for x in rec.shapes]
    if req.strategy in ("zero2", "zero3"):
        padded = shard_layout.fsdp_padded_shard_elements(shapes, world)
        local = shard_layout.fsdp_local_shard_elements(shapes, world, rec.rank)
        pad = (f"FSDP2 pads dim 0 of each parameter to a multiple of W={world} ({padded:,} stored elements per rank "
               f"vs N/W = {n / world:,.1f})" if padded * world != n else
               f"sharded over W={world}: every dim 0 divides by W, no padding")
        if req.strategy == "zero2" and e.weights >= int(n * wb):
            pad += "; the estimate (states.py, --engine fsdp --zero 2) counts the weights unsharded, but FSDP2 with " \
                   "reshard_after_forward=False stores them sharded between steps"
        verdict("weights", int(padded * wb), pad)
        verdict("gradients", int(padded * gb), "the reduce-scatter output holding the gradient shards has the same "
                                               "padded size (one storage per FSDP module)")
        verdict("optimizer_states", int(local * k * sb),
                f"states cover this rank's unpadded torch.chunk piece ({local:,} elements; uneven: the last ranks "
                f"hold fewer rows)")
        cb = _compute_bytes(req)
        # an unsharded parameter is the all-gather output: W x the padded shard (_fsdp_param.py init_all_gather_outputs)
        root = world * shard_layout.fsdp_padded_shard_elements(rec.root_shapes, world)
        block = world * shard_layout.fsdp_padded_shard_elements(rec.block_shapes, world)
        gathered = m.gathered_parameters
        k = (gathered / cb - root) / block if block else 0
        held = (f"the root group (embeddings, final norm, LM head: {root:,} elements padded) + {k:g} block(s) of "
                f"{block:,} at {cb:g} B" if block and k == int(k) else f"{gathered:,} B")
        verdict("gathered_parameters", None,
                "estimate: the root group + " + ("every block (gathered from forward to backward)"
                                                 if req.strategy == "zero2" else
                                                 "2 blocks in flight (computing + prefetched on a CUDA stream)")
                + f"; measured at most {held}" + ("" if req.strategy == "zero2" or req.device == "cuda" else
                                                  " (without CUDA streams FSDP2 does not prefetch ahead)"))
        verdict("communication_buffers", None,
                "FSDP's flat all-gather outputs and reduce-scatter inputs (padded, per group); FSDP2 keeps the "
                "previous group's reduce-scatter input until the next is issued; not in the estimate yet")
    else:
        if req.strategy == "zero1":
            parts = shard_layout.zero1_partition_elements([_numel(x) for x in shapes], world)
            verdict("optimizer_states", int(parts[rec.rank] * k * sb),
                    f"ZeroRedundancyOptimizer gives whole parameters to ranks greedily (largest first): this rank owns "
                    f"{parts[rec.rank]:,} of {n:,} elements ({parts[rec.rank] / n:.1%} vs 1/W = {1 / world:.1%})")
        else:
            verdict("optimizer_states", None, "")
        verdict("weights", None, "")
        verdict("gradients", None, "")
        verdict("master_weights", None, "")
        buckets = shard_layout.ddp_bucket_elements(_numel(x) for x in shapes)
        why = (f"DDP's gradient buckets (bucket_cap_mb={DDP_BUCKET_CAP_MB}): a flat copy of all {buckets:,} "
               "gradient elements")
        if rec.buffer_bytes:
            why += f", + the flat copy of the module buffers ({rec.buffer_bytes:,} B) broadcast from rank 0 each forward"
        if e.communication_buffers is None:
            why += "; the estimate counts no buckets for this convention (memory/overheads.py: --zero 0 only)"
        verdict("communication_buffers", int(buckets * gb) + rec.buffer_bytes, why)
    if m.backend_device_bytes is not None:
        verdict("backend_device_bytes", None, "device memory outside torch's allocator that "
                                              "init_process_group and a first all-reduce took (NCCL communicators); the estimate assumes "
                                              "memory/overheads.py's NCCL line")
    verdict("model_states", None, "sum of the above")
    parts_at_peak = ", ".join(f"{c} {v:,}" for c, v in m.at_peak.items() if v)
    why = f"measured peak in {m.peak_phase}: {parts_at_peak}"
    verdict("peak_allocated", None, why)
    return out


def _compute_bytes(req: DistributedRequest) -> float:
    """Bytes per element of FSDP's unsharded parameters: param_dtype under MixedPrecisionPolicy, else stored."""
    r = req.setup.recipe
    mixed = req.mixed_precision or (req.mixed_precision is None and r.master_weights is not None)
    return r.compute.bytes if mixed else _element_bytes(req)[0]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
