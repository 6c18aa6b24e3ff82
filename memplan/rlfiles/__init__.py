"""RL / preference-tuning config files read as data, never executed: TRL's GRPOConfig / DPOConfig as the TRL CLI
and alignment-handbook recipes write them (flat YAML or JSON), and verl's Hydra YAML (nested actor_rollout_ref /
data / algorithm / trainer blocks).  Every read is bounded (memplan/userfiles.py); a bad file is one line.

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


def read_rl_config(path: str) -> RLConfigReading:
    if not isinstance(path, str) or not path.strip():
        raise MemplanError("--config needs a file name")
    data = _load(path)
    if not isinstance(data, dict):
        raise MemplanError(f"{path}: expected a mapping of settings (a TRL GRPOConfig/DPOConfig or a verl config)")
    if "actor_rollout_ref" in data or "data" in data and isinstance(data.get("data"), dict):
        return read_verl(data, path)
    return read_trl(data, path)
