"""Tensor-core TFLOP/s per dtype and memory bandwidth of this device.

Method (what the figures mean): square n x n matmuls, 2*n^3 FLOPs each; `warmup` untimed runs, then `repeats`
runs each timed alone (CUDA events on cuda, perf_counter on cpu) with the L2 cache flushed before each (a write
of a buffer larger than L2), median reported -- the convention of triton.testing.do_bench.
Bandwidth: a device-to-device copy of `copy_bytes`, counting bytes read + bytes written (STREAM 'Copy').
fp8 uses torch._scaled_mm (e4m3 inputs, bf16 output, use_fast_accum=True: the fp8 GEMM as training recipes run
it, Transformer Engine's forward and DeepSpeed/torchao's default; the default split accumulation is the slower,
more accurate one) and runs only where the device supports it (sm_89+); _scaled_mm needs every dimension divisible
by 16 (aten/src/ATen/native/cuda/Blas.cpp _scaled_mm_out_cuda), so fp8 rounds n up to a multiple of 16 and says so.
A dtype that fails for another reason is a note, never the loss of the dtypes already measured.
"""
from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

import torch

from memplan.measure.oom import first_line, is_out_of_memory
from memplan.results.profile import BandwidthBench, BenchResult, MatmulBench

_L2_FLUSH_BYTES = 256 * 2**20  # larger than any current GPU's L2 (H100: 50 MB, B200: 126 MB)
DEFAULT_SIZE = {"cuda": 8192, "cpu": 1024}
DEFAULT_COPY_BYTES = {"cuda": 2 * 2**30, "cpu": 256 * 2**20}


def default_size(device: str) -> int:
    return DEFAULT_SIZE["cuda" if device == "cuda" else "cpu"]


def flush_bytes(device: str) -> int:
    """The L2-flush buffer held through the matmuls (cuda only)."""
    return _L2_FLUSH_BYTES if device == "cuda" else 0


