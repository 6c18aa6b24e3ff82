"""What only a real GPU can tell: the caching allocator's peaks per phase, NVML's view of the process, step time
by CUDA events, FLOPs by FlopCounterMode -> achieved TFLOP/s, MFU and HFU; and the allocator snapshot.

- torch.cuda.memory_stats(): `allocated_bytes.all.peak` (what max_memory_allocated reports), `reserved_bytes`
  (segments cudaMalloc'ed by the caching allocator), `active_bytes` (allocated + blocks awaiting stream sync),
  `requested_bytes` (what callers asked for, before the allocator rounds to 512 B blocks).  Peaks are reset at
  every phase boundary (torch.cuda.reset_peak_memory_stats), so each phase's figure is its own.
- NVML (pynvml): this process's used memory; `used - reserved` is the CUDA context + cuBLAS/cuDNN workspaces +
  anything allocated outside torch's allocator (the "overheads" the estimate adds).
- MFU/HFU as PaLM (Chowdhery et al. 2022) appendix B defines them: model FLOPs per token 6N + 12*L*H*Q*T
  (forward + backward, no recompute) over step time and the GPU's dense peak; HFU counts the FLOPs actually run
  (with recompute), which FlopCounterMode measures.
"""
from __future__ import annotations

import os
import statistics

import torch

from memplan.results.profile import CudaInfo, PhasePeak
from memplan.spec.model import Model, count_parameters

_STAT_KEYS = {"allocated": "allocated_bytes.all.peak", "reserved": "reserved_bytes.all.peak",
              "active": "active_bytes.all.peak", "requested": "requested_bytes.all.peak"}


# ---- pure arithmetic (tested on cpu) ------------------------------------------------------------------------
def model_flops_per_step(m: Model, micro_batch: int, seq: int) -> int:
    """PaLM appendix B: tokens * (6N + 12*L*H*Q*T), N = parameters that take part in matmuls.

    N excludes the input token embedding when it is untied (a lookup, no FLOPs) and learned position
    embeddings (an addition), as nanoGPT's estimate_mfu does for PaLM's formula; MoE counts active parameters.
    The attention term walks the layer groups: H*Q is each layer's heads x head dim and T the keys a query sees
    (its window for sliding/chunked layers, else the sequence).
    """
    pc = count_parameters(m)
    n = pc.active
    if not m.head.tied:
        n -= m.vocab_size * m.hidden_size
    if m.embeddings.learned_positions:
        n -= m.max_positions * m.hidden_size
    tokens = micro_batch * seq
    attention = sum(g.count * g.layer.attention.q_size * min(seq, g.layer.attention.window or seq)
                    for g in m.groups)
    return tokens * (6 * n + 12 * attention)


def utilization(flops: int | None, seconds: float | None, peak_tflops: float | None) -> float | None:
    """flops / (seconds * peak): MFU with model FLOPs, HFU with hardware FLOPs (PaLM appendix B)."""
    if not flops or not seconds or not peak_tflops:
        return None
    return flops / (seconds * peak_tflops * 1e12)


def median_seconds(times: list[float]) -> float | None:
    return statistics.median(times) if times else None


def peak_tflops_for(device_name: str, compute: str) -> float | None:
    """The GPU profile's dense peak for `compute` (fp32 means fp32 without TF32, torch's matmul default)."""
    from memplan.catalog import get_gpu
    from memplan.errors import MemplanError

    try:
        gpu = get_gpu(device_name)
    except MemplanError:
        return None
    return gpu.peak_tflops.get(compute)


# ---- TF32, versions, attention kernels ------------------------------------------------------------------
def tf32_matmul_enabled() -> bool:
    """Whether fp32 matmuls run on TF32 tensor cores.

    torch >= 2.9 has `torch.backends.cuda.matmul.fp32_precision` ("ieee" | "tf32" | "none";
    torch/backends/cuda/__init__.py cuBLASModule.__getattr__); once it has been set, reading the legacy
    `allow_tf32` raises RuntimeError ("you have used mix of the legacy and new APIs",
    aten/src/ATen/Context.cpp allowTF32CuBLAS at 2.9-2.13).  The new API is read first; the legacy flag only where
    the new one does not exist or says "none" (not set: the legacy flag decides)."""
    matmul = torch.backends.cuda.matmul
    try:
        new = getattr(matmul, "fp32_precision", None)
    except (RuntimeError, AttributeError):
        new = None
    if new in ("tf32", "ieee"):
        return new == "tf32"
    try:
        return bool(matmul.allow_tf32)
    except RuntimeError:  # the APIs were mixed: the new one was set, and says something we do not know
        return False


