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


# ---- NVML ------------------------------------------------------------------------------------------------
def nvml_info(device_index: int) -> dict:
    """Driver, total memory, and this process's used memory (None where NVML cannot see our PID)."""
    try:
        import pynvml
    except ImportError:
        return {"note": "pynvml not installed (`pip install nvidia-ml-py`): no NVML figures"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"note": f"NVML unavailable: {exc}"}
    try:
        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        try:  # CUDA_VISIBLE_DEVICES renumbers devices; the UUID names the physical one
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except pynvml.NVMLError:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        driver = pynvml.nvmlSystemGetDriverVersion()
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        used = None
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid():
                used = proc.usedGpuMemory
        out = {"driver": driver.decode() if isinstance(driver, bytes) else driver, "total": int(mem.total),
               "used": int(used) if used is not None else None, "device_used": int(mem.used)}
        if used is None:
            out["note"] = ("NVML does not list this PID (a container PID namespace?): nvml_used is the whole device's "
                           "used memory")
            out["used"] = int(mem.used)
        return out
    finally:
        pynvml.nvmlShutdown()


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

    def after_measured_step(self, phases) -> None:
        torch.cuda.synchronize()
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
            from memplan.report.files import write_new_file_with

            try:  # through a temporary file: complete or not at all, never over a non-regular file
                write_new_file_with(self.snapshot, lambda tmp: torch.cuda.memory._dump_snapshot(str(tmp)),
                                    force=self.snapshot_force, what="--snapshot")
            finally:
                torch.cuda.memory._record_memory_history(enabled=None)
                self._recording = False
            self.snapshot_written = True

    def _time_steps(self) -> None:
        from memplan.measure.runner import _Phases

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

        from memplan.measure.runner import _Phases

        counter = FlopCounterMode(display=False)
        try:
            with counter:
                self.step.run(_Phases([]))
            self.flops = int(counter.get_total_flops())
        except torch.OutOfMemoryError:
            self.notes.append("out of memory while counting FLOPs")

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
        if compute == "fp32" and torch.backends.cuda.matmul.allow_tf32:
            compute = "tf32"
        peak = peak_tflops_for(name, compute)
        if peak is None:
            self.notes.append(f"no GPU profile matches {name!r} (or it has no {compute} peak): no MFU")
        used = self.nvml.get("used")
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
