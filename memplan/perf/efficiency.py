"""Seconds per kernel: a GEMM, a memory-bound op, a fused-attention kernel, from the GPU's efficiency profile.

  GEMM   t = max(2MNK / (peak x e(n) x gemm_scale),  bytes / (HBM x m(bytes) x memory_scale),  floor)
         e(n): the profile's curve at the FLOP-equivalent square side n = (FLOPs / 2)^(1/3) (NVIDIA's cuBLAS sweep
         on A100), the second term a roofline: skinny GEMMs (a few tokens, a narrow TP shard) are memory-bound.
  memory t = max(bytes / (HBM x m(bytes) x memory_scale), floor)      m: the profile's size curve (Calculon)
  flash  t = FLOPs / (peak x flash efficiency x gemm_scale)          FlashAttention-2/3 published utilisation
The scales are the profile's (calibrated on a stated subset of published runs, spec/efficiency.py) times the
user's `--kernel-scale`; a `memplan bench --system` record replaces the curves by what was measured on the
user's GPU (exact shapes where it timed them, its fitted scale elsewhere).  `describe()` lists every number used
and where it comes from, for the output.
"""
from __future__ import annotations

import bisect
import math
from functools import lru_cache

from memplan.errors import MemplanError
from memplan.results.time import KernelEfficiency
from memplan.spec.efficiency import Curve, EfficiencyProfile
from memplan.spec.hardware import GPUSpec
from memplan.spec.training import DType


@lru_cache(maxsize=None)
def _profiles() -> dict[str, EfficiencyProfile]:
    from memplan.catalog import load_kind

    return load_kind("efficiency", EfficiencyProfile)


def efficiency_profile(gpu: GPUSpec) -> EfficiencyProfile:
    """The profile that lists this GPU, else the `generic` one (a stated placeholder)."""
    profiles = _profiles()
    for p in profiles.values():
        if gpu.name in p.gpus:
            return p
    if "generic" not in profiles:
        raise MemplanError(f"no efficiency profile lists {gpu.name} and profiles/efficiency/generic.json is missing")
    return profiles["generic"]


def peak_for(gpu: GPUSpec, dtype: DType) -> float:
    """Dense peak TFLOP/s for the recipe's compute dtype, or a one-line refusal naming what the GPU has."""
    key = dtype.value
    if key not in gpu.peak_tflops:
        have = ", ".join(sorted(gpu.peak_tflops))
        hint = " (use --precision fp16-mixed)" if "fp16" in gpu.peak_tflops and key in ("bf16", "fp8") else ""
        raise MemplanError(f"{gpu.name} has no {key} peak in its profile (it has: {have}){hint}")
    return gpu.peak_tflops[key]


