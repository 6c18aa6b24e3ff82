"""The one place a setup is built: from CLI flags, Python keyword arguments or a setup file, all the same way.

Every default is the pydantic field's (spec/layout.py Layout, spec/training.py Workload, spec/setup.py
TrainingSetup): the CLI declares its options with default None and this module leaves unset fields to pydantic, so
a default lives in exactly one place.  Names are the CLI's flags with '-' as '_' (`micro_batch`, `tp`, `zero`,
...); an unknown name is an error with a did-you-mean, never silently ignored.
"""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from memplan.errors import MemplanError, did_you_mean
from memplan.spec.layout import Layout
from memplan.spec.model import ModelSpec
from memplan.spec.setup import LoraSpec, TrainingSetup
from memplan.spec.training import Workload

# architecture flags: build a model (with a bare count) or override a family config's sizes
ARCH_FLAGS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "max_positions", "mlp", "norm",
              "tied", "experts", "top_k")
RECIPE_FLAGS = ("precision", "weights_dtype", "grads_dtype", "master_dtype", "states_dtype")
LAYOUT_FLAGS = tuple(Layout.model_fields)
WORKLOAD_FLAGS = tuple(Workload.model_fields)
LORA_FLAGS = ("lora_rank", "lora_targets", "quantize_base", "lora_alpha", "lora_dropout")
TRAINING_KEYS = ("model", *ARCH_FLAGS, *RECIPE_FLAGS, "optimizer", *LAYOUT_FLAGS, *WORKLOAD_FLAGS, *LORA_FLAGS)


def default_precision() -> str:
    return TrainingSetup.model_fields["recipe"].default_factory().name.split("[")[0]  # type: ignore[misc]


def default_optimizer() -> str:
    return TrainingSetup.model_fields["optimizer"].default_factory().name  # type: ignore[misc]


def one_line(exc: ValidationError, where: str = "") -> str:
    """A pydantic error as one plain line (memplan/field_errors.py): the field as a flag, what it must be."""
    from memplan.field_errors import field_error_line

    line = field_error_line(exc, where)
    return line.replace("field ", "--", 1).replace("_", "-") if not where and line.startswith("field ") else line


def check_keys(kw: dict[str, Any], allowed: tuple[str, ...], what: str = "keyword argument") -> None:
    for key in kw:
        if key not in allowed:
            raise MemplanError(did_you_mean(key, allowed, what))


def resolve_model(model: str | ModelSpec, overrides: dict[str, Any] | None = None) -> ModelSpec:
    from memplan.catalog import resolve_model as _resolve
    from memplan.families.profiles import with_overrides

    if isinstance(model, ModelSpec):
        return with_overrides(model, overrides or {})
    if not isinstance(model, str) or not model.strip():
        raise MemplanError("MODEL must be a non-empty name, parameter count or config path")
    return _resolve(model, overrides or {})


def _pick(kw: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: kw[k] for k in names if kw.get(k) is not None}


def training_setup(model: str | ModelSpec, **kw: Any) -> TrainingSetup:
    """TrainingSetup from a model (name, count, config path or ModelSpec) and CLI-style keyword arguments."""
    from memplan.spec.training import get_optimizer, get_recipe

    check_keys(kw, TRAINING_KEYS[1:])
    spec = resolve_model(model, _pick(kw, ARCH_FLAGS))
    recipe = get_recipe(kw.get("precision") or default_precision(), weights=kw.get("weights_dtype"),
                        gradients=kw.get("grads_dtype"), master_weights=kw.get("master_dtype"),
                        optimizer_states=kw.get("states_dtype"))
    try:
        layout = Layout(**_pick(kw, LAYOUT_FLAGS))
        workload = Workload(**_pick(kw, WORKLOAD_FLAGS))
        setup = TrainingSetup(model=spec, recipe=recipe, optimizer=get_optimizer(kw.get("optimizer")
                                                                                  or default_optimizer()),
                              layout=layout, workload=workload)
    except ValidationError as exc:
        raise MemplanError(one_line(exc)) from None
    if kw.get("lora_rank") is not None or kw.get("quantize_base") or kw.get("lora_targets"):
        from memplan.memory.lora import lora_spec

        extra = _pick(kw, ("lora_alpha", "lora_dropout"))
        lora: LoraSpec = lora_spec(setup, kw.get("lora_rank"), kw.get("lora_targets"), kw.get("quantize_base"),
                                   **{k.removeprefix("lora_"): v for k, v in extra.items()})
        setup = setup.model_copy(update={"lora": lora})
    return setup


def resolve_gpu(name: str | None):
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise MemplanError("--gpu needs a GPU profile name (see `memplan gpus`)")
    from memplan.catalog import get_gpu

    return get_gpu(name)


SERVING_KEYS = ("batch", "context", "kv_dtype", "prefill_chunk", "weights_dtype", "attention", "prompt")


def serving_setup(model: str | ModelSpec, **kw: Any):
    """InferenceSetup from a model and CLI-style keyword arguments (batch, context, kv_dtype, tp, pp, ...)."""
    from memplan.spec.inference import InferenceSetup
    from memplan.spec.training import DType

    check_keys(kw, (*ARCH_FLAGS, *RECIPE_FLAGS, *LAYOUT_FLAGS, *WORKLOAD_FLAGS, *SERVING_KEYS))
    if kw.get("zero") or kw.get("offload_optimizer") not in (None, "none") \
            or kw.get("offload_params") not in (None, "none"):
        raise MemplanError("--zero and --offload-* are training options; serving shards weights with --tp/--pp")
    spec = resolve_model(model, _pick(kw, ARCH_FLAGS))
    a = spec.arch
    if not a.causal or not a.head.lm_head:
        raise MemplanError(f"{spec.name} is an encoder ({a.family}): --mode inference estimates autoregressive "
                           "decoding with a KV cache; use a decoder model")
    weights = kw.get("weights_dtype")
    if weights is None:
        precision = kw.get("precision") or "bf16"
        weights = "fp16" if "fp16" in precision else "fp32" if precision == "fp32" else "bf16"
    context = kw.get("context") or kw.get("seq") or a.max_positions
    try:
        layout = Layout(**_pick(kw, ("gpus", "gpus_per_node", "tp", "pp", "ep")))
        fields = _pick(kw, ("batch", "prefill_chunk", "attention", "prompt"))
        return InferenceSetup(model=spec, weights_dtype=DType.parse(weights),
                              kv_dtype=DType.parse(kw.get("kv_dtype") or "bf16"), context=context, layout=layout,
                              **fields)
    except ValidationError as exc:
        raise MemplanError(one_line(exc)) from None
