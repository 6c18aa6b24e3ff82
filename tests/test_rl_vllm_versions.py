"""A colocated vLLM's KV budget by release, from vLLM's source (no published figure with its settings was found;
the arithmetic below is done by hand from the source, not read off memplan).

vllm/v1/worker/gpu_worker.py @v0.8.5 determine_available_memory: reset_peak_memory_stats, profile run,
peak = torch's allocated_bytes.all.peak (+ non-torch), available = total x gpu_memory_utilization - peak.  In the
trainer's process the peak starts at what the trainer already holds, so the policy and reference weights loaded
before the engine (TRL builds it in GRPOTrainer.__init__; verl after the actor and ref) count against the budget.
From 0.9 (gpu_worker.py @v0.9.2) the baseline snapshot taken at init_device leaves them out.

Qwen2.5-7B in bf16, policy + frozen reference: 2 x 7,615,616,512 x 2 B = 28.37 GiB, more than
0.3 x 79.25 GiB = 23.78 GiB (an H100's torch-visible total): under 0.8.5 nothing is left for the KV cache at TRL's
default gpu_memory_utilization 0.3, while 0.9.2 starts (its budget holds vLLM's 14.2 GiB of weights and a KV
cache).  At 0.6 (47.55 GiB) 0.8.5 starts with its KV cache smaller by the trainer's 28.37 GiB.
"""
from __future__ import annotations

from memplan.answers.rl import rl

GiB = 1 << 30
KW = dict(rollout="vllm-colocate", prompt_length=512, completion_length=1024, model_dtype="bfloat16", beta=0.04,
          search_changes=False)


def test_vllm_085_charges_the_trainers_weights():
    old = rl("qwen2.5-7b", "h100-sxm", gpu_memory_utilization=0.3, vllm_version="0.8.5", **KW)
    new = rl("qwen2.5-7b", "h100-sxm", gpu_memory_utilization=0.3, vllm_version="0.9.2", **KW)
    assert old.vllm_starts is False and "28.37 GiB" in old.vllm_refusal and not old.fits
    assert new.vllm_starts is True


def test_vllm_085_kv_smaller_by_the_trainers_weights():
    old = rl("qwen2.5-7b", "h100-sxm", gpu_memory_utilization=0.6, vllm_version="0.8.5", **KW)
    new = rl("qwen2.5-7b", "h100-sxm", gpu_memory_utilization=0.6, vllm_version="0.9.2", **KW)
    assert old.vllm_starts and new.vllm_starts
    # the two releases' own accounting differs by well under a GiB (the CUDA context counts in 0.8.5's budget);
    # the trainer's 28.37 GiB is the difference that matters
    assert abs((new.vllm_kv_pool - old.vllm_kv_pool) / GiB - 28.37) < 1.0