def check_positive(value: float, flag: str) -> float:
    """Finite and > 0, else one line naming the flag."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MemplanError(f"{flag} must be a finite number > 0, got {value}")
    return float(value)


class _Interp:
    """A curve as fast lookups: log-linear in x (GEMM side) or a step function (memory bytes)."""

    def __init__(self, curve: Curve):
        self.step = curve.interpolation == "step"
        self.xs = [float(x) for x, _ in curve.points]
        self.ys = [float(y) for _, y in curve.points]
        self.logx = [math.log(x) for x in self.xs]

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if self.step:
            i = bisect.bisect_right(xs, x) - 1
            return ys[max(i, 0)]
        if x <= xs[0]:
            return ys[0] * (x / xs[0]) ** 3 if x > 0 else ys[0]  # below the sweep: efficiency falls with the work
        if x >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, x) - 1
        w = (math.log(x) - self.logx[i]) / (self.logx[i + 1] - self.logx[i])
        return ys[i] + w * (ys[i + 1] - ys[i])


class Kernels:
    """Kernel timings on one GPU in one compute dtype.  Plain floats and memo tables: the planner calls it often."""

    def __init__(self, gpu: GPUSpec, dtype: DType, profile: EfficiencyProfile | None = None,
                 kernel_scale: float = 1.0, system=None):
        self.gpu, self.dtype = gpu, dtype
        self.profile = profile or efficiency_profile(gpu)
        self.kernel_scale = check_positive(kernel_scale, "--kernel-scale")
        self.peak_tflops = peak_for(gpu, dtype)
        self.peak = self.peak_tflops * 1e12
        # FP8 runs only the linear GEMMs in FP8 (Transformer Engine); attention and the router stay 16-bit at the
        # 16-bit peak.  Where the profile states the FP8 GEMM speed-up measured over BF16 at the same shapes, the
        # FP8 GEMMs run at the BF16 curve x that speed-up rather than at the FP8 peak (2x on paper).
        self.high_peak = self.peak
        if dtype == DType.fp8:
            half = gpu.peak_tflops.get("bf16", gpu.peak_tflops.get("fp16"))
            if half:
                self.high_peak = half * 1e12
                sp = self.profile.fp8_gemm_speedup
                if sp is not None:
                    self.peak = min(self.peak, self.high_peak * sp.value)
        self.hbm = gpu.memory_bandwidth_gbps * 1e9
        p = self.profile
        self.gemm_curve, self.mem_curve = _Interp(p.gemm), _Interp(p.memory)
        self.gemm_scale = p.gemm_scale.value * self.kernel_scale
        self.mem_scale = p.memory_scale.value * self.kernel_scale
        self.flash_fwd = p.flash_forward.value
        self.flash_bwd = p.flash_backward.value
        self.floor = p.kernel_floor_us * 1e-6
        self.overlap_slowdown = p.overlap_slowdown.value
        self.system = system
        self.measured_gemms: dict[tuple, float] = {}
        self.sources: dict[str, str] = {}
        if system is not None:
            from memplan.perf.system import apply_system

            apply_system(self, system)
        self._gemm_memo: dict[tuple, float] = {}
        self._mem_memo: dict[float, float] = {}

    # ---- kernels --------------------------------------------------------------------------------------------
    def memory_seconds(self, nbytes: float) -> float:
        if nbytes <= 0:
            return 0.0
        t = self._mem_memo.get(nbytes)
        if t is None:
            t = max(self.floor, nbytes / (self.hbm * self.mem_curve(nbytes) * self.mem_scale))
            self._mem_memo[nbytes] = t
        return t

    def gemm_seconds(self, M: float, N: float, K: float, batch: float = 1, elem_bytes: float = 2,
                     c_bytes: float | None = None, c_read: bool = False, high_precision: bool = False) -> float:
        """Y[M, N] = X[M, K] W[K, N] (`batch` independent ones): compute- or memory-bound, whichever is slower.
        `c_bytes` is the output element size (fp32 main_grad: 4), `c_read` when C is accumulated into."""
        if M <= 0 or N <= 0 or K <= 0 or batch <= 0:
            return 0.0
        key = (M, N, K, batch, elem_bytes, c_bytes, c_read, high_precision)
        t = self._gemm_memo.get(key)
        if t is not None:
            return t
        measured = None if high_precision and self.high_peak != self.peak else \
            self.measured_gemms.get((int(M), int(N), int(K), int(batch)))
        if measured is not None:
            t = measured / self.kernel_scale
        else:
            flops = 2.0 * M * N * K * batch
            cb = elem_bytes if c_bytes is None else c_bytes
            nbytes = batch * (elem_bytes * (M * K + K * N) + cb * M * N * (2 if c_read else 1))
            side = (flops / 2) ** (1 / 3)  # a batched GEMM fills the GPU with all its batches: index by the total
            peak = self.high_peak if high_precision else self.peak
            t_flops = flops / (peak * self.gemm_curve(side) * self.gemm_scale)
            t = max(t_flops, self.memory_seconds(nbytes), self.floor)
        self._gemm_memo[key] = t
        return t

    def flash_seconds(self, flops: float, phase: str) -> float:
        """A fused attention kernel executing `flops` (the causal half already taken out by the caller)."""
        if flops <= 0:
            return 0.0
        eff = self.flash_fwd if phase == "fwd" else self.flash_bwd
        return max(self.floor, flops / (self.high_peak * eff * self.gemm_scale))

    # ---- what was used ---------------------------------------------------------------------------------------
    def describe(self) -> list[KernelEfficiency]:
        p = self.profile
        scale = f" x --kernel-scale {self.kernel_scale:g}" if self.kernel_scale != 1 else ""
        out = [
            KernelEfficiency(name=f"GEMM curve ({p.name}{', placeholder' if p.placeholder else ''})",
                             value=p.gemm.points[-1][1], source=self.sources.get("gemm", p.gemm.source)),
            KernelEfficiency(name="GEMM in-training scale" + scale, value=self.gemm_scale,
                             source=self.sources.get("gemm_scale", p.gemm_scale.source)),
            KernelEfficiency(name="memory-bound curve", value=p.memory.points[-1][1],
                             source=self.sources.get("memory", p.memory.source)),
            KernelEfficiency(name="memory-bound scale" + scale, value=self.mem_scale,
                             source=self.sources.get("memory_scale", p.memory_scale.source)),
            KernelEfficiency(name="flash attention forward", value=self.flash_fwd,
                             source=self.sources.get("flash_forward", p.flash_forward.source)),
            KernelEfficiency(name="flash attention backward", value=self.flash_bwd,
                             source=self.sources.get("flash_backward", p.flash_backward.source)),
        ]
        if self.measured_gemms:
            out.append(KernelEfficiency(name=f"measured GEMM shapes ({len(self.measured_gemms)})", value=None,
                                        source=self.sources.get("system", "memplan bench --system record")))
        return out
