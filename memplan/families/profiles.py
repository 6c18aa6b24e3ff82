"""A built-in model profile (profiles/models/*.json) -> ModelSpec.

A profile names a model and holds where its numbers come from; its architecture is the family's config.json
(`hf_config`), read by the family's reader, so a profile means exactly what the same config file would.  A
profile with only `total_parameters` is a bare count."""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError
from memplan.families.registry import apply_overrides, read_config
from memplan.spec.model import ModelSpec


def model_from_profile(data: dict[str, Any], path: str) -> ModelSpec:
    if not isinstance(data, dict):
        raise MemplanError(f"bad profile {path}: not a JSON object")
    fields = {k: v for k, v in data.items() if not k.startswith("_")}
    config = fields.get("hf_config")
    if config is not None:
        fields["architecture"] = read_config(config, path)
    return ModelSpec.model_validate(fields)


def with_overrides(spec: ModelSpec, overrides: dict[str, Any]) -> ModelSpec:
    """`spec` with memplan's architecture flags applied: through its config for a family model, or as a model
    built from flags (custom family) for a bare count."""
    from memplan.families import custom

    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return spec
    if spec.hf_config is not None:
        config = apply_overrides(spec.hf_config, overrides, spec.name)
        return ModelSpec(name=f"{spec.name}*", source=spec.source, architecture=read_config(config, spec.name),
                         hf_config=config)
    if spec.architecture is not None and spec.architecture.family != "custom":
        raise MemplanError(f"{spec.name} has no config to apply architecture flags to")
    return ModelSpec(name="custom", architecture=custom.build(overrides), source="architecture flags")
