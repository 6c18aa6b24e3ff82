"""`memplan bench --system`: time the shapes a model and layout run on this GPU, for `memplan time/plan --system`.

What is measured (results/system.py SystemRecord), each the median of `repeats` timed runs after warm-up, the L2
cache flushed before each (memplan/measure/bench.py's method):
  - every distinct GEMM of the op walk (perf/shapes.py): Y[M, N] = X[M, K] W[K, N] in the recipe's compute dtype,
    torch.matmul (torch.bmm for the attention core's batched GEMMs);
  - the fused attention the walk prices (torch.nn.functional.scaled_dot_product_attention: flash on 16-bit CUDA),
    forward and forward + backward, per layer kind's shape; efficiency = causal-half FLOPs / (time x peak);
  - device copies of 1 MB to 1 GB (bytes read + written: STREAM 'Copy'), the memory-bound kernels' curve;
  - with --nproc N > 1: NCCL (gloo on cpu) all-reduce, all-gather, reduce-scatter, all-to-all over N local ranks
    at 1 MiB to 256 MiB, as nccl-tests report bus bandwidth (all-reduce: 2(n-1)/n x bytes / time; the others
    (n-1)/n x bytes / time).
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
from datetime import datetime, timezone

import torch

from memplan.measure.bench import _L2_FLUSH_BYTES, _median_time
from memplan.results.system import (AttentionMeasurement, BandwidthMeasurement, CollectiveMeasurement,
                                    GemmMeasurement, SystemRecord)

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COPY_SIZES = (2**20, 10 * 2**20, 100 * 2**20, 2**30)
COLLECTIVE_SIZES = (2**20, 16 * 2**20, 256 * 2**20)
MAX_CPU_GEMM_FLOPS = 2e10  # on a CPU (tests, dry runs) larger shapes take seconds each: skipped, said so


def time_gemm(M: int, N: int, K: int, batch: int, dtype: torch.dtype, device: str, repeats: int, flush) -> float:
    if batch > 1:
        a = torch.randn(batch, M, K, device=device, dtype=dtype)
        b = torch.randn(batch, K, N, device=device, dtype=dtype)
        return _median_time(lambda: torch.bmm(a, b), device, 2, repeats, flush)
    a = torch.randn(M, K, device=device, dtype=dtype)
    b = torch.randn(K, N, device=device, dtype=dtype)
    return _median_time(lambda: a @ b, device, 2, repeats, flush)


def time_attention(shape, dtype: torch.dtype, device: str, repeats: int) -> tuple[float, float]:
    """(forward seconds, backward seconds) of SDPA on [batch, heads, seq, head_dim]."""
    import torch.nn.functional as F

    q = torch.randn(shape.batch, shape.heads, shape.seq, shape.head_dim, device=device, dtype=dtype,
                    requires_grad=True)
    kv = [torch.randn(shape.batch, shape.kv_heads, shape.seq, shape.head_dim, device=device, dtype=dtype,
                      requires_grad=True) for _ in range(2)]
    gqa = shape.kv_heads != shape.heads

    def fwd():
        return F.scaled_dot_product_attention(q, kv[0], kv[1], is_causal=shape.causal, enable_gqa=gqa)

    out = fwd()
    grad = torch.randn_like(out)
    forward = _median_time(fwd, device, 2, repeats, None)
    both = _median_time(lambda: torch.autograd.backward(fwd(), grad), device, 2, repeats, None)
    return forward, max(both - forward, 1e-9)


def time_copies(device: str, repeats: int, limit: int) -> list[BandwidthMeasurement]:
    out = []
    for n in COPY_SIZES:
        if 2 * n > limit or (device == "cpu" and n > 100 * 2**20):
            break
        src = torch.empty(n, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        s = _median_time(lambda: dst.copy_(src), device, 2, repeats, None)
        out.append(BandwidthMeasurement(bytes=2 * n, seconds=s, gbps=2 * n / s / 1e9))
        del src, dst
    return out


def _collective_rank(rank: int, world: int, device: str, init: str, result: str, repeats: int) -> None:
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    dev = torch.device("cuda", rank) if device == "cuda" else torch.device("cpu")
    if device == "cuda":
        torch.cuda.set_device(rank)
    rows = []
    for nbytes in COLLECTIVE_SIZES if device == "cuda" else COLLECTIVE_SIZES[:1]:
        n = nbytes // 4
        n -= n % world
        x = torch.ones(n, dtype=torch.float32, device=dev)
        shard = torch.empty(n // world, dtype=torch.float32, device=dev)
        ops = {"all_reduce": (lambda: dist.all_reduce(x), 2.0 * (world - 1) / world),
               "all_gather": (lambda: dist.all_gather_into_tensor(x, shard), (world - 1) / world),
               "reduce_scatter": (lambda: dist.reduce_scatter_tensor(shard, x), (world - 1) / world),
               "all_to_all": (lambda: dist.all_to_all_single(torch.empty_like(x), x), (world - 1) / world)}
        for name, (fn, factor) in ops.items():
            try:
                for _ in range(2):
                    fn()
                times = []
                for _ in range(repeats):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    dist.barrier()
                    t0 = _now()
                    fn()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(_now() - t0)
                s = statistics.median(times)
                rows.append((name, n * 4, s, factor * n * 4 / s / 1e9))
            except (RuntimeError, NotImplementedError, ValueError):
                continue  # gloo has no reduce-scatter / all-to-all of this kind
    if rank == 0:
        import json

        with open(result, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def _now() -> float:
    import time

    return time.perf_counter()


def time_collectives(nproc: int, device: str, repeats: int) -> list[CollectiveMeasurement]:
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        result = os.path.join(tmp, "result.json")
        mp.spawn(_collective_rank, args=(nproc, device, init, result, repeats), nprocs=nproc, join=True)
        with open(result) as f:
            rows = json.load(f)
    return [CollectiveMeasurement(collective=name, ranks=nproc, bytes=b, seconds=s, busbw_gbps=bw)
            for name, b, s, bw in rows]


def run_system_bench(setup, device: str, repeats: int = 10, gpu=None, nproc: int = 0, execution: str | None = None,
                     progress=None, memory_bytes: int | None = None) -> SystemRecord:
    from memplan.perf.shapes import walk_shapes

    say = progress or (lambda _m: None)
    dtype_name = "fp32" if device == "cpu" else setup.recipe.compute.value
    if dtype_name not in TORCH_DTYPES:
        dtype_name = "bf16"  # fp8 recipes: the record holds the 16-bit kernels (attention, non-fp8 GEMMs)
    dtype = TORCH_DTYPES[dtype_name]
    notes: list[str] = []
    gemm_shapes, attn_shapes = walk_shapes(setup, execution)
    flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda") if device == "cuda" else None
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine() or "cpu"
        notes.append(f"measured the CPU ({torch.get_num_threads()} threads), not a GPU: `memplan time --system` "
                     "refuses it; this is for trying the sweep out")
    peak = gpu.peak_tflops.get(dtype_name) if gpu is not None and device == "cuda" else None
    gemms = []
    for i, g in enumerate(gemm_shapes, 1):
        flops = 2.0 * g.M * g.N * g.K * g.batch
        if device == "cpu" and flops > MAX_CPU_GEMM_FLOPS:
            notes.append(f"skipped GEMM {g.M}x{g.N}x{g.K}x{g.batch} on the CPU (too slow to time)")
            continue
        say(f"GEMM {i}/{len(gemm_shapes)}: {g.M} x {g.N} x {g.K}" + (f" x{g.batch}" if g.batch > 1 else ""))
        s = time_gemm(g.M, g.N, g.K, g.batch, dtype, device, repeats, flush)
        gemms.append(GemmMeasurement(M=g.M, N=g.N, K=g.K, batch=g.batch, dtype=dtype_name, seconds=s,
                                     tflops=flops / s / 1e12, where=g.where))
    del flush
    attention = []
    for a in attn_shapes:
        keys = (a.seq + 1) / 2 if a.causal else a.seq
        flops = 2.0 * a.batch * a.heads * a.seq * keys * 2 * a.head_dim
        if device == "cpu" and flops > MAX_CPU_GEMM_FLOPS:
            notes.append(f"skipped attention {a} on the CPU")
            continue
        say(f"attention b{a.batch} h{a.heads}/{a.kv_heads} s{a.seq} d{a.head_dim}")
        f, b = time_attention(a, dtype, device, repeats)
        ref = (peak or 1.0) * 1e12
        attention.append(AttentionMeasurement(batch=a.batch, heads=a.heads, kv_heads=a.kv_heads, seq=a.seq,
                                              head_dim=a.head_dim, causal=a.causal, dtype=dtype_name,
                                              forward_seconds=f, backward_seconds=b, forward_flops=flops,
                                              forward_efficiency=flops / f / ref,
                                              backward_efficiency=2.5 * flops / b / ref))
    if attention and peak is None:
        notes.append("no GPU profile peak: attention efficiencies are TFLOP/s, not fractions")
    say("device copies")
    bandwidth = time_copies(device, repeats, memory_bytes or 8 * 2**30)
    collectives = []
    if nproc > 1:
        say(f"collectives over {nproc} ranks")
        collectives = time_collectives(nproc, device, max(3, repeats // 2))
    L = setup.layout
    return SystemRecord(created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), device=device,
                        device_name=name, gpu_profile=gpu.name if gpu is not None and device == "cuda" else None,
                        torch_version=torch.__version__, dtype=dtype_name, model=setup.model.name,
                        layout={k: v for k, v in L.model_dump().items() if v is not None}, gemms=gemms,
                        attention=attention, bandwidth=bandwidth, collectives=collectives, notes=notes)
