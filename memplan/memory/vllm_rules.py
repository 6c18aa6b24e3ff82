"""What changes between vLLM releases, and vLLM's defaults that depend on the GPU: one place, each rule cited.

Read from the PyPI source distributions of vLLM 0.8.5 ... 0.34.0 (the file and function of each rule are named in
its docstring; versions not read are placed by bracketing, so a boundary can be off by one release).  Rules that
are plain data (the profile run's sampler path per release, non-torch memory) live in profiles/serving/vllm.json
(memplan/serving/vllm_releases.py).  memplan models DEFAULT_VLLM_VERSION by default and accepts --vllm-version
0.8.5 ... 0.34.x to reproduce a log from an older one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from memplan.errors import MemplanError
from memplan.serving.vllm_releases import supported
from memplan.spec.hardware import GPUSpec
from memplan.spec.model import Model

GiB = 1 << 30
OLDEST, NEWEST = supported()  # (0, 8, 5), (0, 34, 99): profiles/serving/vllm.json
# VllmConfig.use_v2_model_runner / _is_default_v2_model_runner_model @0.24: the architectures served by the V2
# model runner by default (0.25-0.27: every non-MoE generate model too; >= 0.30: every model it supports)
V2_FAMILIES_0_24 = ("qwen3", "deepseek_v2", "qwen2_moe", "granitemoe", "llama", "mistral")


def parse_version(text: str) -> tuple[int, int, int]:
    parts = text.strip().lstrip("v").split("+")[0].split(".")
    try:
        nums = tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts[:3])
    except ValueError:
        nums = ()
    if len(nums) < 2:
        raise MemplanError(f"--vllm-version {text!r}: give a release such as 0.33.0 or 0.11.0")
    v = (nums + (0, 0, 0))[:3]
    if not OLDEST <= v <= NEWEST:
        raise MemplanError(f"--vllm-version {text}: memplan reproduces vLLM 0.8.5 to 0.34 (the V1 engine's "
                           "accounting as read from their source); choose a release in that range")
    return v  # type: ignore[return-value]


def flashinfer_installed(text: str) -> bool:
    """`--vllm-version 0.10.2+docker` (or `+flashinfer`): the official vllm/vllm-openai image, which installs
    FlashInfer (docker/Dockerfile @v0.10.2); `pip install vllm` does not before 0.12 (requirements/cuda.txt).
    It decides the 0.10-0.11 sampler path (profiles/serving/vllm.json sampler_rules)."""
    local = text.strip().partition("+")[2].lower()
    return "docker" in local or "flashinfer" in local


@dataclass(frozen=True)
class VllmRules:
    version: tuple[int, int, int]
    flashinfer: bool = False

    @property
    def label(self) -> str:
        return ".".join(map(str, self.version))

    def at_least(self, *v: int) -> bool:
        return self.version >= tuple(v)

    # ---- the memory budget ------------------------------------------------------------------------------------
    @property
    def default_utilization(self) -> float:
        """CacheConfig.gpu_memory_utilization: 0.9 up to 0.19, 0.92 from 0.20.0 (vllm/config/cache.py)."""
        return 0.92 if self.at_least(0, 20) else 0.9

    def requested(self, total: int, utilization: float) -> int:
        """requested_memory = total x utilization; 0.33's request_memory (vllm/v1/worker/utils.py) takes the
        ceiling, earlier workers keep the float (truncated when the budget becomes bytes)."""
        x = total * utilization
        return math.ceil(x) if self.at_least(0, 33) else int(x)

    @property
    def consumed_accounting(self) -> bool:
        """>= 0.27: non-KV memory = total_consumed (init free - free after the profile, through cudaMemGetInfo:
        weights, non-torch memory and persistent runner buffers) + transient peak headroom; earlier: weights +
        torch peak increase + non-torch increase (MemoryProfilingResult, vllm/utils/mem_utils.py)."""
        return self.at_least(0, 27)

    @property
    def context_in_budget(self) -> bool:
        """<= 0.8: Worker.determine_available_memory (vllm/v1/worker/gpu_worker.py @v0.8.5) charges the torch peak
        plus every non-torch byte on the device (mem_get_info used - torch allocated): the CUDA context and NCCL
        count against gpu_memory_utilization; from 0.9 the baseline snapshot excludes what was there before."""
        return not self.at_least(0, 9)

    @property
    def checks_free_memory(self) -> bool:
        """'Free memory on device ... is less than desired GPU memory utilization': Worker.init_device from 0.9
        (gpu_worker.py @v0.9.2); 0.8.5 has no such check."""
        return self.at_least(0, 9)

    @property
    def nccl_in_non_torch(self) -> bool:
        """<= 0.10: the worker's baseline snapshot is taken before the distributed init, so NCCL's buffers count
        as non-torch memory (Worker.init_device); from 0.11 they are part of the baseline."""
        return not self.at_least(0, 11)

    def v2_runner(self, model: Model) -> bool:
        """Whether the V2 model runner (vllm/v1/worker/gpu/model_runner.py) serves this model by default."""
        if not self.at_least(0, 24):
            return False
        if self.at_least(0, 30):
            return True
        if self.at_least(0, 25) and not model.moe:
            return True
        return model.family in V2_FAMILIES_0_24

    def cudagraph_subtracted(self, model: Model) -> bool:
        """Whether the CUDA-graph estimate comes out of the KV budget: <= 0.17 never (graphs are captured after
        the KV cache, from the 1 - utilization slack); 0.18-0.19 only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1
        (default 0: envs.py @v0.18.0/@v0.19.0); from 0.20 by default (envs.py @v0.20.0 getenv default "1", though
        that release's log line says "default since v0.21.0"), except that the V2 runner's profile_cudagraph_memory
        returns 0 in 0.24-0.27."""
        if not self.at_least(0, 20):
            return False
        return not (self.at_least(0, 24) and not self.at_least(0, 30) and self.v2_runner(model))

    # ---- KV cache manager ---------------------------------------------------------------------------------------
    @property
    def null_block_reserved(self) -> bool:
        """0.33 get_kv_cache_configs / check_enough_kv_cache_memory plan against available - one block (the
        BlockPool's null block)."""
        return self.at_least(0, 33)

    @property
    def group_size_uses_max(self) -> bool:
        """_get_kv_cache_groups_uniform_page_size: group size = the smallest layer-type bucket; from 0.18 the
        largest when it is < 1.5 x the smallest."""
        return self.at_least(0, 18)

    @property
    def tokens_from_concurrency(self) -> bool:
        """'GPU KV cache size: N tokens': <= 0.20 num_blocks // groups x block_size; >= 0.21
        int(max_concurrency x max_model_len) (_report_kv_cache_config / get_kv_cache_capacity)."""
        return self.at_least(0, 21)

    @property
    def chunked_local_hybrid(self) -> bool:
        """Llama 4's chunked-local layers keep only their chunk (ChunkedLocalAttentionSpec) when
        VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE is on: default 0 up to 0.12 (the hybrid manager is then
        disabled and they are full attention), 1 from 0.14."""
        return self.at_least(0, 14)

    def in_flight_tokens(self, max_num_batched_tokens: int, pp: int, model: Model) -> int:
        """Tokens a sliding/chunked spec reserves beyond its window: max_num_batched_tokens up to 0.24;
        from 0.26 VllmConfig.max_in_flight_tokens = max_concurrent_batches x max_num_batched_tokens, with async
        scheduling (on by default): pp + 1 batches on the V2 runner, 2 on V1 without PP, else pp."""
        if not self.at_least(0, 26):
            return max_num_batched_tokens
        batches = pp + 1 if self.v2_runner(model) else (2 if pp <= 1 else pp)
        return batches * max_num_batched_tokens

    # ---- block size -------------------------------------------------------------------------------------------------
    def default_block_size(self, model: Model, gpu: GPUSpec | None) -> int:
        """16 (CacheConfig.DEFAULT_BLOCK_SIZE); MLA on Hopper 64 (FlashMLA), on Blackwell 128 (CUTLASS_MLA)."""
        if any(g.layer.attention.mla for g in model.groups) and gpu is not None:
            return {"hopper": 64, "blackwell": 128}.get(gpu.generation, 16)
        return 16

    def check_block_size(self, block_size: int, model: Model) -> None:
        """--block-size: the CLI's Literal[1, 8, 16, 32, 64, 128] up to 0.11 (+256 in 0.12-0.16, any int from
        0.18); every CUDA attention backend needs a multiple of 16 (0.11: 'Block size must be a multiple of 16.';
        0.33 get_supported_kernel_block_sizes: MultipleOf(16)); FlashMLA needs 64, CUTLASS MLA 128 (a smaller
        block falls back to Triton MLA)."""
        if not self.at_least(0, 12):
            allowed = (1, 8, 16, 32, 64, 128)
        elif not self.at_least(0, 18):
            allowed = (1, 8, 16, 32, 64, 128, 256)
        else:
            allowed = None
        if allowed is not None and block_size not in allowed:
            raise MemplanError(f"--block-size {block_size}: vLLM {self.label} accepts "
                               f"{', '.join(map(str, allowed))}")
        if block_size % 16:
            raise MemplanError(f"--block-size {block_size}: vLLM's CUDA attention backends need a multiple of 16 "
                               "('Block size must be a multiple of 16'; no valid attention backend otherwise); "
                               "use 16, 32, 64 or 128")

    # ---- scheduler defaults --------------------------------------------------------------------------------------
    def batch_defaults(self, gpu: GPUSpec | None, entrypoint: str) -> tuple[int, int]:
        """(max_num_batched_tokens, max_num_seqs) when unset: EngineArgs.get_batch_defaults
        (vllm/engine/arg_utils.py), by the device's total memory (NVML) and name: >= 160 GiB (from 0.30) 16384 /
        1024; >= 70 GiB and not an A100 (nor a GB10) 16384 (LLM class) or 8192 (vllm serve) / 1024; otherwise 8192
        (LLM class) or 2048 (vllm serve) / 256."""
        mem = gpu.memory_bytes if gpu is not None else 0
        name = (gpu.name + " " + " ".join(gpu.aliases)).lower() if gpu is not None else ""
        llm = entrypoint == "llm"
        if self.at_least(0, 30) and mem >= 160 * GiB:
            return 16384, 1024
        # the A100 exclusion arrived in 0.9 (arg_utils.py @v0.9.2: `"a100" not in device_name`; absent @v0.8.5)
        if mem >= 70 * GiB and ("a100" not in name or not self.at_least(0, 9)):
            return (16384 if llm else 8192), 1024
        return (8192 if llm else 2048), 256

    # ---- CUDA graphs ---------------------------------------------------------------------------------------------
    def capture_sizes(self, max_num_seqs: int, max_num_batched_tokens: int, gpu: GPUSpec | None
                      ) -> tuple[list[int], list[int]]:
        """(piecewise sizes, FULL decode sizes) of VllmConfig._set_cudagraph_sizes: up to 0.11
        [1, 2, 4] + range(8, N + 1, 8) with N = min(2 x max_num_seqs, 512) (0.9.2: 512); from 0.12
        [1, 2, 4] + range(8, min(M + 1, 256), 8) + range(256, M + 1, 16) with M = min(2 x max_num_seqs, 512)
        (1024 on data-center Blackwell from 0.30), M capped at max_num_batched_tokens, which is appended when it
        fits (0.24+), as is max_num_seqs (0.33).  0.10 captures PIECEWISE graphs only; from 0.11 the default
        FULL_AND_PIECEWISE adds FULL graphs for the uniform-decode sizes <= max_num_seqs."""
        cap = 1024 if (self.at_least(0, 30) and gpu is not None and gpu.generation == "blackwell") else 512
        m = cap if not self.at_least(0, 10) else min(2 * max_num_seqs, cap)
        m = min(m, max_num_batched_tokens)
        sizes = [s for s in (1, 2, 4) if s <= m]
        if self.at_least(0, 12):
            sizes += list(range(8, min(m + 1, 256), 8)) + list(range(256, m + 1, 16))
        else:
            sizes += list(range(8, m + 1, 8))
        if self.at_least(0, 24) and max_num_batched_tokens <= m and max_num_batched_tokens not in sizes:
            sizes.append(max_num_batched_tokens)
        if self.at_least(0, 33) and max_num_seqs <= m and max_num_seqs not in sizes:
            sizes.append(max_num_seqs)
        sizes.sort()
        full = [s for s in sizes if s <= max_num_seqs] if self.at_least(0, 11) else []
        return sizes, full

    # ---- quantisation --------------------------------------------------------------------------------------------
    def check_quantization(self, method: str | None) -> None:
        if method == "bitsandbytes" and self.at_least(0, 30):
            raise MemplanError(f"bitsandbytes is not a quantization method in vLLM {self.label} (removed by 0.30; "
                               "0.27 still has it): serve an AWQ/GPTQ/FP8 checkpoint, or pass --vllm-version 0.27.0 "
                               "or --engine hf")
