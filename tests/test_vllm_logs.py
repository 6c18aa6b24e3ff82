"""Published vLLM startup logs replayed release by release: memplan's full prediction (no figure taken from the
log) against what the log prints.  Targets (issue 23): weights within 2%, "Available KV cache memory" within 3% or
0.3 GiB, starts/fails right; the KV cache manager's half (blocks, tokens, concurrency from the logged available
memory) is exact in tests/test_vllm.py.  A log memplan misses is kept here as a strict xfail with the reason, so
the table in docs/finetune-and-serve.md ("Replaying published vLLM startup logs") stays honest and a fix shows.

Sources:
  L1 code-index file 38962983769: "Hosting Qwen3-235B-A22B-Instruct-2507-FP8 on 8xL40S", vLLM 0.10.2, TP8 + EP
  L2 code-index file 34680831065: llava-v1.6-mistral-7b on an H100, vLLM 0.10.2, LLM class
  L3 code-index file 70682754770: Llama-3.1-8B-Instruct on an A100 80GB, vLLM 0.31.0 defaults
  L4 github.com/ilseokoh/vllm-gce README: Llama-3.1-8B-Instruct on an A100 40GB, vLLM 0.15.1, LLM class, eager
  L7 code-index file 57428438798: Qwen2.5-7B-Instruct-AWQ on an RTX 4080 16 GB, vLLM 0.26.0
  L9 code-index file 34681159919: Qwen3-8B-FP8 on a 24 GB card, vLLM 0.10.2 (DEBUG log)
  L12 github.com/vllm-project/vllm/issues/21348: Qwen3-235B-A22B-FP8, `vllm serve --tensor-parallel-size 4` on
      4x H100 (July 2025: vLLM 0.9.2 assumed) with an LMCache KV connector: "Available KV cache memory: 8.11 GiB",
      "GPU KV cache size: 178,880 tokens"
  L13 code-index file 61815222665 (a public lab notebook): Qwen2.5-0.5B with the LLM class on an RTX 4090 under WSL2
      (23.99 GiB), vLLM 0.27.1 defaults: "Model loading took 0.93 GiB", "Available KV cache memory: 20.52 GiB",
      "GPU KV cache size: 1,793,232 tokens", "Actual usage is 1.23 GiB for consumed memory (weights + non-torch),
      0.31 GiB for peak activation, and 0.0 GiB for CUDAGraph memory"
  L14 myoceane.fr/index.php/ai-vllm-a100-gemma-4/ (a public blog post, April 2026): openai/gpt-oss-20b on an A100
      80GB, vLLM 0.19.0, `vllm serve --max-model-len 131072 --gpu-memory-utilization 0.65`: "Model loading took
      13.72 GiB", "Available KV cache memory: 36.56 GiB" (MXFP4 experts through Marlin on Ampere; 0.19's Triton
      top-k/top-p sampler, 14 B per logit)
"""
from __future__ import annotations

import pytest

from memplan.catalog import get_gpu
from memplan.families.registry import read_config
from memplan.memory.vllm import capacity, vllm_startup
from memplan.setups import serving_setup
from memplan.spec.hardware import GPUSpec
from memplan.spec.model import ModelSpec
from tests.test_vllm import FP8_BLOCK, gib, spec

GiB = 1 << 30
AWQ = {"bits": 4, "group_size": 128, "quant_method": "awq", "zero_point": True}
Q05 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "num_hidden_layers": 24,
       "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
       "max_position_embeddings": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
       "rms_norm_eps": 1e-6, "rope_theta": 1000000.0}  # Qwen/Qwen2.5-0.5B-Instruct config.json


def rtx4080() -> GPUSpec:
    return GPUSpec(name="rtx-4080", vendor="nvidia", generation="ada", memory_bytes=16376 << 20,
                   memory_bandwidth_gbps=717, peak_tflops={"fp16": 97.5}, torch_total_memory_bytes=gib(15.99))


def rtx4090_wsl() -> GPUSpec:
    return GPUSpec(name="rtx-4090-wsl", vendor="nvidia", generation="ada", memory_bytes=24564 << 20,
                   memory_bandwidth_gbps=1008, peak_tflops={"bf16": 165}, torch_total_memory_bytes=gib(23.99))


def qwen25_05b() -> ModelSpec:
    return ModelSpec(name="qwen2.5-0.5b", architecture=read_config(Q05, "qwen2.5-0.5b"), hf_config=Q05)


