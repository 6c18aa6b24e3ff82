"""SGLang's server defaults that decide its memory, restated from python/sglang/srt/server_args.py @v0.5.10.post1
(the newest release on PyPI when read; the sdist was unpacked and read function by function).  Pure functions of
the GPU's memory (nvidia-smi's total, MiB) and the parallel layout: the bytes are in memplan/memory/sglang.py.

ServerArgs._handle_gpu_memory_settings:
- chunked_prefill_size and cuda_graph_max_bs by the GPU's memory (MiB, `get_nvgpu_memory_capacity`: nvidia-smi
  memory.total): < 20 GiB 2048 / 8; < 35 GiB 2048 / (24 if tp < 4 else 80); < 60 GiB 4096 / (32 or 160);
  < 90 GiB 8192 / (256 or 512); < 160 GiB 8192 / (256 or 512); else 16384 / 512;
- mem_fraction_static, "(model weights + KV cache pool) / GPU memory capacity", when unset:
  reserved_mem (MiB) = 512 + max(chunked_prefill_size, 2048) x 1.5 + cuda_graph_max_bs x 2
  + tp x pp / 8 x 1024 + (piecewise CUDA graphs, on by default: len(piecewise_cuda_graph_tokens) x 8 MiB for
  non-MLA models, 1.5 GiB for MLA) (+ DP-attention and speculative terms, not modelled); at least 10 GiB on a
  GPU of > 60 GiB; mem_fraction_static = round((gpu_mem - reserved_mem) / gpu_mem, 3);
- cuda_graph_bs (_generate_cuda_graph_batch_sizes): [1, 2, 4, 8, 12] + range(16, 257, 8) + range(272, 512, 16)
  + range(512, max_bs + 1, 32), capped at cuda_graph_max_bs, which is appended;
- piecewise_cuda_graph_tokens (_generate_piecewise_cuda_graph_tokens) up to piecewise_cuda_graph_max_tokens =
  chunked_prefill_size (MLA: 2048): range(4, 33, 4) + range(48, 257, 16) + range(288, 513, 32)
  + range(576, 1025, 64) + range(1280, 4097, 256) + range(4608, max + 1, 512).
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.catalog import data_table

SGLANG_VERSION = "0.5.10.post1"
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class SglangDefaults:
    gpu_mem_mib: float
    chunked_prefill_size: int
    cuda_graph_max_bs: int
    cuda_graph_bs: tuple[int, ...]
    piecewise_tokens: tuple[int, ...]
    reserved_mib: float
    mem_fraction_static: float


def memory_tier(gpu_mem_mib: float, tp: int) -> tuple[int, int]:
    """(chunked_prefill_size, cuda_graph_max_bs) ServerArgs._handle_gpu_memory_settings picks."""
    big = tp >= 4
    if gpu_mem_mib < 20 * 1024:
        return 2048, 8
    if gpu_mem_mib < 35 * 1024:
        return 2048, 80 if big else 24
    if gpu_mem_mib < 60 * 1024:
        return 4096, 160 if big else 32
    if gpu_mem_mib < 160 * 1024:
        return 8192, 512 if big else 256
    return 16384, 512


def cuda_graph_bs(max_bs: int) -> tuple[int, ...]:
    bs = [1, 2, 4, 8, 12] + list(range(16, 257, 8)) + list(range(272, 512, 16)) + list(range(512, max_bs + 1, 32))
    bs = [b for b in bs if b <= max_bs]
    if max_bs not in bs:
        bs.append(max_bs)
    return tuple(bs)


def piecewise_tokens(max_tokens: int) -> tuple[int, ...]:
    sizes = (list(range(4, 33, 4)) + list(range(48, 257, 16)) + list(range(288, 513, 32))
             + list(range(576, 1025, 64)) + list(range(1280, 4097, 256)) + list(range(4608, max_tokens + 1, 512)))
    return tuple(s for s in sizes if s <= max_tokens)


def defaults(gpu_mem_mib: float, tp: int, pp: int, mla: bool, chunked_prefill_size: int | None = None,
             cuda_graph_max_bs: int | None = None, mem_fraction_static: float | None = None,
             piecewise: bool = True) -> SglangDefaults:
    chunk, max_bs = memory_tier(gpu_mem_mib, tp)
    chunk = chunked_prefill_size or chunk
    max_bs = cuda_graph_max_bs or max_bs
    pw = piecewise_tokens(2048 if mla else chunk) if piecewise else ()
    reserved = 512 + max(chunk, 2048) * 1.5 + max_bs * 2 + tp * pp / 8 * 1024
    if piecewise:
        reserved += 1.5 * 1024 if mla else len(pw) * 8
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    mfs = mem_fraction_static if mem_fraction_static is not None else round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)
    return SglangDefaults(gpu_mem_mib, chunk, max_bs, cuda_graph_bs(max_bs), pw, reserved, mfs)


def max_running_requests(tokens: int, context_len: int, user: int | None = None) -> int:
    """ModelRunnerKVCacheMixin._resolve_max_num_reqs: estimated = clamp(int(tokens / context_len x 512), 2048,
    4096); the user's --max-running-requests capped by it, else min(estimated, tokens // 2)."""
    est = max(min(int(tokens / context_len * 512), 4096), 2048)
    return min(user, est) if user is not None else min(est, tokens // 2)


def table() -> dict:
    return data_table("serving", "sglang")  # profiles/serving/sglang.json


def pre_load_used(generation: str, interconnect: str, gpus: int, context_bytes: int | None = None
                  ) -> tuple[int, str]:
    """Bytes in use before the weights load on one GPU: the CUDA context (a GPU profile's measured context_bytes
    wins) and, in a TP/PP group of > 1 GPU, the distributed init (NCCL, custom all-reduce), by interconnect
    (profiles/serving/sglang.json)."""
    t = table()
    ctx = context_bytes or t["context_bytes"].get(generation, t["context_bytes"]["default"])
    src = f"CUDA context {ctx / GIB:.2f} GiB"
    if gpus > 1:
        link = "nvlink" if interconnect.startswith("nvlink") else "pcie"
        dist = t["distributed_init_bytes"][link]
        fitted = ", fitted to one log" if link == "nvlink" else ""
        src += f" + distributed init {dist / GIB:.2f} GiB ({link}{fitted})"
        ctx += dist
    return ctx, src


def load_extra() -> tuple[int, str]:
    """What SGLang's load holds beyond the weights' tensors (profiles/serving/sglang.json load_extra_bytes)."""
    t = table()
    return t["load_extra_bytes"], t["load_extra_source"]


# model_config.py is_hybrid_swa_model @v0.5.10.post1: the architectures whose sliding/chunked layers get their own
# (smaller) token pool; every other model's windowed layers (Gemma 2/3, Mistral) keep every token like full ones
HYBRID_SWA_FAMILIES = ("gpt_oss", "llama4")
SWA_FULL_TOKENS_RATIO = 0.8  # server_args.py swa_full_tokens_ratio default
