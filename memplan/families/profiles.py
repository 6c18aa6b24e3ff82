"""A built-in model profile (profiles/models/*.json) -> ModelSpec.

A profile names a model and holds where its numbers come from; its architecture is the family's config.json
(`hf_config`), read by the family's reader, so a profile means exactly what the same config file would.  A
profile with only `total_parameters` is a bare count."""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError
from memplan.families.registry import DEFAULT_FLAG_KEYS, apply_overrides, find_family, read_config
from memplan.spec.model import ModelSpec


def model_from_profile(data: dict[str, Any], path: str) -> ModelSpec:
    if not isinstance(data, dict):
        raise MemplanError(f"bad profile {path}: not a JSON object")
    fields = {k: v for k, v in data.items() if not k.startswith("_")}
    config = fields.get("hf_config")
    if config is not None and not module_tree_profile(fields):
        fields["architecture"] = read_config(config, path)
    return ModelSpec.model_validate(fields)


def module_tree_profile(fields: dict[str, Any]) -> bool:
    """A profile of a model_type no family file covers: its `architecture` is what transformers' module tree gave
    (scripts/module_tree_profiles.py; tests/test_new_families.py reads the config again and compares), kept so that
    the estimate needs no torch."""
    from memplan.families.registry import find_family

    config = fields.get("hf_config")
    return isinstance(config, dict) and fields.get("architecture") is not None and \
        find_family(str(config.get("model_type"))) is None


def with_overrides(spec: ModelSpec, overrides: dict[str, Any]) -> ModelSpec:
    """`spec` with memplan's architecture flags applied: through its config for a family model, or as a model
    built from flags (custom family) for a bare count."""
    from memplan.families import custom

    overrides = {k: v for k, v in overrides.items() if v is not None}
    labels = overrides.pop("num_labels", None)
    if labels is not None:  # --num-labels: the score head of a reward/value model or classifier (families/heads.py)
        from memplan.families.heads import as_sequence_classifier

        return as_sequence_classifier(with_overrides(spec, overrides), labels)
    if not overrides:
        return spec
    if spec.hf_config is not None and find_family(str(spec.hf_config.get("model_type"))) is None:
        # read from transformers' module tree: the flags go into its config, which is read again (needs torch)
        from memplan.measure.trace.probe import with_layers

        config = dict(spec.hf_config)
        if "layers" in overrides:
            config = with_layers(config, overrides.pop("layers"))
        for flag, value in overrides.items():
            keys = DEFAULT_FLAG_KEYS.get(flag)
            if not keys:
                raise MemplanError(f"--{flag.replace('_', '-')} has no meaning for {spec.name}")
            config[next((k for k in keys if k in config), keys[0])] = value
        return ModelSpec(name=f"{spec.name}*", source=spec.source, architecture=_module_tree(config, spec.name),
                         hf_config=config)
    if spec.hf_config is not None:
        config = apply_overrides(spec.hf_config, overrides, spec.name)
        return ModelSpec(name=f"{spec.name}*", source=spec.source, architecture=read_config(config, spec.name),
                         hf_config=config)
    if spec.architecture is not None and spec.architecture.family != "custom":
        raise MemplanError(f"{spec.name} has no config to apply architecture flags to")
    return ModelSpec(name="custom", architecture=custom.build(overrides), source="architecture flags")


def _module_tree(config: dict[str, Any], name: str):
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        raise MemplanError(f"{name} is read from transformers' module tree (no family file): architecture flags on it "
                           "need torch and transformers (`pip install 'memplan[trace]'`)")
    from memplan.measure.trace.module_tree import read_module_tree

    return read_module_tree(config, name)