# (id, model, gpu, settings, logged weights GiB (None: not printed), logged available GiB, logged tokens,
#  what misses: None, or (field, reason))
LOGS = [
    ("L1-0.10.2-qwen3-235b-fp8-l40s-tp8",
     lambda: spec("qwen3-235b-a22b", max_position_embeddings=262144, quantization_config=FP8_BLOCK), "l40s",
     dict(tp=8, enable_expert_parallel=True, gpu_memory_utilization=0.9, max_model_len=32768, vllm_version="0.10.2"),
     27.72, 10.65, 237344, None),
    ("L2-0.10.2-llava-mistral-7b-h100",
     lambda: spec("mistral-7b", name="mistral-7b-v0.2", sliding_window=None, max_position_embeddings=32768),
     "h100-sxm", dict(max_model_len=4096, vllm_version="0.10.2", vllm_entrypoint="llm"), 14.08, 55.15, 451744,
     ("weights", "LLaVA's CLIP vision tower and projector (0.58 GiB) are not modelled: memplan serves the "
                 "language model only")),
    ("L3-0.31-llama-3.1-8b-a100-80gb", lambda: spec("llama-3.1-8b"), "a100-80gb", dict(vllm_version="0.31.0"),
     15.0, 56.21, 460496, None),
    ("L4-0.15.1-llama-3.1-8b-a100-40gb-eager", lambda: spec("llama-3.1-8b"), "a100-40gb",
     dict(vllm_version="0.15.1", enforce_eager=True, vllm_entrypoint="llm"), 14.99, 19.28, 157936, None),
    ("L7-0.26-qwen2.5-7b-awq-rtx4080",
     lambda: spec("qwen2.5-7b", torch_dtype="float16", quantization_config=AWQ), rtx4080,
     dict(vllm_version="0.26.0", gpu_memory_utilization=0.9, max_model_len=32768), 5.29, 8.0, 149712, None),
    ("L9-0.10.2-qwen3-8b-fp8-24gb",
     lambda: spec("qwen3-8b", torch_dtype="float16", quantization_config=FP8_BLOCK), "rtx-4090",
     dict(vllm_version="0.10.2", gpu_memory_utilization=0.8, max_model_len=1024), 8.80, 8.60, 62608, None),
    ("L12-0.9.2-qwen3-235b-fp8-h100-tp4", lambda: spec("qwen3-235b-a22b", quantization_config=FP8_BLOCK),
     "h100-sxm", dict(tp=4, vllm_version="0.9.2"), None, 8.11, 178880,
     ("available", "+4.5% (0.36 GiB): the log's vLLM ran an LMCache KV connector (not modelled) and its release is "
                   "not printed (0.9.2 assumed); NCCL's NVLink buffers (2.1 GiB) are charged")),
    ("L13-0.27.1-qwen2.5-0.5b-rtx4090-wsl", qwen25_05b, rtx4090_wsl,
     dict(vllm_version="0.27.1", vllm_entrypoint="llm"), 0.93, 20.52, 1793232,
     ("available", "-5.1% (1.04 GiB): the V2 runner's dummy sampler skips top-k/top-p (model_runner.py "
                   "_dummy_sampler_run NOTE @v0.24-0.31), so its peak is ~9 B per logit (0.31 GiB logged) where "
                   "memplan charges the 38 B fitted to the 0.31 A100 log (L3), which that skip cannot explain; "
                   "and WSL2 captured 0.00 GiB of CUDA graphs (0.17 estimated)")),
    ("L14-0.19.0-gpt-oss-20b-a100-80gb", lambda: spec("gpt-oss-20b"), "a100-80gb",
     dict(vllm_version="0.19.0", max_model_len=131072, gpu_memory_utilization=0.65), 13.72, 36.56, None, None),
]


def _startup(case):
    _, model, gpu, kw, *_ = case
    g = gpu() if callable(gpu) else get_gpu(gpu)
    return vllm_startup(serving_setup(model(), **kw), g), g


@pytest.mark.parametrize("case", LOGS, ids=[c[0] for c in LOGS])
def test_weights_against_the_log(case):
    st, _ = _startup(case)
    weights, miss = case[4], case[7]
    if weights is None:
        pytest.skip("the log prints no 'Model loading took'")
    if miss and miss[0] == "weights":
        pytest.xfail(miss[1])
    assert st.weights / GiB == pytest.approx(weights, rel=0.02)


@pytest.mark.parametrize("case", LOGS, ids=[c[0] for c in LOGS])
def test_available_kv_against_the_log(case):
    st, _ = _startup(case)
    available, miss = case[5], case[7]
    assert st.starts
    if miss and miss[0] == "available":
        assert abs(st.kv_cache_available / GiB - available) > max(0.03 * available, 0.3), "now within: drop the xfail"
        pytest.xfail(miss[1])
    assert abs(st.kv_cache_available / GiB - available) <= max(0.03 * available, 0.3)


@pytest.mark.parametrize("case", [c for c in LOGS if c[0].startswith(("L12", "L13"))], ids=lambda c: c[0])
def test_tokens_from_the_logged_available(case):
    """The KV cache manager from the log's own available figure: L13 exactly (to the 2-decimal rounding); L12's
    tokens come from the smallest of the 4 workers' budgets (get_kv_cache_configs takes the minimum), 1.1% below
    the 8.11 GiB rank 0 prints."""
    _, model, gpu, kw, _, available, tokens, _ = case
    g = gpu() if callable(gpu) else get_gpu(gpu)
    _, logged_tokens, _ = capacity(serving_setup(model(), **kw), g, gib(available))
    tol = 0.0005 if case[0].startswith("L13") else 0.012
    assert logged_tokens == pytest.approx(tokens, rel=tol)