def set_tf32_matmul(enabled: bool):
    """Set TF32 for fp32 matmuls through the API this torch has (the new one where it exists: mixing them makes
    reads raise); returns a function restoring the previous setting."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        try:
            old = matmul.fp32_precision
            matmul.fp32_precision = "tf32" if enabled else "ieee"
            return lambda: setattr(matmul, "fp32_precision", old)
        except (RuntimeError, AttributeError):
            pass
    old_flag = tf32_matmul_enabled()
    matmul.allow_tf32 = enabled
    return lambda: setattr(matmul, "allow_tf32", old_flag)


def library_versions() -> dict[str, str | None]:
    """torch, the CUDA it was built with, cuDNN (torch.backends.cudnn.version(): e.g. 91500 = 9.15.0) and the
    allocator configuration (PYTORCH_CUDA_ALLOC_CONF, renamed PYTORCH_ALLOC_CONF in torch 2.9, both read by
    c10/core/AllocatorConfig.cpp), so that a record says what it was measured with."""
    cudnn = None
    try:
        v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if v:
            cudnn = f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else str(v)
    except (RuntimeError, AttributeError):
        cudnn = None
    alloc = os.environ.get("PYTORCH_ALLOC_CONF") or os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or "default"
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn, "allocator_config": alloc}


# aten ops of scaled_dot_product_attention, by the kernel they run (aten/src/ATen/native/native_functions.yaml)
SDPA_KERNELS = {"_scaled_dot_product_flash_attention": "flash",
                "_scaled_dot_product_flash_attention_for_cpu": "flash-cpu",
                "_scaled_dot_product_efficient_attention": "efficient",
                "_scaled_dot_product_cudnn_attention": "cudnn",
                "_scaled_dot_product_fused_attention_overrideable": "overrideable",
                "_scaled_dot_product_attention_math": "math",
                "_scaled_dot_product_attention_math_for_mps": "math-mps"}


def _torch_at_least(version: str, major: int, minor: int) -> bool:
    parts = [int("".join(c for c in x if c.isdigit()) or 0) for x in version.split("+")[0].split(".")[:2]]
    return tuple(parts) >= (major, minor)


def expected_sdpa_kernels(device: str, dtype, gqa: bool, mask: bool, head_dim: int = 128,
                          torch_version: str | None = None) -> tuple[str, ...]:
    """The kernels torch's sdpa may choose (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp
    select_sdp_backend, sm80+): flash for 16-bit inputs without a mask (GQA natively, head dim <= 256), cuDNN where
    torch ranks it first (sm90+, recent cuDNN), memory-efficient with a mask or fp32 -- but before torch 2.13 the
    memory-efficient kernel has no GQA (check_for_gqa), so fp32 GQA falls to the math path, which keeps the
    s x s scores per layer (issue 25; measure/trace/emulate.py cuda_backend assumes efficient there).  On the CPU:
    the CPU flash kernel, or math."""
    import torch as _torch

    if device != "cuda":
        return ("flash-cpu", "math")
    half = dtype in (_torch.float16, _torch.bfloat16)
    if half and not mask and head_dim <= 256:
        return ("flash", "cudnn")
    if half:
        return ("efficient", "cudnn")
    if gqa and not _torch_at_least(torch_version or _torch.__version__, 2, 13):
        return ("math",)
    return ("efficient",)


def _causal_flag(func, args, kwargs) -> bool:
    if "is_causal" in kwargs:
        return bool(kwargs["is_causal"])
    for i, a in enumerate(func._schema.arguments):
        if a.name == "is_causal":
            return bool(args[i]) if i < len(args) else bool(a.default_value)
    return False


class AttentionSpy(torch.utils._python_dispatch.TorchDispatchMode):
    """Which sdpa kernel ran (the aten op the dispatcher chose), and, for causal calls, the FLOPs that
    torch.utils.flop_counter counts but no kernel runs: its sdpa_flop_count / sdpa_backward_flop_count count the
    full s_q x s_k square, a causal kernel computes s(s+1)/2 of its query-key pairs (flash/efficient/cudnn skip the
    masked blocks).  The math path materialises and multiplies the full square: it is not corrected."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: dict[str, int] = {}
        self.causal_excess_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        base = name.removesuffix("_backward")
        if base in SDPA_KERNELS:
            if not name.endswith("_backward"):
                self.kernels[SDPA_KERNELS[base]] = self.kernels.get(SDPA_KERNELS[base], 0) + 1
            if SDPA_KERNELS[base] in ("flash", "efficient", "cudnn") and _causal_flag(func, args, kwargs):
                self.causal_excess_flops += causal_excess(name, args)
        return func(*args, **kwargs)


