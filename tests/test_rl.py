"""`memplan rl`: the RL / preference-tuning plan (TRL 1.16 conventions), its config readers and its one-line errors."""
from __future__ import annotations

import json

import pytest

from memplan.answers.rl import rl
from memplan.errors import MemplanError

FAST = dict(search_changes=False)


def _phase(plan, name):
    return next(p for p in plan.phases if p.name == name)


def _comp(phase, prefix):
    return sum(c.bytes for c in phase.components if c.name.startswith(prefix))


def test_grpo_default_beta_is_zero_no_reference():
    p = rl("qwen3-0.6b", "h100-sxm", prompt_length=256, completion_length=512, **FAST)
    assert p.workload.kl_beta == 0.0 and p.reference == "none"
    assert not any(c.category == "reference" for ph in p.phases for c in ph.components)
    assert [ph.name for ph in p.phases] == ["rollout", "update"]  # hf generate, no old-log-prob pass, no ref


def test_grpo_beta_adds_reference_copy_and_scoring():
    p = rl("qwen3-0.6b", "h100-sxm", prompt_length=256, completion_length=512, beta=0.04, **FAST)
    assert p.reference == "copy"
    scoring = _phase(p, "scoring")
    ref = _comp(scoring, "reference model")
    assert ref == pytest.approx(p.parameters * 4, rel=0.01)  # the reference in the policy's dtype (TRL: fp32)


def test_lora_reference_is_the_base_with_adapters_off():
    p = rl("qwen3-0.6b", "h100-sxm", prompt_length=256, completion_length=512, beta=0.04, policy="lora", **FAST)
    assert p.reference == "adapters-off"
    assert not any(c.category == "reference" for ph in p.phases for c in ph.components)
    assert "scoring" in [ph.name for ph in p.phases]  # the reference pass still runs


def test_fused_head_never_holds_the_logits():
    """The update must not hold a [B x T x V] tensor: the fp32 logits of 8 x 2048 x 151,936 would be 9.3 GiB
    alone (the checkpointed layer inputs, fp32 under autocast, are 1.9 GiB)."""
    p = rl("qwen3-0.6b", "h100-sxm", prompt_length=1024, completion_length=1024, **FAST)
    upd = _phase(p, "update")
    assert _comp(upd, "update activations") + _comp(upd, "update temporaries") < 8 * 2048 * 151936 * 4 / 2


def test_dpo_reference_forward_inside_the_loss_and_precomputed():
    p = rl("qwen3-0.6b", "h100-sxm", algorithm="dpo", max_length=1024, per_device_train_batch_size=2, **FAST)
    assert p.reference == "copy" and p.workload.sequences_per_micro_batch == 4  # chosen + rejected
    assert "reference forward" in [ph.name for ph in p.phases]
    pre = rl("qwen3-0.6b", "h100-sxm", algorithm="dpo", max_length=1024, per_device_train_batch_size=2,
             precompute_ref_log_probs=True, **FAST)
    assert pre.reference == "precomputed" and "reference forward" not in [ph.name for ph in pre.phases]
    assert pre.required < p.required


def test_colocated_vllm_sleep_levels_and_host_ram():
    kw = dict(prompt_length=256, completion_length=1024, rollout="vllm-colocate", gpus=8, **FAST)
    awake = rl("qwen3-0.6b", "h100-sxm", **kw)
    rollout = _phase(awake, "rollout")
    pool = _comp(rollout, "vLLM KV block pool")
    assert pool > 0 and _comp(_phase(awake, "update"), "vLLM KV block pool") == pool  # no sleep: held throughout
    # vLLM's share: gpu_memory_utilization 0.3 (TRL's default) of the GPU
    share = _comp(rollout, "vLLM weights") + pool + _comp(rollout, "vLLM CUDA graphs")
    assert share < 0.3 * 80 * 2**30
    two = rl("qwen3-0.6b", "h100-sxm", sleep_level=2, **kw)
    assert _comp(_phase(two, "update"), "vLLM KV block pool") == 0 and two.host_ram_per_node == 0
    one = rl("qwen3-0.6b", "h100-sxm", sleep_level=1, **kw)
    assert one.host_ram_per_node == 8 * _comp(rollout, "vLLM weights")
    assert any("level 2 only" in w for w in one.warnings)
    assert one.time.sleep_wake_seconds > 0 and two.time.sleep_wake_seconds == 0


