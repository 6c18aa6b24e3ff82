"""`memplan rl` against published RL post-training figures (issue 24: "the whole RL plan checked against published
figures").  Each row is a run someone published with its settings; memplan is run with those settings and never
tuned to the figure.  Held out: every row (nothing in answers/rl*.py was calibrated on them).

What a figure can support, and so the check:
  Step time of a GRPO run whose completions have a *distribution* of lengths, published with only their mean
  (NeMo RL's "G-Average Seq len") and the cap (max_total_sequence_length).  memplan generates every completion to
  one length (answers/rl_time.py: "every completion runs to max_completion_length").  A single length cannot
  reproduce a mean plus a long tail, so the figure supports a bracket, not a point: memplan with every sequence at
  the published mean (no tail: a lower bound) <= published <= memplan with every sequence at the cap (an upper
  bound).  Each end is itself an estimate, good to the accuracy its parts were validated to: the rollout's
  engine-step model +-15% on published serving benchmarks (tests/test_capacity.py), the update's op walk 10% worst
  on held-out Megatron runs (tests/test_published_runs.py); so the bracket is widened by 15% at each end
  (MODEL_ERROR).  A row outside it is a strict xfail with the error in the reason.  The point error at the mean
  is printed in docs/validation.md ("RL: published runs") for reading, not asserted.

Rows
  N1  NeMo RL v0.4 performance summary, DGX-H100, GRPO on OpenMathInstruct-2, on-policy, LLAMA3.1_8B:
      T-Max Sequence Length 4,096, G-Average Seq len 1,060, 16 GPUs, G-GBS 2,048, T-GBS 512, generation [TP 1],
      "Total Step time(s)" 97.7 -- github:NVIDIA-NeMo/RL docs/about/performance-summary.md (commit 06beed91);
      settings from examples/configs/recipes/llm/performance/grpo-llama3.1-8b-instruct-2n8g.yaml (commit 850f69f2:
      num_prompts_per_step 64, num_generations_per_prompt 32, train_micro_batch_size 1, activation_checkpointing
      true) over examples/configs/grpo_math_1B.yaml (reference_policy_kl_penalty 0.01, vLLM colocated,
      gpu_memory_utilization 0.6, train_global_batch_size 512, sequence packing on, bf16 params with fp32 master
      weights through Megatron's precision-aware distributed optimizer).
  N2  the same table, Qwen3-32B on-policy: 4,096 / 3,206, 32 GPUs, G-GBS 2,048, T-GBS 512, generation [TP 4],
      393 s -- recipe grpo-qwen3-32b-4n8g.yaml (commit 0b88cccc: 64 x 32, vLLM tensor_parallel_size 4).
  N3  the same table, Qwen3-30B-A3B (MoE) on-policy: 4,096 / 3,154, 32 GPUs, G-GBS 2,048, T-GBS 512, generation
      [TP 4], training [TP 2, EP 8], 225 s -- a strict xfail (the reason says why).
  N5  NeMo RL v0.7's table (H100 BF16, on-policy): Qwen3-32B, 4,096 / 3,256, 32 GPUs, G-GBS 2,048, T-GBS 2,048
      (one optimizer step per RL step), generation [TP 4], training [TP 4, PP 4], 323 s.
  N6  the same v0.7 table: Qwen3-30B-A3B, 4,096 / 3,198, 32 GPUs, G-GBS 2,048, T-GBS 2,048, generation [TP 2],
      training [EP 8], 171 s.
  Not expressible: Qwen3-235B (generation TP 16 and DeepSeek-V3 generation TP 32 span nodes; memplan keeps TP
  within a node); v0.7's GB200 rows (no GB200 profile in memplan), Nemotron-3-Super (no profile), the 40,960-token
  Qwen3-30B-A3B row (context parallel 8).

How the settings map (the gaps, stated):
  - NeMo RL trains with Megatron-core (N1: PP 2; N2: TP 4, PP 4, sequence parallel); memplan's RL update is
    data-parallel with ZeRO-1 here: the same FLOPs per GPU, without pipeline bubbles or TP communication.  Memory
    is not compared (NeMo RL publishes none, and its sharding is not memplan's).
  - `framework="verl"` stands in for a colocated hybrid engine: verl's rollout defaults (vLLM sleep level 1 between
    rollouts, max_num_batched_tokens 8192, max_num_seqs 256), which NeMo RL's may differ from by a second or two.
  - The prompt length is not published: 256 tokens assumed for OpenMathInstruct-2 problems with the CoT prompt
    template (examples/prompts/cot.txt); completions are the rest of the published total.
  - The 1-step off-policy (asynchronous) rows of the same table overlap generation with training: memplan plans a
    synchronous step only, so they are not compared.

Found and not compared (docs/rl.md says why): TRL's GRPO quick start (docs/source/grpo_trainer.md: 8 GPUs of an
unstated model, "approximately 1 day"; transformers generate, which memplan bounds from below only); the TRL blog
"No GPU left behind" (huggingface/blog vllm-colocate.md: speed-ups read off charts, no absolute figure or batch
sizes in text); verl's baseline log
gsm8k/qwen2-7b-fsdp2.log (github:eric-haibin-lin/verl-data, linked from verl docs/algo/baseline.md: timings and
"After building vllm rollout, memory allocated (GB): 73.22" but the GPU model is not stated, and the actor and
reference run with FSDP param/optimizer offload, which memplan does not model); verl docs/perf/device_tuning.rst
MaxBatch figures (found with GSM8K's real lengths under use_remove_padding, with param offload); TRL issues #2927
and #2972 (OOM at the second/third step on H20s: the model's dtype and TRL 0.15's conventions are not memplan's
TRL 1.16); OpenRLHF's README table (seconds per 1,024 prompts of PPO on A800s: lengths, GPU split and batches not
given, marked outdated by its authors).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from memplan.answers.rl import rl

PROMPT = 256  # assumed, not published (see above)
MODEL_ERROR = 0.15  # the validated accuracy of the estimates at the bracket's ends (see above)


@dataclass(frozen=True)
class Run:
    name: str
    source: str
    model: str
    gpus: int
    prompts: int           # num_prompts_per_step
    generations: int       # num_generations_per_prompt
    train_global_batch: int
    vllm_tp: int
    max_total: int         # T-Max Sequence Length
    mean_total: int        # G-Average Seq len (prompt + completion)
    published_step_s: float
    miss: str | None = None  # a strict xfail's reason when the published figure falls outside the bracket


NEMO_RL = "github:NVIDIA-NeMo/RL docs/about/performance-summary.md (NeMo RL v0.4, DGX-H100, on-policy GRPO)"
NEMO_RL_07 = ("github:NVIDIA-NeMo/RL docs/about/performance-summary.md, NeMo RL v0.7 'H100 BF16 Benchmarks' (read from "
              "the mirror github:svcnemo-autobot/RL @ad3472a8), on-policy GRPO, recipes at v0.7.0")
RUNS = [
    Run("N1 nemo-rl-v0.4 llama-3.1-8b 16xH100", NEMO_RL + "; recipe grpo-llama3.1-8b-instruct-2n8g.yaml",
        "llama-3.1-8b", 16, 64, 32, 512, 1, 4096, 1060, 97.7),
    Run("N2 nemo-rl-v0.4 qwen3-32b 32xH100", NEMO_RL + "; recipe grpo-qwen3-32b-4n8g.yaml",
        "qwen3-32b", 32, 64, 32, 512, 4, 4096, 3206, 393.0),
    Run("N3 nemo-rl-v0.4 qwen3-30b-a3b 32xH100", NEMO_RL + "; recipe grpo-qwen3-30ba3b-4n8g.yaml",
        "qwen3-30b-a3b", 32, 64, 32, 512, 4, 4096, 3154, 225.0,
        miss="memplan at the cap is 129.7 s, -42% (bracket [102.6, 129.7] s, +-15%: [87.2, 149.2]): the run trains "
             "the MoE with Megatron-core EP 8 + TP 2 (token-dropless all-to-all, grouped expert GEMMs), which "
             "memplan rl cannot express (data-parallel ZeRO-1 only); NeMo RL v0.7 runs the same model in 171 s "
             "(N6, inside its bracket): v0.4's slower software is not modelled; not tuned"),
    Run("N5 nemo-rl-v0.7 qwen3-32b 32xH100", NEMO_RL_07, "qwen3-32b", 32, 64, 32, 2048, 4, 4096, 3256, 323.0),
    Run("N6 nemo-rl-v0.7 qwen3-30b-a3b 32xH100", NEMO_RL_07, "qwen3-30b-a3b", 32, 64, 32, 2048, 2, 4096, 3198, 171.0),
]


def plan_step(run: Run, total: int) -> float:
    """memplan's seconds per RL step with every sequence `total` tokens long, the run's settings otherwise."""
    per_gpu = run.prompts * run.generations // run.gpus  # completions per GPU per step
    p = rl(run.model, "h100-sxm", algorithm="grpo", framework="verl", prompt_length=PROMPT,
           completion_length=total - PROMPT, num_generations=run.generations, per_device_train_batch_size=1,
           gradient_accumulation_steps=run.train_global_batch // run.gpus, steps_per_generation=per_gpu,
           beta=0.01, rollout="vllm-colocate", gpu_memory_utilization=0.6, vllm_tp=run.vllm_tp, gpus=run.gpus,
           model_dtype="bfloat16-mixed", zero=1, search_changes=False)
    assert p.time is not None
    return p.time.step_seconds


def _param(run: Run):
    marks = [pytest.mark.xfail(strict=True, reason=run.miss)] if run.miss else []
    return pytest.param(run, id=run.name.split()[0], marks=marks)


@pytest.mark.parametrize("run", [_param(r) for r in RUNS])
def test_published_step_time_within_the_length_bracket(run: Run):
    low, high = plan_step(run, run.mean_total), plan_step(run, run.max_total)
    assert low * (1 - MODEL_ERROR) <= run.published_step_s <= high * (1 + MODEL_ERROR), (
        f"{run.name}: published {run.published_step_s} s outside memplan's [{low:.1f}, {high:.1f}] s +-15% "
        f"(every sequence at the mean {run.mean_total} / at the cap {run.max_total} tokens)")


def test_the_bracket_is_informative():
    """The check is not a pass-anything: each bracket is bounded by the run's own lengths, and a run whose mean
    is near its cap (N2: 3,206 of 4,096) gets a bracket, widened by the model error, under 2x wide (N3, at 3,154
    of 4,096, misses it)."""
    n2 = RUNS[1]
    low, high = plan_step(n2, n2.mean_total), plan_step(n2, n2.max_total)
    assert high * (1 + MODEL_ERROR) / (low * (1 - MODEL_ERROR)) < 2.0
