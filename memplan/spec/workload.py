"""What is being run for RL post-training and preference tuning: the algorithm, the models and what is trained, the
rollout engine and the framework's conventions.  Data only (pydantic); the bytes and seconds are composed in
memplan/answers/rl.py from the training and serving floors.

Defaults are TRL 1.16.0's (trl/trainer/grpo_config.py, dpo_config.py, base_config.py @ v1.16.0), because TRL is
what most users run:
- GRPO: num_generations 8, max_completion_length 512, beta 0.0 (no reference model), num_iterations 1,
  steps_per_generation = gradient_accumulation_steps, use_vllm False (transformers generate), vllm_mode
  "colocate", vllm_gpu_memory_utilization 0.3, vllm_enable_sleep_mode False (when True TRL sleeps at level 2:
  trl/generation/vllm_generation.py `self.llm.sleep(level=2)`), max_num_batched_tokens 4096 for the colocated
  engine, max_num_seqs = per_device_train_batch_size x vllm_tensor_parallel_size x steps_per_generation.
  GRPOConfig 1.16 has no max_prompt_length: prompts are as long as the dataset makes them, so memplan asks for
  the prompt length (prompt_length) and says when it assumed one.
- RLOO (rloo_config.py, rloo_trainer.py): num_generations 2, beta 0.05, an old-log-prob pass every step.
- DPO: beta 0.1, max_length 1024 (prompt + completion), precompute_ref_log_probs False; chosen and rejected are
  concatenated into one batch of 2 x per_device_train_batch_size sequences.
- both: gradient_checkpointing True, bf16 True (model dtype from the checkpoint: bf16), per_device_train_batch_size
  8 (transformers TrainingArguments), AdamW fused (torch >= 2.8), a fused, tiled LM head for the per-token
  log-probabilities (trl/kernels/chunked_logprob.py).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memplan.errors import MemplanError

Algorithm = Literal["grpo", "dapo", "rloo", "ppo", "dpo", "kto", "orpo"]
ONLINE = ("grpo", "dapo", "rloo", "ppo")  # generate completions every step
PREFERENCE = ("dpo", "kto", "orpo")  # score a fixed data set of (chosen, rejected) or labelled completions
Framework = Literal["trl", "verl", "openrlhf"]
RolloutKind = Literal["hf", "vllm-colocate", "vllm-server"]
PolicyKind = Literal["full", "lora", "qlora"]
ReferenceKind = Literal["auto", "none", "copy", "adapters-off", "precomputed"]

SLEEP_SINCE = (0, 7, 3)  # vLLM's sleep mode (the oldest release vllm-ascend's sleep-mode guide names)
DEFAULT_BETA = {"grpo": 0.0, "dapo": 0.0, "rloo": 0.05, "ppo": 0.05, "dpo": 0.1, "kto": 0.1, "orpo": 0.0}
# what each framework keeps on the GPU differently (each line cites the source it was read from)
FRAMEWORK_NOTES = {
    "trl": "TRL 1.16.0: fused tiled LM head for log-probs (trl/kernels/chunked_logprob.py); reference = a full "
           "copy unless the policy is LoRA (adapters disabled) or beta = 0 (grpo_trainer.py L983-1003)",
    "verl": "verl: actor, rollout and ref share GPUs (hybrid engine); rollout.gpu_memory_utilization and "
            "free_cache_engine put vLLM to sleep between rollouts; ref is a separate FSDP model (param offload "
            "optional). Counted with TRL's per-phase accounting; verl-only buffers are not modelled",
    "openrlhf": "OpenRLHF: vLLM engines on their own GPUs (--vllm_num_engines) unless --colocate_all_models; "
                "ref/reward/critic as separate DeepSpeed models. Counted with TRL's per-phase accounting",
}


class RolloutEngine(BaseModel):
    """How completions are generated."""

    model_config = ConfigDict(extra="forbid")

    kind: RolloutKind = Field("hf", description="hf (transformers generate with the policy itself), vllm-colocate "
                                                "(vLLM in the training process, sharing its GPUs) or vllm-server "
                                                "(vLLM on GPUs of its own)")
    gpus: int = Field(0, ge=0, description="vllm-server: GPUs the rollout engine runs on (not training)")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="vLLM's share of each GPU "
                                                 "(colocate default 0.3 in TRL, server default 0.9 in vLLM)")
    sleep_level: Literal[0, 1, 2] = Field(0, description="vLLM sleep between rollouts: 0 off (TRL default), 1 "
                                          "weights to host RAM and KV dropped, 2 both dropped (TRL's when "
                                          "vllm_enable_sleep_mode=True)")
    tp: int = Field(1, ge=1, le=64, description="vLLM tensor-parallel size")
    vllm_version: str | None = Field(None, description="vLLM release whose accounting to reproduce")
    max_num_batched_tokens: int | None = Field(None, gt=0, description="vLLM's chunk (TRL colocate sets 4096)")


class RLWorkload(BaseModel):
    """An RL or preference-tuning run, as the trainer's config states it."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Algorithm = "grpo"
    framework: Framework = "trl"
    prompt_length: int | None = Field(None, gt=0, le=1 << 20, description="prompt tokens (GRPO: the longest "
                                      "prompt; DPO: the prompt part of max_length)")
    completion_length: int | None = Field(None, gt=0, le=1 << 20, description="generated tokens (TRL "
                                          "max_completion_length, default 512)")
    max_length: int | None = Field(None, gt=0, le=1 << 20, description="DPO/KTO/ORPO: prompt + completion "
                                   "(TRL default 1024)")
    num_generations: int = Field(8, ge=1, le=4096, description="G: completions per prompt")
    per_device_train_batch_size: int = Field(8, ge=1, le=1 << 16, description="sequences per GPU per micro-step "
                                             "(GRPO: completions; DPO: pairs)")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1 << 16)
    steps_per_generation: int | None = Field(None, ge=1, le=1 << 16, description="micro-steps per generation "
                                             "batch (TRL default: gradient_accumulation_steps)")
    num_iterations: int = Field(1, ge=1, le=64, description="updates per generation batch (mu)")
    beta: float | None = Field(None, ge=0, description="KL coefficient; None: the algorithm's TRL default")
    precompute_ref_log_probs: bool = False
    policy: PolicyKind = "full"
    lora_rank: int = Field(16, ge=1, le=4096)
    reference: ReferenceKind = Field("auto", description="auto: what the framework does for this algorithm, "
                                     "beta and policy")
    reference_model: str | None = Field(None, description="a reference other than the policy's own checkpoint "
                                        "(profile/config); it must share the policy's vocabulary")
    reward_model: str | None = Field(None, description="a reward model (profile/config) scored each rollout")
    critic: bool | None = Field(None, description="PPO: a trained value model (default for ppo)")
    rollout: RolloutEngine = Field(default_factory=RolloutEngine)
    gradient_checkpointing: bool = True
    model_dtype: Literal["float32", "bfloat16", "bfloat16-mixed"] = Field(
        "float32", description="the policy's parameters: TRL 1.16 loads a model path in float32 unless "
        "model_init_kwargs sets dtype (trainer/utils.py create_model_from_path), bf16=True then autocasts the compute "
        "to bf16; bfloat16: pure bf16 weights and AdamW states; bfloat16-mixed: DeepSpeed bf16 (bf16 weights and "
        "gradients, fp32 master weights and states)")
    gpus: int = Field(1, ge=1, le=1 << 16, description="training GPUs (data-parallel ranks)")
    gpus_per_node: int = Field(8, ge=1, le=1024)
    zero: int = Field(0, ge=0, le=3)
    ds3_gather_for_generation: bool = True
    use_vllm_importance_sampling: bool = Field(True, description="TRL vllm_importance_sampling_correction: an "
                                               "old-log-prob pass after every vLLM rollout")

    @model_validator(mode="after")
    def _check(self) -> "RLWorkload":
        if self.algorithm in ONLINE and self.algorithm != "ppo" and self.num_generations < 2:
            raise MemplanError(f"{self.algorithm} needs num_generations >= 2 (the group advantage compares "
                               f"completions of one prompt); got {self.num_generations}")
        if self.rollout.kind == "vllm-server" and self.rollout.gpus < 1:
            raise MemplanError("rollout vllm-server needs rollout GPUs of its own: --rollout-gpus N")
        if self.rollout.kind != "vllm-colocate" and self.rollout.sleep_level:
            raise MemplanError("--sleep-level applies to a colocated vLLM (--rollout vllm-colocate)")
        if self.algorithm in ONLINE:
            gen = self.generation_batch
            if gen % self.num_generations:
                raise MemplanError(
                    f"the generation batch {gen} (per_device_train_batch_size {self.per_device_train_batch_size} x "
                    f"{self.gpus} GPU(s) x steps_per_generation {self.generation_steps}) is not divisible by "
                    f"num_generations {self.num_generations}: TRL refuses it (grpo_config.py); make the batch a "
                    "multiple of G")
            if self.steps_per_generation is not None and self.steps_per_generation % self.gradient_accumulation_steps \
                    and self.gradient_accumulation_steps % self.steps_per_generation:
                raise MemplanError(f"steps_per_generation {self.steps_per_generation} and gradient_accumulation_steps "
                                   f"{self.gradient_accumulation_steps}: one must divide the other")
        if self.zero == 3 and not self.ds3_gather_for_generation and self.rollout.kind != "hf":
            raise MemplanError("ds3_gather_for_generation=False is not compatible with vLLM generation (TRL "
                               "grpo_config.py); use --rollout hf or gather for generation")
        nums = [int("".join(c for c in x if c.isdigit()) or 0) for x in
                (self.rollout.vllm_version or "99").lstrip("v").split("+")[0].split(".")[:3]]
        sleeps = tuple((nums + [0, 0, 0])[:3]) >= SLEEP_SINCE
        if self.framework == "verl" and self.rollout.kind == "vllm-colocate" and sleeps \
                and "sleep_level" not in self.rollout.model_fields_set:
            # verl/trainer/config/rollout/rollout.yaml free_cache_engine: True (verl b178a3cd, v0.7.0+): the
            # engine sleeps between rollouts, as the config reader counts it (rlfiles: sleep level 1)
            self.rollout.sleep_level = 1
        if self.rollout.sleep_level and self.rollout.vllm_version:
            if not sleeps:
                raise MemplanError(f"--sleep-level {self.rollout.sleep_level}: vLLM {self.rollout.vllm_version} has no "
                                   "sleep mode (LLM.sleep/wake_up arrived in 0.7.3); drop --sleep-level or use a "
                                   "newer vLLM")
        if self.policy == "full" and self.reference == "adapters-off":
            raise MemplanError("reference adapters-off needs a LoRA policy (--policy lora)")
        return self

    # ---- what follows from the fields ----------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self.algorithm in ONLINE

    @property
    def kl_beta(self) -> float:
        return DEFAULT_BETA[self.algorithm] if self.beta is None else self.beta

    @property
    def generation_steps(self) -> int:
        return self.steps_per_generation or self.gradient_accumulation_steps

    @property
    def generation_batch(self) -> int:
        """Completions per generation, all ranks (TRL generation_batch_size)."""
        return self.per_device_train_batch_size * self.gpus * self.generation_steps

    @property
    def completions_per_rank(self) -> int:
        return self.per_device_train_batch_size * self.generation_steps

    @property
    def prompt_tokens(self) -> int:
        if self.prompt_length is not None:
            return self.prompt_length
        if self.online:
            return 512
        return min(512, self.sequence // 2)

    @property
    def completion_tokens(self) -> int:
        if self.online:
            return self.completion_length or 512
        return max(self.sequence - self.prompt_tokens, 1)

    @property
    def sequence(self) -> int:
        """Tokens of one trained sequence: prompt + completion (online) or max_length (preference)."""
        if self.online:
            return self.prompt_tokens + self.completion_tokens
        if self.max_length is not None:
            return self.max_length
        if self.prompt_length and self.completion_length:
            return self.prompt_length + self.completion_length
        return 1024

    @property
    def sequences_per_micro_batch(self) -> int:
        """What one forward of the policy holds: DPO/ORPO concatenate chosen and rejected (2 x the batch)."""
        pairs = self.algorithm in ("dpo", "orpo")
        return self.per_device_train_batch_size * (2 if pairs else 1)

    @property
    def reference_kind(self) -> str:
        """'none', 'copy', 'adapters-off' or 'precomputed': the reference model as the framework keeps it."""
        if self.reference != "auto":
            return self.reference
        if self.algorithm == "orpo" or self.kl_beta == 0.0 and self.algorithm != "dpo":
            return "none"
        if self.precompute_ref_log_probs and not self.online:
            return "precomputed"
        if self.policy in ("lora", "qlora"):
            return "adapters-off"
        return "copy"

    @property
    def has_critic(self) -> bool:
        return self.critic if self.critic is not None else self.algorithm == "ppo"

    @property
    def old_logprob_pass(self) -> bool:
        """GRPO: a no-grad pass over the generation batch for importance sampling (grpo_trainer.py L2641)."""
        if not self.online:
            return False
        if self.algorithm == "rloo":  # rloo_trainer.py: old_per_token_logps always computed
            return True
        vllm = self.rollout.kind != "hf" and self.use_vllm_importance_sampling
        return vllm or self.gradient_accumulation_steps % (self.generation_steps * self.num_iterations) != 0

    @property
    def vllm_utilization(self) -> float:
        if self.rollout.gpu_memory_utilization is not None:
            return self.rollout.gpu_memory_utilization
        if self.rollout.kind == "vllm-colocate" and self.framework == "verl":
            return 0.5  # verl/trainer/config/rollout/rollout.yaml gpu_memory_utilization (verl b178a3cd, v0.7.0+)
        return 0.3 if self.rollout.kind == "vllm-colocate" else 0.9