def default_copy_bytes(device: str, memory_bytes: int | None = None) -> int:
    """The copy benchmark's buffer size: 2 GiB on cuda, 256 MiB on cpu, at most 1/8 of the memory (src + dst)."""
    nbytes = DEFAULT_COPY_BYTES["cuda" if device == "cuda" else "cpu"]
    if memory_bytes:
        nbytes = min(nbytes, max(2**20, memory_bytes // 8))
    return nbytes


def _timer(device: str):
    if device == "cuda":
        def run(fn) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
    else:
        def run(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return run


def _median_time(fn, device: str, warmup: int, repeats: int, flush: torch.Tensor | None) -> float:
    timer = _timer(device)
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if flush is not None:
            flush.zero_()  # evict the operands from L2 so each multiply reads HBM
        times.append(timer(fn))
    return statistics.median(times)


def fp8_supported(device: str) -> bool:
    if device != "cuda" or not hasattr(torch, "float8_e4m3fn"):
        return False
    major, minor = torch.cuda.get_device_capability()
    return (major, minor) >= (8, 9)


def matmul_bench(dtype: str, device: str, n: int, warmup: int = 3, repeats: int = 10,
                 flush: torch.Tensor | None = None) -> tuple[float, float]:
    """(median seconds, TFLOP/s) of an n x n x n matmul in `dtype` (fp32, tf32, bf16, fp16, fp8)."""
    from memplan.measure.cuda import set_tf32_matmul

    dev = torch.device(device)
    if dtype == "fp8":
        n = fp8_size(n)
    torch_dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                   "fp16": torch.float16, "fp8": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=dev, dtype=torch_dtype)
    b = torch.randn(n, n, device=dev, dtype=torch_dtype)
    restore_tf32 = set_tf32_matmul(dtype == "tf32")  # the fp32_precision API where torch has it (cuda.py)
    try:
        if dtype == "fp8":
            a8 = a.to(torch.float8_e4m3fn)
            b8 = b.to(torch.float8_e4m3fn).t()  # _scaled_mm wants the second operand column-major
            one = torch.ones((), device=dev, dtype=torch.float32)

            def fn():
                return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                        use_fast_accum=True)
        else:
            def fn():
                return a @ b
        seconds = _median_time(fn, device, warmup, repeats, flush)
    finally:
        restore_tf32()
    return seconds, 2 * n ** 3 / seconds / 1e12


def fp8_size(n: int) -> int:
    """n rounded up to a multiple of 16, what torch._scaled_mm accepts."""
    return -(-n // 16) * 16


def copy_bench(device: str, nbytes: int, warmup: int = 3, repeats: int = 10) -> tuple[float, float]:
    """(median seconds, GB/s) of copying `nbytes` device-to-device; GB/s counts read + write."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = _median_time(lambda: dst.copy_(src), device, warmup, repeats, None)
    return seconds, 2 * nbytes / seconds / 1e9


def run_bench(device: str | None = None, dtypes: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8"),
              n: int | None = None, repeats: int = 10, copy_bytes: int | None = None, gpu=None,
              progress=None) -> BenchResult:
    """Every dtype this device runs; `gpu` (a GPUSpec) gives the peaks to compare with."""
    say = progress or (lambda _m: None)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    notes: list[str] = []
    n = n or default_size(device)
    copy_bytes = copy_bytes or default_copy_bytes(device)
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        import platform

        name = platform.processor() or platform.machine() or "cpu"
        notes.append(f"measured the CPU ({torch.get_num_threads()} threads), not a GPU: no tensor cores, no L2 flush")
    results: list[MatmulBench] = []
    bandwidth = None
    oom: tuple[str, str] | None = None
    phase = "L2-flush buffer"
    # an out-of-memory is a result: what was measured before it, and where it happened
    try:
        flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda") if device == "cuda" else None
        for dtype in dtypes:
            if dtype == "fp8" and not fp8_supported(device):
                notes.append("fp8 skipped: needs a cuda device with compute capability >= 8.9")
                continue
            if dtype == "tf32" and device != "cuda":
                continue
            size = fp8_size(n) if dtype == "fp8" else n
            if size != n:
                notes.append(f"fp8: n={n} rounded up to {size} (torch._scaled_mm needs multiples of 16)")
            phase = f"matmul {dtype} n={size}"
            say(phase)
            try:
                seconds, tflops = matmul_bench(dtype, device, n, repeats=repeats, flush=flush)
            except Exception as exc:  # noqa: BLE001 - an out-of-memory stops the bench; anything else skips a dtype
                if is_out_of_memory(exc):
                    raise
                notes.append(f"{dtype} skipped: {type(exc).__name__}: {first_line(exc)}")
                continue
            peak = gpu.peak_tflops.get(dtype) if gpu is not None and device == "cuda" else None
            results.append(MatmulBench(dtype=dtype, n=size, repeats=repeats, median_seconds=seconds,
                                       achieved_tflops=tflops, peak_tflops=peak,
                                       fraction_of_peak=tflops / peak if peak else None))
        flush = None
        phase = f"copy {copy_bytes / 2**20:.0f} MiB"
        say(phase)
        seconds, gbps = copy_bench(device, copy_bytes, repeats=repeats)
        peak_bw = gpu.memory_bandwidth_gbps if gpu is not None and device == "cuda" else None
        bandwidth = BandwidthBench(bytes_copied=copy_bytes, median_seconds=seconds, achieved_gbps=gbps,
                                   peak_gbps=peak_bw, fraction_of_peak=gbps / peak_bw if peak_bw else None)
    except Exception as exc:  # noqa: BLE001 - only an out-of-memory is a result
        if not is_out_of_memory(exc):
            raise
        oom = (phase, first_line(exc))
    if oom is not None:
        flush = None
        if device == "cuda":
            torch.cuda.empty_cache()
        notes.append(f"out of memory during {oom[0]}: the measurements after it were not made")
    return BenchResult(created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), device=device,
                       device_name=name, gpu_profile=gpu.name if gpu is not None and device == "cuda" else None,
                       torch_version=torch.__version__, matmul=results, bandwidth=bandwidth, oom=oom is not None,
                       oom_phase=oom[0] if oom else None, oom_message=oom[1] if oom else None, notes=notes)
