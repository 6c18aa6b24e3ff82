"""Training engines: one module per engine with its memory conventions and sources (ARCHITECTURE.md `engines/`).

`get(name)` gives an engine's conventions by the name `Layout.engine` uses (plain, deepspeed, megatron, fsdp) or
torchtitan (which runs FSDP2; memory/states.py asks the fsdp module, activations ask torchtitan for op-level SAC).
"""
from __future__ import annotations

from memplan.engines import deepspeed, fsdp, hf, megatron, torchtitan
from memplan.engines.base import EngineConventions
from memplan.errors import MemplanError, did_you_mean

MODULES = {"plain": hf, "deepspeed": deepspeed, "megatron": megatron, "fsdp": fsdp, "torchtitan": torchtitan}
REGISTRY: dict[str, EngineConventions] = {name: mod.CONVENTIONS for name, mod in MODULES.items()}


def get(name: str) -> EngineConventions:
    if name not in REGISTRY:
        raise MemplanError(did_you_mean(name, REGISTRY, "training engine"))
    return REGISTRY[name]
