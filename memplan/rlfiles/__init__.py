"""RL / preference-tuning config files read as data, never executed: TRL's GRPOConfig / DPOConfig as the TRL CLI
and alignment-handbook recipes write them (flat YAML or JSON), verl's Hydra YAML (nested actor_rollout_ref /
data / algorithm / trainer blocks) and OpenRLHF's train_ppo_ray launch arguments (a .sh script, split with shlex).  Every read is bounded (memplan/userfiles.py); a bad file is one line.

The sequence comes from the file (GRPO: max_prompt_length + max_completion_length; DPO: max_length; verl:
data.max_prompt_length + data.max_response_length), never from the model's max positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memplan.errors import MemplanError


@dataclass
class RLConfigReading:
    path: str
    format: str  # "trl" or "verl"
    kwargs: dict[str, Any]
    model: str | None = None
    read: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _load(path: str) -> Any:
    from memplan.userfiles import read_user_json, read_user_text

    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise MemplanError(f"{path}: reading YAML needs PyYAML: `pip install pyyaml`") from None
        try:
            return yaml.safe_load(read_user_text(path, what="--config"))
        except yaml.YAMLError as exc:
            raise MemplanError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return read_user_json(path, what="--config")


def _bool(value: Any, key: str, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise MemplanError(f"{path}: {key} must be true or false, got {value!r}")


def _int(value: Any, key: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MemplanError(f"{path}: {key} must be a whole number, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise MemplanError(f"{path}: {key} must be a whole number, got {value!r}") from None
    if n <= 0:
        raise MemplanError(f"{path}: {key} must be positive, got {n}")
    return n


def _float(value: Any, key: str, path: str) -> float:
    if isinstance(value, bool):
        raise MemplanError(f"{path}: {key} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MemplanError(f"{path}: {key} must be a number, got {value!r}") from None


# TRL key -> (memplan keyword, kind)
TRL_KEYS = {
    "max_prompt_length": ("prompt_length", "int"),
    "max_completion_length": ("completion_length", "int"),
    "max_length": ("max_length", "int"),
    "num_generations": ("num_generations", "int"),
    "per_device_train_batch_size": ("per_device_train_batch_size", "int"),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", "int"),
    "steps_per_generation": ("steps_per_generation", "int"),
    "num_iterations": ("num_iterations", "int"),
    "beta": ("beta", "float"),
    "gradient_checkpointing": ("gradient_checkpointing", "bool"),
    "precompute_ref_log_probs": ("precompute_ref_log_probs", "bool"),
    "vllm_gpu_memory_utilization": ("gpu_memory_utilization", "float"),
    "vllm_tensor_parallel_size": ("vllm_tp", "int"),
    "lora_r": ("lora_rank", "int"),
    "ds3_gather_for_generation": ("ds3_gather_for_generation", "bool"),
    "vllm_importance_sampling_correction": ("use_vllm_importance_sampling", "bool"),
}
TRL_CONSULTED = ("use_vllm", "vllm_mode", "vllm_enable_sleep_mode", "model_name_or_path", "use_peft",
                 "load_in_4bit", "bf16", "fp16", "model_init_kwargs", "torch_dtype", "dtype", "loss_type")
GRPO_ONLY = ("num_generations", "max_completion_length", "use_vllm", "steps_per_generation", "num_iterations")
DPO_ONLY = ("max_length", "precompute_ref_log_probs")


def _dtype(data: dict[str, Any]) -> str | None:
    mik = data.get("model_init_kwargs")
    raw = None
    if isinstance(mik, dict):
        raw = mik.get("dtype", mik.get("torch_dtype"))
    raw = raw or data.get("dtype") or data.get("torch_dtype")
    if raw is None:
        return None
    text = str(raw).lower().removeprefix("torch.")
    return {"bfloat16": "bfloat16", "bf16": "bfloat16", "auto": "bfloat16", "float32": "float32",
            "fp32": "float32"}.get(text)


def read_trl(data: dict[str, Any], path: str) -> RLConfigReading:
    kw: dict[str, Any] = {}
    r = RLConfigReading(path=path, format="trl", kwargs=kw)
    for key, value in data.items():
        if key in TRL_KEYS:
            name, kind = TRL_KEYS[key]
            if value is None:
                continue
            kw[name] = {"int": _int, "float": _float, "bool": _bool}[kind](value, key, path)
            r.read.append(f"{key} -> {name}")
        elif key not in TRL_CONSULTED:
            r.ignored.append(key)
    online = any(k in data for k in GRPO_ONLY)
    if online and any(k in data for k in DPO_ONLY if k != "max_length"):
        r.warnings.append(f"{path}: both GRPO and DPO settings; read as GRPO")
    kw["algorithm"] = "grpo" if online else "dpo"
    if online and "max_length" in kw:
        r.warnings.append(f"{path}: max_length is a DPO/SFT setting; GRPO's sequence is max_prompt_length + "
                          "max_completion_length")
        kw.pop("max_length")
    if online and "prompt_length" not in kw:
        r.warnings.append(f"{path}: no max_prompt_length (GRPOConfig 1.16 has none): give --prompt-length, else "
                          "512 prompt tokens are assumed")
    if _bool(data.get("use_vllm", False), "use_vllm", path):
        mode = str(data.get("vllm_mode", "colocate"))
        if mode not in ("colocate", "server"):
            raise MemplanError(f"{path}: vllm_mode must be colocate or server, got {mode!r}")
        kw["rollout"] = "vllm-colocate" if mode == "colocate" else "vllm-server"
        if mode == "server":
            kw.pop("gpu_memory_utilization", None)
            r.warnings.append(f"{path}: vllm_mode server: the server's GPUs are not in this file; give "
                              "--rollout-gpus (vllm_gpu_memory_utilization applies to colocate only)")
        if _bool(data.get("vllm_enable_sleep_mode", False), "vllm_enable_sleep_mode", path):
            kw["sleep_level"] = 2  # trl/generation/vllm_generation.py: llm.sleep(level=2)
    elif online:
        kw["rollout"] = "hf"
    if _bool(data.get("use_peft", False), "use_peft", path):
        kw["policy"] = "qlora" if _bool(data.get("load_in_4bit", False), "load_in_4bit", path) else "lora"
    if data.get("fp16") and _bool(data["fp16"], "fp16", path):
        r.warnings.append(f"{path}: fp16=True: counted as bf16 autocast (the same bytes)")
    dt = _dtype(data)
    if dt:
        kw["model_dtype"] = dt
    model = data.get("model_name_or_path")
    r.model = str(model) if model else None
    return r


def _get(data: dict[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


VERL_KEYS = {
    "data.max_prompt_length": ("prompt_length", "int"),
    "data.max_response_length": ("completion_length", "int"),
    "actor_rollout_ref.rollout.n": ("num_generations", "int"),
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": ("per_device_train_batch_size", "int"),
    "actor_rollout_ref.rollout.gpu_memory_utilization": ("gpu_memory_utilization", "float"),
    "actor_rollout_ref.rollout.tensor_model_parallel_size": ("vllm_tp", "int"),
    "actor_rollout_ref.model.enable_gradient_checkpointing": ("gradient_checkpointing", "bool"),
    "actor_rollout_ref.model.lora_rank": ("lora_rank", "int"),
    "trainer.n_gpus_per_node": ("gpus_per_node", "int"),
}


def read_verl(data: dict[str, Any], path: str) -> RLConfigReading:
    kw: dict[str, Any] = {"framework": "verl", "rollout": "vllm-colocate"}
    r = RLConfigReading(path=path, format="verl", kwargs=kw)
    for key, (name, kind) in VERL_KEYS.items():
        value = _get(data, key)
        if value is None:
            continue
        kw[name] = {"int": _int, "float": _float, "bool": _bool}[kind](value, key, path)
        r.read.append(f"{key} -> {name}")
    if kw.get("lora_rank", 0):
        kw["policy"] = "lora"
    nodes = _get(data, "trainer.nnodes") or 1
    kw["gpus"] = _int(nodes, "trainer.nnodes", path) * kw.get("gpus_per_node", 8)
    adv = str(_get(data, "algorithm.adv_estimator") or "gae")
    kw["algorithm"] = {"grpo": "grpo", "rloo": "rloo", "gae": "ppo", "reinforce_plus_plus": "rloo"}.get(adv, "grpo")
    if _get(data, "actor_rollout_ref.actor.use_kl_loss"):
        coef = _get(data, "actor_rollout_ref.actor.kl_loss_coef")
        kw["beta"] = _float(coef if coef is not None else 0.001, "actor_rollout_ref.actor.kl_loss_coef", path)
    elif kw["algorithm"] != "ppo":
        kw["beta"] = 0.0
    name = str(_get(data, "actor_rollout_ref.rollout.name") or "vllm")
    if name not in ("vllm", "sglang", "hf"):
        raise MemplanError(f"{path}: actor_rollout_ref.rollout.name {name!r}: vllm, sglang or hf")
    if name == "hf":
        kw["rollout"] = "hf"
    elif name == "sglang":
        r.warnings.append(f"{path}: rollout sglang counted with vLLM's accounting (same gpu_memory_utilization "
                          "share)")
    if _get(data, "actor_rollout_ref.rollout.free_cache_engine") is not False and kw["rollout"] != "hf":
        kw["sleep_level"] = 1  # verl frees the KV cache and offloads weights between rollouts
        r.warnings.append(f"{path}: free_cache_engine: counted as vLLM sleep level 1 (weights to host, KV dropped)")
    train_bs = _get(data, "data.train_batch_size")
    if train_bs is not None and kw.get("num_generations"):
        total = _int(train_bs, "data.train_batch_size", path) * kw["num_generations"]
        per_rank = total // kw["gpus"]
        mb = kw.get("per_device_train_batch_size") or per_rank
        kw["per_device_train_batch_size"] = mb
        if per_rank % mb:
            raise MemplanError(f"{path}: data.train_batch_size {train_bs} x rollout.n {kw['num_generations']} over "
                               f"{kw['gpus']} GPUs is {per_rank} per GPU, not a multiple of the micro-batch {mb}")
        kw["steps_per_generation"] = max(per_rank // mb, 1)
        kw["gradient_accumulation_steps"] = kw["steps_per_generation"]
    model = _get(data, "actor_rollout_ref.model.path")
    r.model = str(model) if model else None
    return r


def _openrlhf_args(text: str, path: str) -> dict[str, Any]:
    """`--key value` / `--flag` pairs of an OpenRLHF launch (a shell script or a command line), read as text."""
    import shlex

    try:
        tokens = shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError as exc:
        raise MemplanError(f"{path}: cannot split the command line ({exc})") from None
    if "openrlhf.cli.train_ppo_ray" in tokens:
        tokens = tokens[tokens.index("openrlhf.cli.train_ppo_ray") + 1:]
    args: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.startswith("--"):
            key = t[2:].replace("-", "_")
            vals = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                vals.append(tokens[i + 1])
                i += 1
            args[key] = True if not vals else vals[0] if len(vals) == 1 else vals
        i += 1
    return args


OPENRLHF_KEYS = {
    "prompt_max_len": ("prompt_length", "int"),
    "generate_max_len": ("completion_length", "int"),
    "n_samples_per_prompt": ("num_generations", "int"),
    "micro_train_batch_size": ("per_device_train_batch_size", "int"),
    "zero_stage": ("zero", "int"),
    "lora_rank": ("lora_rank", "int"),
    "vllm_gpu_memory_utilization": ("gpu_memory_utilization", "float"),
    "vllm_tensor_parallel_size": ("vllm_tp", "int"),
}


def read_openrlhf(text: str, path: str) -> RLConfigReading:
    """OpenRLHF's train_ppo_ray launch arguments (examples/scripts/*.sh in OpenRLHF/OpenRLHF)."""
    a = _openrlhf_args(text, path)
    kw: dict[str, Any] = {"framework": "openrlhf"}
    r = RLConfigReading(path=path, format="openrlhf", kwargs=kw)
    for key, (name, kind) in OPENRLHF_KEYS.items():
        if key in a:
            kw[name] = {"int": _int, "float": _float}[kind](a[key], "--" + key, path)
            r.read.append(f"--{key} -> {name}")
    nodes = _int(a.get("actor_num_nodes", 1), "--actor_num_nodes", path)
    kw["gpus"] = nodes * _int(a.get("actor_num_gpus_per_node", 1), "--actor_num_gpus_per_node", path)
    adv = str(a.get("advantage_estimator", "gae"))
    kw["algorithm"] = {"gae": "ppo", "group_norm": "grpo", "dr_grpo": "grpo", "rloo": "rloo", "reinforce": "rloo",
                       "reinforce_baseline": "rloo"}.get(adv, "grpo")
    if kw["algorithm"] == "ppo":
        kw["num_generations"] = max(kw.get("num_generations", 1), 2)
    kw["gradient_checkpointing"] = bool(a.get("gradient_checkpointing", False))
    if a.get("bf16"):
        kw["model_dtype"] = "bfloat16-mixed"  # DeepSpeed bf16: bf16 weights and gradients, fp32 master and states
    if kw.get("lora_rank"):
        kw["policy"] = "lora"
    coef = a.get("init_kl_coef")
    kw["beta"] = _float(coef, "--init_kl_coef", path) if coef is not None else 0.01
    if a.get("reward_pretrain"):
        kw["reward_model"] = str(a["reward_pretrain"])
    engines = _int(a.get("vllm_num_engines", 0), "--vllm_num_engines", path) if a.get("vllm_num_engines") else 0
    if a.get("colocate_all_models"):
        kw["rollout"] = "vllm-colocate"
        if a.get("vllm_enable_sleep"):
            kw["sleep_level"] = 1
            r.warnings.append(f"{path}: --vllm_enable_sleep counted as vLLM sleep level 1 (weights to host)")
    elif engines:
        kw["rollout"] = "vllm-server"
        kw["rollout_gpus"] = engines * kw.get("vllm_tp", 1)
    else:
        kw["rollout"] = "hf"
    rollout_bs = a.get("rollout_batch_size")
    if rollout_bs is not None:
        total = _int(rollout_bs, "--rollout_batch_size", path) * kw.get("num_generations", 1)
        mb = kw.get("per_device_train_batch_size", 1)
        per_rank = max(total // kw["gpus"], mb)
        if per_rank % mb:
            raise MemplanError(f"{path}: --rollout_batch_size {rollout_bs} x --n_samples_per_prompt over {kw['gpus']} "
                               f"actor GPUs is {per_rank} per GPU, not a multiple of --micro_train_batch_size {mb}")
        kw["steps_per_generation"] = per_rank // mb
        train_bs = a.get("train_batch_size")
        ga = _int(train_bs, "--train_batch_size", path) // (mb * kw["gpus"]) if train_bs else per_rank // mb
        ga = max(ga, 1)
        if kw["steps_per_generation"] % ga and ga % kw["steps_per_generation"]:
            ga = kw["steps_per_generation"]
        kw["gradient_accumulation_steps"] = ga
    for flag in ("adam_offload", "ref_reward_offload", "deepspeed_enable_sleep", "packing_samples"):
        if a.get(flag):
            r.warnings.append(f"{path}: --{flag} is not modelled (counted without it)")
    if kw["algorithm"] == "ppo" and not a.get("critic_pretrain") and not a.get("reward_pretrain"):
        kw["critic"] = True
    r.model = str(a["pretrain"]) if a.get("pretrain") else None
    return r


def read_rl_config(path: str) -> RLConfigReading:
    if not isinstance(path, str) or not path.strip():
        raise MemplanError("--config needs a file name")
    if path.lower().endswith((".sh", ".txt")) or not path.lower().endswith((".yaml", ".yml", ".json")):
        from memplan.userfiles import read_user_text

        text = read_user_text(path, what="--config")
        if "--pretrain" in text or "openrlhf" in text:
            return read_openrlhf(text, path)
        if path.lower().endswith((".sh", ".txt")):
            raise MemplanError(f"{path}: not an OpenRLHF launch (no --pretrain); give a TRL YAML/JSON or a verl YAML")
    data = _load(path)
    if not isinstance(data, dict):
        raise MemplanError(f"{path}: expected a mapping of settings (a TRL GRPOConfig/DPOConfig or a verl config)")
    if "actor_rollout_ref" in data or "data" in data and isinstance(data.get("data"), dict):
        return read_verl(data, path)
    return read_trl(data, path)