def causal_excess(name: str, args) -> int:
    """FLOPs torch's flop counter counts for this causal sdpa call beyond the s(s+1)/2 query-key pairs it runs."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    if name.endswith("_backward"):
        grad, q, k, v = (tuple(t.shape) for t in args[:4])
        full = sdpa_backward_flop_count(grad, q, k, v)
    else:
        q, k, v = (tuple(t.shape) for t in args[:3])
        full = sdpa_flop_count(q, k, v)
    s_q, s_k = q[-2], k[-2]
    if s_q != s_k:
        return 0  # a causal mask over unequal lengths (decoding) is not a triangle: left as counted
    return full - full * (s_k + 1) // (2 * s_k)


# ---- NVML ------------------------------------------------------------------------------------------------
def _nvml_call(pynvml, notes: list[str], what: str, fn, *args):
    """One NVML query; an NVMLError (NotSupported, NoPermission, ... -- refused in many VMs and containers) is a
    note, not a crash."""
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        notes.append(f"NVML {what}: {exc}")
        return None


def nvml_info(device_index: int, uuid: str | None = None) -> dict:
    """Driver, total memory, and this process's used memory (None where NVML cannot list our PID: the device-wide
    figure is kept apart as device_used, never passed off as this process's)."""
    try:
        import pynvml
    except ImportError:
        return {"note": "pynvml not installed (`pip install nvidia-ml-py`): no NVML figures"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"note": f"NVML unavailable: {exc}"}
    notes: list[str] = []
    try:
        if uuid is None:
            try:
                uuid = str(torch.cuda.get_device_properties(device_index).uuid)
            except (RuntimeError, AssertionError, AttributeError):
                uuid = None
        handle = None
        if uuid:  # CUDA_VISIBLE_DEVICES renumbers devices; the UUID names the physical one
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except pynvml.NVMLError:
                handle = None
        if handle is None:
            handle = _nvml_call(pynvml, notes, "device handle", pynvml.nvmlDeviceGetHandleByIndex, device_index)
        driver = _nvml_call(pynvml, notes, "driver version", pynvml.nvmlSystemGetDriverVersion)
        out: dict = {"driver": driver.decode() if isinstance(driver, bytes) else driver,
                     "total": None, "used": None, "device_used": None}
        if handle is not None:
            mem = _nvml_call(pynvml, notes, "memory info", pynvml.nvmlDeviceGetMemoryInfo, handle)
            if mem is not None:
                out["total"], out["device_used"] = int(mem.total), int(mem.used)
            procs = _nvml_call(pynvml, notes, "running processes", pynvml.nvmlDeviceGetComputeRunningProcesses,
                               handle)
            for proc in procs or []:
                mine = getattr(proc, "usedGpuMemory", None)
                # NVML_VALUE_NOT_AVAILABLE (2^64 - 1) where the driver cannot tell (nvml.h nvmlProcessInfo_t)
                if proc.pid == os.getpid() and mine is not None and mine < 2**63:
                    out["used"] = int(mine)
            if procs is not None and out["used"] is None:
                notes.append("NVML does not list this PID (a container PID namespace?): no per-process figure "
                             "(device_used is the whole device's)")
        if notes:
            out["note"] = "; ".join(notes)
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