def test_old_logprob_pass_with_vllm():
    p = rl("qwen3-0.6b", "h100-sxm", prompt_length=256, completion_length=512, rollout="vllm-colocate", **FAST)
    assert "old log-probs" in _phase(p, "scoring").note


def test_time_per_step_and_gpu_hours():
    p = rl("qwen3-0.6b", "h100-sxm", prompt_length=256, completion_length=512, **FAST)
    t = p.time
    assert t.step_seconds == pytest.approx(t.rollout_seconds + t.scoring_seconds + t.update_seconds
                                           + t.sync_seconds + t.sleep_wake_seconds)
    assert t.tokens == 8 * 768 and t.gpu_hours_per_1000_steps == pytest.approx(1000 * t.step_seconds / 3600)


def test_search_finds_the_smallest_change_and_the_fastest():
    p = rl("qwen2.5-7b", "h100-sxm", prompt_length=512, completion_length=1024, beta=0.04, rollout="vllm-colocate")
    assert p.fits is False
    assert p.smallest_change is not None and p.smallest_change.fits and p.smallest_change.dimensions == 1
    assert p.fastest is not None and p.fastest.fits


@pytest.mark.parametrize("kw,words", [
    (dict(num_generations=3, per_device_train_batch_size=8), "not divisible by num_generations 3"),
    (dict(reference_model="llama-3-8b", beta=0.1), "vocabulary of 128,256"),
    (dict(rollout="vllm-colocate", sleep_level=2, vllm_version="0.6.0"), "has no sleep mode"),
    (dict(rollout="hf", sleep_level=1), "applies to a colocated vLLM"),
    (dict(rollout="vllm-server"), "--rollout-gpus"),
    (dict(numgenerations=4), "did you mean"),
])
def test_bad_input_is_one_line(kw, words):
    with pytest.raises(MemplanError) as e:
        rl("qwen2.5-7b", "h100-sxm", **FAST, **kw)
    assert words in str(e.value) and "\n" not in str(e.value)


# ---- config files --------------------------------------------------------------------------------------------------
def test_trl_grpo_yaml_sequence_from_the_file(tmp_path):
    f = tmp_path / "grpo.yaml"
    f.write_text("model_name_or_path: qwen3-0.6b\nmax_prompt_length: 300\nmax_completion_length: 700\n"
                 "num_generations: 4\nper_device_train_batch_size: 4\nuse_vllm: true\nvllm_mode: colocate\n"
                 "vllm_gpu_memory_utilization: 0.25\nvllm_enable_sleep_mode: true\nbeta: 0.02\nuse_peft: true\n"
                 "lora_r: 32\nlearning_rate: 1.0e-6\n")
    p = rl(None, "h100-sxm", config=str(f), **FAST)
    w = p.workload
    assert p.sequence == 1000  # never the model's 40,960 max positions
    assert (w.rollout.kind, w.rollout.sleep_level, w.vllm_utilization) == ("vllm-colocate", 2, 0.25)
    assert (w.policy, w.lora_rank, w.kl_beta, w.num_generations) == ("lora", 32, 0.02, 4)
    # a flag overrides the file
    assert rl(None, "h100-sxm", config=str(f), completion_length=100, **FAST).sequence == 400


def test_trl_dpo_json(tmp_path):
    f = tmp_path / "dpo.json"
    f.write_text(json.dumps({"max_length": 2048, "per_device_train_batch_size": 2, "precompute_ref_log_probs": True,
                             "model_init_kwargs": {"dtype": "bfloat16"}}))
    p = rl("qwen3-0.6b", "h100-sxm", config=str(f), **FAST)
    assert p.workload.algorithm == "dpo" and p.sequence == 2048 and p.reference == "precomputed"
    assert p.workload.model_dtype == "bfloat16"


