"""A torch FSDP section, as accelerate, the HF Trainer and axolotl spell it (with or without the `fsdp_` prefix).

What decides memory (torch.distributed.fsdp; accelerate utils/dataclasses.py FullyShardedDataParallelPlugin;
transformers training_args.py `_process_fsdp_args`):
- sharding: FSDP1's sharding_strategy FULL_SHARD = ZeRO-3 (parameters, gradients and optimizer states sharded),
  SHARD_GRAD_OP = ZeRO-2 (parameters stay gathered between forward and backward), NO_SHARD = DDP,
  HYBRID_SHARD(_ZERO2) = the same within a node and replicated across nodes.  FSDP2 says it with
  reshard_after_forward: true = ZeRO-3, false = ZeRO-2.  accelerate (1.x) writes FSDP1's strategy name into
  fsdp_reshard_after_forward; transformers writes it lower-case.
- offload_params / cpu_offload: CPUOffload(Policy): parameters and gradients live on CPU and the optimizer steps
  there (so its states are on CPU too).
- activation_checkpointing: every wrapped transformer layer is checkpointed (full recompute).
"""
from __future__ import annotations

from typing import Any

from memplan.setupfiles._collect import Collector

STRATEGIES = {"full_shard": 3, "shard_grad_op": 2, "no_shard": 0, "hybrid_shard": 3, "hybrid_shard_zero2": 2,
              "1": 3, "2": 2, "3": 0, "4": 3, "5": 2}  # accelerate also accepts 1-5 (FSDP_SHARDING_STRATEGY order)
HYBRID = {"hybrid_shard", "hybrid_shard_zero2", "4", "5"}

REASONS = {
    "auto_wrap_policy": "which modules are wrapped: memplan assumes one FSDP unit per transformer layer",
    "transformer_layer_cls_to_wrap": "which modules are wrapped: memplan assumes one FSDP unit per transformer layer",
    "min_num_params": "size-based wrapping is not modelled: memplan assumes one FSDP unit per transformer layer",
    "state_dict_type": "checkpoint format, not training memory",
    "final_state_dict_type": "checkpoint format, not training memory",
    "cpu_ram_efficient_loading": "model loading, before the training step",
    "sync_module_states": "model loading, before the training step",
    "use_orig_params": "no memory effect in a step",
    "forward_prefetch": "prefetch order: memplan counts one layer in flight beside the one computing",
    "backward_prefetch": "prefetch order: memplan counts one layer in flight beside the one computing",
    "mixed_precision_policy": "FSDP's casts follow the run's mixed precision setting",
}


def _key(section: str, cfg: dict[str, Any], name: str) -> str | None:
    """The key under which `name` appears in this section: `fsdp_<name>` or `<name>`."""
    for spelled in (f"fsdp_{name}", name):
        if spelled in cfg:
            return f"{section}.{spelled}" if section else spelled
    return None


def read(c: Collector, section: str, cfg: dict[str, Any] | None = None, source: str = "") -> None:
    """The FSDP settings under `section` (a dotted key; '' = the top level)."""
    cfg = cfg if cfg is not None else (c.mapping(section) or {}) if section else c.data
    c.set("engine", "fsdp", section or "(format)", note=f"torch FSDP{' via ' + source if source else ''}")
    version_key = _key(section, cfg, "version")
    version = c.integer(version_key) if version_key else None
    if version is not None and version not in (1, 2):
        raise c.error(version_key, f"FSDP versions are 1 and 2, got {version}")
    zero_from: str | None = None
    for name in ("sharding_strategy", "reshard_after_forward"):
        key = _key(section, cfg, name)
        if key is None or c.get(key, None) is None:
            continue
        raw = c.get(key)
        if isinstance(raw, bool) or (isinstance(raw, str) and raw.lower() in ("true", "false")):
            zero = 3 if c.boolean(key) else 2
            note = "FSDP2 reshard_after_forward: true = ZeRO-3, false = ZeRO-2 (parameters stay gathered)"
        else:
            text = str(raw).strip().lower()
            if text not in STRATEGIES:
                raise c.error(key, f"{raw!r} is not one of FULL_SHARD, SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD, "
                                   "HYBRID_SHARD_ZERO2, true, false")
            zero = STRATEGIES[text]
            note = f"{str(raw).upper()} = ZeRO-{zero}" if zero else "NO_SHARD = DDP"
            if text in HYBRID:
                c.warn(f"{c.path}: {key} {raw}: FSDP shards within a node and replicates across nodes; memplan "
                       "shards over every data-parallel GPU, so on more than one node it underestimates the states")
        if zero_from is None or name == "sharding_strategy":
            c.set("zero", zero, key, note=note)
            zero_from = key
        else:
            c.consult(key, "zero", f"{zero_from} decides (accelerate prefers sharding_strategy)")
    if zero_from is None:
        c.default("zero", 3, f"{section}.reshard_after_forward" if section else "reshard_after_forward",
                  "FULL_SHARD / reshard_after_forward=True are FSDP's defaults (ZeRO-3)")
    for name in ("offload_params", "cpu_offload"):
        key = _key(section, cfg, name)
        if key and c.boolean(key):
            note = "CPUOffload: parameters and gradients on CPU, the optimizer steps there"
            c.set("offload_params", "cpu", key, note=note)
            c.set("offload_optimizer", "cpu", key, note=note)
        elif key:
            c.consult(key, "offload_params", "false: no CPU offload")
    pin = _key(section, cfg, "cpu_offload_pin_memory")
    if pin and c.boolean(pin) is not None:
        c.set("pin_memory", c.boolean(pin), pin)
    ac = _key(section, cfg, "activation_checkpointing")
    if ac and c.boolean(ac):
        c.set("recompute", "full", ac, note="FSDP checkpoints every wrapped transformer layer")
    elif ac:
        c.consult(ac, "recompute", "false: FSDP checkpoints nothing itself")
    if version_key:
        c.consult(version_key, "engine", f"FSDP{version}")
    for name, reason in REASONS.items():
        key = _key(section, cfg, name)
        if key:
            c.ignore(key, reason)