# ---- the session the runner drives --------------------------------------------------------------------------
class CudaSession:
    """Observer of the measured step on cuda (runner.py calls set_phase at each boundary), then timing and FLOPs.

    timed_steps: steps timed with CUDA events after the measured one (median reported).
    snapshot: path for torch.cuda.memory._dump_snapshot of the measured step (view at pytorch.org/memory_viz).
    """

    def __init__(self, step, timed_steps: int = 5, snapshot: str | None = None, count_flops: bool = True,
                 snapshot_force: bool = False) -> None:
        self.step = step
        self.timed_steps = timed_steps
        self.snapshot = snapshot
        self.snapshot_force = snapshot_force
        self.count_flops = count_flops
        self.device_index = torch.cuda.current_device()
        self.phase: str | None = None
        self.phase_stats: dict[str, dict[str, int]] = {}
        self.allocated_peak: int | None = None
        self.reserved_peak: int | None = None
        self.active_peak: int | None = None
        self.requested_peak: int | None = None
        self.times: list[float] = []
        self.flops: int | None = None
        self.nvml: dict = {}
        self.reserved_at_nvml: int | None = None
        self.notes: list[str] = []
        self.attention_kernels: dict[str, int] = {}
        self.untracked_bytes: int | None = None
        self._recording = False
        self.snapshot_written = False
        # peaks from earlier measurements in this process (find-max-batch probes) must not leak into this one
        torch.cuda.reset_peak_memory_stats(self.device_index)

    def _close_phase(self) -> None:
        if self.phase is None:
            return
        stats = torch.cuda.memory_stats(self.device_index)
        self.phase_stats[self.phase] = {k: int(stats.get(key, 0)) for k, key in _STAT_KEYS.items()}

    def set_phase(self, name: str) -> None:
        self._close_phase()
        self.phase = name
        torch.cuda.reset_peak_memory_stats(self.device_index)

    def before_measured_step(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(self.device_index)
        if self.snapshot:
            torch.cuda.memory._record_memory_history(max_entries=200_000)
            self._recording = True

    def after_measured_step(self, phases, tracked_bytes: int | None = None) -> None:
        """`tracked_bytes`: the tensor bytes the tracker counts alive now; the allocator's surplus over them is
        mostly the cuBLAS/cuBLASLt workspaces (one per handle and stream, allocated through the caching allocator
        since torch 2.3: CublasHandlePool.cpp getCurrentCUDABlasHandle), inside max_memory_allocated."""
        torch.cuda.synchronize()
        if tracked_bytes is not None:
            self.untracked_bytes = torch.cuda.memory_allocated(self.device_index) - tracked_bytes
            self.notes.append(f"allocated in no tensor after the step: {self.untracked_bytes / 2**20:.1f} MiB "
                              "(cuBLAS workspaces and the allocator's 512 B rounding): inside peak_allocated, which "
                              "memory/overheads.py counts outside it as 'cuBLAS workspace'")
        self._close_phase()
        self.phase = None
        measured = {k: v for k, v in self.phase_stats.items() if k != "done"} or self.phase_stats
        for field, key in (("allocated_peak", "allocated"), ("reserved_peak", "reserved"),
                           ("active_peak", "active"), ("requested_peak", "requested")):
            setattr(self, field, max((s[key] for s in measured.values()), default=None))
        self._stop_snapshot()
        self.reserved_at_nvml = torch.cuda.memory_reserved(self.device_index)
        self.nvml = nvml_info(self.device_index)
        if self.nvml.get("note"):
            self.notes.append(self.nvml["note"])
        self._time_steps()
        if self.count_flops:
            self._count_flops()

    def after_oom(self) -> None:
        """What the allocator saw up to the out-of-memory error (no timing, no FLOPs)."""
        self._close_phase()
        self.phase = None
        stats = list(self.phase_stats.values())
        # an OOM in warm-up has no phase stats: the allocator's peak since the process started stands in
        self.allocated_peak = max((s["allocated"] for s in stats), default=torch.cuda.max_memory_allocated())
        self.reserved_peak = max((s["reserved"] for s in stats), default=torch.cuda.max_memory_reserved())
        self._stop_snapshot()

    def _stop_snapshot(self) -> None:
        if self._recording:
            from memplan.outfiles import write_new_file_with

            try:  # through a temporary file: complete or not at all, never over a non-regular file
                write_new_file_with(self.snapshot, lambda tmp: torch.cuda.memory._dump_snapshot(str(tmp)),
                                    force=self.snapshot_force, what="--snapshot")
            finally:
                torch.cuda.memory._record_memory_history(enabled=None)
                self._recording = False
            self.snapshot_written = True

    def _time_steps(self) -> None:
        from memplan.measure.phases import _Phases

        for _ in range(self.timed_steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                self.step.run(_Phases([]))
            except torch.OutOfMemoryError:
                self.notes.append("out of memory in a timed step (fragmentation?): timing incomplete")
                break
            end.record()
            torch.cuda.synchronize()
            self.times.append(start.elapsed_time(end) / 1000.0)

    def _count_flops(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        from memplan.measure.phases import _Phases

        counter = FlopCounterMode(display=False)
        spy = AttentionSpy()
        try:
            with counter, spy:
                self.step.run(_Phases([]))
            counted = int(counter.get_total_flops())
            # causal sdpa: the counter counts the full square, the kernel runs the triangle (+7% TFLOP/s at 1B/2k)
            self.flops = counted - min(spy.causal_excess_flops, counted)
            if spy.causal_excess_flops:
                self.notes.append(f"causal attention: {spy.causal_excess_flops:,} of FlopCounterMode's "
                                  f"{counted:,} FLOPs are masked query-key pairs no fused kernel runs; not counted")
        except torch.OutOfMemoryError:
            self.notes.append("out of memory while counting FLOPs")
        self.attention_kernels = dict(spy.kernels)
        if spy.kernels:
            self.notes.append("sdpa kernel(s) run: " + ", ".join(f"{k} x{n}" for k, n in sorted(spy.kernels.items())))

    @property
    def peak_phase(self) -> str | None:
        """The phase of the allocator's peak (the same source as allocated_peak: phase-by-phase memory_stats)."""
        measured = {k: v for k, v in self.phase_stats.items() if k != "done"}
        if not measured:
            return None
        return max(measured, key=lambda k: measured[k]["allocated"])

    def annotate_phases(self, phases: list[PhasePeak]) -> None:
        for p in phases:
            s = self.phase_stats.get(p.name)
            if s:
                p.allocated_peak_bytes, p.reserved_peak_bytes = s["allocated"], s["reserved"]
                p.active_peak_bytes, p.requested_peak_bytes = s["active"], s["requested"]

    def info(self) -> CudaInfo:
        name = torch.cuda.get_device_name(self.device_index)
        setup = self.step.setup
        seconds = median_seconds(self.times)
        model_flops = None
        if setup.model.architecture is not None:
            model_flops = model_flops_per_step(setup.model.architecture, self.step.batch, self.step.seq)
        compute = setup.recipe.compute.value
        if compute == "fp32" and tf32_matmul_enabled():
            compute = "tf32"
        peak = peak_tflops_for(name, compute)
        if peak is None:
            self.notes.append(f"no GPU profile matches {name!r} (or it has no {compute} peak): no MFU")
        used = self.nvml.get("used")  # this process's, from NVML's process list; None where NVML cannot list it
        v = library_versions()
        self.notes.append(f"measured with torch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}, driver "
                          f"{self.nvml.get('driver')}, allocator config {v['allocator_config']}")
        return CudaInfo(
            device_name=name, driver=self.nvml.get("driver"), total_memory_bytes=self.nvml.get("total"),
            reserved_peak_bytes=self.reserved_peak, active_peak_bytes=self.active_peak,
            requested_peak_bytes=self.requested_peak, nvml_used_bytes=used,
            context_overhead_bytes=(used - self.reserved_at_nvml) if used is not None and self.reserved_at_nvml
            is not None else None,
            step_seconds=seconds, step_seconds_all=self.times, flops_per_step=self.flops,
            model_flops_per_step=model_flops,
            achieved_tflops=(self.flops / seconds / 1e12) if self.flops and seconds else None,
            peak_tflops=peak, mfu=utilization(model_flops, seconds, peak), hfu=utilization(self.flops, seconds, peak),
            snapshot_path=self.snapshot if self.snapshot_written else None)