def test_grpo_yaml_without_prompt_length_warns(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("max_completion_length: 256\nnum_generations: 8\n")
    p = rl("qwen3-0.6b", None, config=str(f), **FAST)
    assert any("max_prompt_length" in w for w in p.warnings)


def test_verl_yaml(tmp_path):
    f = tmp_path / "verl.yaml"
    f.write_text("""
data: {max_prompt_length: 512, max_response_length: 1536, train_batch_size: 64}
algorithm: {adv_estimator: grpo}
actor_rollout_ref:
  model: {path: qwen3-0.6b, enable_gradient_checkpointing: true}
  actor: {ppo_micro_batch_size_per_gpu: 4, use_kl_loss: true, kl_loss_coef: 0.001}
  rollout: {name: vllm, n: 8, gpu_memory_utilization: 0.5, tensor_model_parallel_size: 1}
trainer: {n_gpus_per_node: 8, nnodes: 1}
""")
    p = rl(None, "h100-sxm", config=str(f), **FAST)
    w = p.workload
    assert (w.framework, w.algorithm, p.sequence, w.num_generations, w.gpus) == ("verl", "grpo", 2048, 8, 8)
    assert w.vllm_utilization == 0.5 and w.kl_beta == 0.001 and w.rollout.sleep_level == 1
    assert w.generation_batch == 64 * 8


@pytest.mark.parametrize("text,words", [
    ("num_generations: many\n", "whole number"),
    ("- a\n- b\n", "expected a mapping"),
    ("use_vllm: true\nvllm_mode: remote\n", "colocate or server"),
    ("max_prompt_length: [\n", "not valid YAML"),
])
def test_config_errors_are_one_line(tmp_path, text, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(MemplanError) as e:
        rl("qwen3-0.6b", None, config=str(f), **FAST)
    assert words in str(e.value) and "\n" not in str(e.value)


# ---- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_table_and_json(capsys):
    from memplan.cli import main

    assert main(["rl", "qwen3-0.6b", "-g", "h100-sxm", "--prompt-length", "256", "--completion-length", "512",
                 "--no-search"]) == 0
    out = capsys.readouterr().out
    assert "rollout" in out and "update" in out and "time per RL step" in out and "FITS" in out
    assert main(["rl", "qwen3-0.6b", "-g", "h100-sxm", "--prompt-length", "256", "--no-search", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"phases", "peak_phase", "required", "fits", "time", "host_ram_per_node"} <= set(data)


def test_cli_bad_input_exit_2(capsys):
    from memplan.cli import main

    assert main(["rl", "qwen2.5-7b", "-G", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "num_generations 3" in err


def test_cli_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from memplan.cli import main

    out = tmp_path / "rl.png"
    assert main(["rl", "qwen3-0.6b", "-g", "h100-sxm", "--prompt-length", "128", "--no-search", "--plot",
                 str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_ppo_keeps_a_critic_and_a_reward_model():
    p = rl("qwen3-0.6b", "h100-sxm", algorithm="ppo", prompt_length=128, completion_length=256,
           reward_model="qwen3-0.6b", **FAST)
    upd = _phase(p, "update")
    assert _comp(upd, "critic") > 0 and _comp(upd, "reward model") > 0 and p.reference == "copy"


def test_search_splits_the_colocated_engine_over_tp():
    """32B on 8 H100s, ZeRO-3, vLLM colocated at 0.3: the engine's 61 GiB of weights leave no KV blocks at TP 1;
    TRL's vllm_tensor_parallel_size splits them over the ranks."""
    p = rl("qwen3-32b", "h100-sxm", gpus=8, zero=3, prompt_length=1024, completion_length=4096,
           rollout="vllm-colocate", sleep_level=2, model_dtype="bfloat16", beta=0.01)
    assert p.fits is False and p.vllm_starts is False
    assert p.smallest_change.changes == {"vllm_tp": 4}


OPENRLHF = """set -x
python3 -m openrlhf.cli.train_ppo_ray \\
   --ref_num_nodes 1 --ref_num_gpus_per_node 8 \\
   --actor_num_nodes 1 \\
   --actor_num_gpus_per_node 8 \\
   --vllm_num_engines 4 \\
   --vllm_tensor_parallel_size 2 \\
   --colocate_all_models \\
   --vllm_gpu_memory_utilization 0.6 \\
   --init_kl_coef 1e-3 \\
   --use_kl_loss \\
   --advantage_estimator group_norm \\
   --pretrain qwen3-8b \\
   --micro_train_batch_size 8 \\
   --train_batch_size 128 \\
   --micro_rollout_batch_size 16 \\
   --rollout_batch_size 128 \\
   --n_samples_per_prompt 8 \\
   --prompt_max_len 1024 \\
   --generate_max_len 1024 \\
   --zero_stage 3 \\
   --bf16 \\
   --gradient_checkpointing \\
   --vllm_enable_sleep \\
   --deepspeed_enable_sleep
# after OpenRLHF examples/scripts/train_dapo_ray_hybrid_engine.sh
"""


def test_openrlhf_launch_script(tmp_path):
    f = tmp_path / "train.sh"
    f.write_text(OPENRLHF)
    p = rl(None, "h100-sxm", config=str(f), **FAST)
    w = p.workload
    assert (w.framework, w.algorithm, p.sequence, w.num_generations, w.gpus, w.zero) == \
        ("openrlhf", "grpo", 2048, 8, 8, 3)
    assert (w.rollout.kind, w.rollout.tp, w.vllm_utilization, w.rollout.sleep_level) == ("vllm-colocate", 2, 0.6, 1)
    assert w.model_dtype == "bfloat16-mixed" and w.kl_beta == 1e-3
    assert w.generation_batch == 128 * 8 and w.gradient_accumulation_steps == 2 and w.generation_steps == 16
    assert any("deepspeed_enable_sleep" in x for x in p.warnings)


def test_weight_sync_gathers_a_peft_policy_whole_under_zero3():
    kw = dict(gpus=8, zero=3, beta=0.01, rollout="vllm-colocate", sleep_level=2, prompt_length=512,
              completion_length=1024, model_dtype="bfloat16", **FAST)
    lora = rl("qwen3-8b", "h100-sxm", policy="lora", **kw)
    full = rl("qwen3-8b", "h100-sxm", **kw)
    assert [p.name for p in lora.phases][:2] == ["weight sync", "rollout"]
    g_lora = _comp(_phase(lora, "weight sync"), "gathered policy")
    g_full = _comp(_phase(full, "weight sync"), "gathered policy")
    assert g_lora >= 0.99 * lora.parameters * 2 * 7 / 8 and g_full < g_lora / 10


def test_json_fields_and_flags_are_frozen():
    """JSON field names and flags are an interface: add, never rename (a new one is added here on purpose)."""
    from memplan.cli.rl import rl_command
    from memplan.results.rl import RLPhase, RLPlan, RLTime

    assert {"phases", "peak_phase", "required", "fits", "headroom", "host_ram_per_node", "time", "smallest_change",
            "fastest", "options", "update_moments", "overheads", "vllm_starts", "vllm_kv_pool", "workload",
            "reference", "sequence", "assumptions", "warnings", "notes"} <= set(RLPlan.model_fields)
    assert {"rollout_seconds", "scoring_seconds", "update_seconds", "sync_seconds", "sleep_wake_seconds",
            "step_seconds", "tokens_per_second", "gpu_hours_per_1000_steps"} <= set(RLTime.model_fields)
    assert set(RLPhase.model_fields) == {"name", "total", "components", "note"}
    flags = {o for p in rl_command.params for o in getattr(p, "opts", []) if o.startswith("--")}
    assert {"--algorithm", "--config", "--prompt-length", "--completion-length", "--max-length", "--num-generations",
            "--per-device-train-batch-size", "--beta", "--policy", "--rollout", "--rollout-gpus",
            "--gpu-memory-utilization", "--sleep-level", "--vllm-tp", "--gpus", "--zero", "--json", "--plot",
            "--precompute-ref-log-probs", "--reference-model", "--reward-model", "--model-dtype"} <= flags
