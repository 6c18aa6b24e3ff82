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
from memplan.spec.setup import Assumed, LoraSpec, TrainingSetup
from memplan.spec.training import Workload

# architecture flags: build a model (with a bare count) or override a family config's sizes
ARCH_FLAGS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "max_positions", "mlp", "norm",
              "tied", "experts", "top_k", "num_labels")
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
    """An unknown name is an InputError naming it, with a did-you-mean (the same words for the CLI and the API)."""
    from memplan.errors import InputError

    for key in kw:
        if key not in allowed:
            text = did_you_mean(key, allowed, what)
            raise InputError(key, "is not known", keyword_text=text, flag_text=text)


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


def _default_attention(family: str) -> str:
    """The attention the family's transformers class runs by default (families/registry.py Family)."""
    from memplan.families.registry import find_family

    fam = find_family(family)
    return fam.default_attention if fam is not None else "sdpa"


def training_setup(model: str | ModelSpec, *, warnings: list[str] | None = None, **kw: Any) -> TrainingSetup:
    """TrainingSetup from a model (name, count, config path or ModelSpec) and CLI-style keyword arguments.
    `warnings`: what a setup file's reader said (kept on the setup; the answers carry them into their JSON)."""
    from memplan.spec.training import get_optimizer, get_recipe

    check_keys(kw, TRAINING_KEYS[1:])
    spec = resolve_model(model, _pick(kw, ARCH_FLAGS))
    recipe = get_recipe(kw.get("precision") or default_precision(), weights=kw.get("weights_dtype"),
                        gradients=kw.get("grads_dtype"), master_weights=kw.get("master_dtype"),
                        optimizer_states=kw.get("states_dtype"))
    try:
        layout = Layout(**_pick(kw, LAYOUT_FLAGS))
        work = _pick(kw, WORKLOAD_FLAGS)
        if "attention" not in work and spec.architecture is not None:
            work["attention"] = _default_attention(spec.architecture.family)
        workload = Workload(**work)
        setup = TrainingSetup(model=spec, recipe=recipe, optimizer=get_optimizer(kw.get("optimizer")
                                                                                  or default_optimizer()),
                              layout=layout, workload=workload)
    except ValidationError as exc:
        from memplan.field_errors import input_error

        raise input_error(exc) from None
    if kw.get("lora_rank") is not None or kw.get("quantize_base") or kw.get("lora_targets"):
        from memplan.memory.lora import lora_spec

        extra = _pick(kw, ("lora_alpha", "lora_dropout"))
        lora: LoraSpec = lora_spec(setup, kw.get("lora_rank"), kw.get("lora_targets"), kw.get("quantize_base"),
                                   **{k.removeprefix("lora_"): v for k, v in extra.items()})
        setup = setup.model_copy(update={"lora": lora})
    assumed = assumed_inputs(setup, kw)
    if kw.get("seq") is None:  # the JSON states the sequence planned, never null
        setup = setup.model_copy(update={"workload": setup.workload.model_copy(update={"seq": setup.seq})})
    setup._assumed = assumed
    setup._warnings = list(warnings or [])
    setup._given = {"model": model if isinstance(model, str) else spec.name,
                    **{k: v for k, v in kw.items() if v is not None}}
    return setup


def assumed_inputs(setup: TrainingSetup, kw: dict[str, Any]) -> list[Assumed]:
    """The inputs that drive a training answer and were not given, with the value used and why (the table's
    `assumed:` line and the JSON's `assumed`)."""
    from memplan.spec.training import DEFAULT_TRAINING_SEQ

    out: list[Assumed] = []
    if kw.get("seq") is None:
        a = setup.model.architecture
        why = (f"the model's max positions (under the {DEFAULT_TRAINING_SEQ:,}-token training default)"
               if a is not None and a.max_positions < DEFAULT_TRAINING_SEQ else
               f"training default; the model allows {a.max_positions:,}" if a is not None and a.max_positions
               > DEFAULT_TRAINING_SEQ else "training default")
        out.append(Assumed(input="seq", value=setup.seq, why=why))
    if kw.get("micro_batch") is None:
        out.append(Assumed(input="micro_batch", value=setup.layout.micro_batch, why="default"))
    if kw.get("precision") is None:
        out.append(Assumed(input="precision", value=setup.recipe.name, why="default mixed precision"))
    if kw.get("optimizer") is None:
        out.append(Assumed(input="optimizer", value=setup.optimizer.name, why="default"))
    if kw.get("engine") is None:
        out.append(Assumed(input="engine", value=setup.layout.engine, why="plain PyTorch accounting"))
    if kw.get("attention") is None:
        fam = setup.model.architecture.family if setup.model.architecture is not None else None
        why = f"what transformers runs for {fam}" if fam else "default"
        out.append(Assumed(input="attention", value=setup.workload.attention, why=why))
    return out


def resolve_gpu(name: str | None):
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise MemplanError("--gpu needs a GPU profile name (see `memplan gpus`)")
    from memplan.catalog import get_gpu
    from memplan.errors import InputError

    try:
        return get_gpu(name)
    except InputError:
        raise
    except MemplanError as exc:  # unknown or ambiguous: the same text, typed with the field (gpu= / --gpu)
        raise InputError("gpu", str(exc), keyword_text=f"gpu: {exc}", flag_text=str(exc)) from None


SERVING_KEYS = ("batch", "context", "kv_dtype", "prefill_chunk", "weights_dtype", "attention", "prompt", "output",
                "kv_cache_dtype", "quantization", "gpu_memory_utilization", "max_model_len", "max_num_seqs",
                "max_num_batched_tokens", "block_size", "enforce_eager", "vllm_version", "vllm_entrypoint",
                "enable_expert_parallel", "int4_group")
SERVING_ENGINES = ("vllm", "hf", "sglang")
# vLLM's --kv-cache-dtype names (vllm/config/cache.py CacheDType) -> memplan dtypes; "auto" = the model's dtype
KV_CACHE_DTYPES = {"auto": None, "bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "fp8": "fp8",
                   "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def _kv_dtype(kw: dict[str, Any]):
    from memplan.spec.training import DType

    given = [k for k in ("kv_cache_dtype", "kv_dtype") if kw.get(k) is not None]
    if len(given) == 2 and kw["kv_cache_dtype"] != kw["kv_dtype"]:
        raise MemplanError("--kv-cache-dtype and --kv-dtype name the same setting: give one")
    if not given:
        return None
    text = str(kw[given[0]]).lower()
    if text not in KV_CACHE_DTYPES:
        if text.startswith("fp8_ds_mla") or text.startswith("nvfp4") or text.endswith("per_token_head"):
            raise MemplanError(f"--kv-cache-dtype {text}: vLLM's packed/scaled KV formats are not modelled; use auto, "
                               "bfloat16, float16 or fp8")
        raise MemplanError(did_you_mean(text, KV_CACHE_DTYPES, "--kv-cache-dtype"))
    value = KV_CACHE_DTYPES[text]
    return None if value is None else DType.parse(value)


def _serving_layout(kw: dict[str, Any], moe: bool) -> Layout:
    """vLLM's parallel flags: --tp/--pp (and --gpus, default tp x pp: one replica); --enable-expert-parallel
    shards the experts over tp x data-parallel ranks instead of splitting each expert over TP (vLLM's EP size =
    TP x DP, experts whole)."""
    fields = _pick(kw, ("gpus", "gpus_per_node", "tp", "pp", "ep", "etp"))
    fields.setdefault("gpus", fields.get("tp", 1) * fields.get("pp", 1))
    if kw.get("enable_expert_parallel") and moe:  # a dense model has no experts: vLLM ignores the flag
        if "ep" in fields or "etp" in fields:
            raise MemplanError("--enable-expert-parallel sets the expert layout itself (EP = TP x DP); drop --ep/--etp")
        fields["ep"] = fields["gpus"] // fields.get("pp", 1)
        fields["etp"] = 1
    return Layout(**fields)


def serving_setup(model: str | ModelSpec, **kw: Any):
    """InferenceSetup from a model and CLI-style keyword arguments (engine, batch, context or prompt + output,
    kv_cache_dtype, tp, pp, vLLM's settings, ...)."""
    from memplan.spec.inference import InferenceSetup
    from memplan.spec.training import DType

    check_keys(kw, (*ARCH_FLAGS, *RECIPE_FLAGS, *LAYOUT_FLAGS, *WORKLOAD_FLAGS, *SERVING_KEYS))
    if kw.get("zero") or kw.get("offload_optimizer") not in (None, "none") \
            or kw.get("offload_params") not in (None, "none"):
        raise MemplanError("--zero and --offload-* are training options; serving shards weights with --tp/--pp")
    engine = kw.get("engine")
    if engine is not None and engine not in SERVING_ENGINES:
        raise MemplanError(f"--engine {engine} is a training convention; serving engines are "
                           + " or ".join(SERVING_ENGINES) + " (default vllm)")
    spec = resolve_model(model, _pick(kw, ARCH_FLAGS))
    a = spec.arch
    if not a.causal or not a.head.lm_head:
        raise MemplanError(f"{spec.name} is an encoder ({a.family}): --mode inference estimates autoregressive "
                           "decoding with a KV cache; use a decoder model")
    weights = kw.get("weights_dtype")
    if weights is None and kw.get("precision"):
        precision = kw["precision"]
        weights = "fp16" if "fp16" in precision else "fp32" if precision == "fp32" else "bf16"
    context = kw.get("context") or kw.get("seq")
    try:
        layout = _serving_layout(kw, a.moe)
        fields = _pick(kw, ("batch", "prefill_chunk", "attention", "prompt", "output", "quantization",
                            "gpu_memory_utilization", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                            "block_size", "enforce_eager", "vllm_version", "vllm_entrypoint", "int4_group"))
        if engine is not None:
            fields["engine"] = engine
        fields.setdefault("attention", _default_attention(a.family))  # transformers' own, as for training
        from memplan.memory.layout import check_layout

        check_layout(a, layout)  # heads, KV heads and experts must split over --tp/--ep, as vLLM requires
        return InferenceSetup(model=spec, weights_dtype=DType.parse(weights) if weights else None,
                              kv_dtype=_kv_dtype(kw), context=context, layout=layout, **fields)
    except ValidationError as exc:
        from memplan.field_errors import input_error

        raise input_error(exc) from None


# ---- setup files: --setup FILE / --save-setup FILE -----------------------------------------------------------
MEMPLAN_SETUP_KEYS = ("model", "recipe", "optimizer", "layout", "workload", "lora")


def setup_to_kwargs(setup: TrainingSetup) -> dict[str, Any]:
    """A TrainingSetup back as keyword arguments, so command-line flags can override any of them."""
    from memplan.spec.training import RECIPES

    r = setup.recipe
    base = r.name.split("[")[0]
    out: dict[str, Any] = {"model": setup.model, "precision": base, "optimizer": setup.optimizer.name,
                           **setup.layout.model_dump(), **setup.workload.model_dump()}
    preset = RECIPES.get(base)
    if preset is not None:
        for key, flag in (("weights", "weights_dtype"), ("gradients", "grads_dtype"),
                          ("optimizer_states", "states_dtype")):
            if getattr(r, key) != getattr(preset, key) or (key == "gradients" and r.gradients_given):
                out[flag] = getattr(r, key).value
        if r.master_weights != preset.master_weights:
            out["master_dtype"] = r.master_weights.value if r.master_weights else "none"
    if setup.lora is not None:
        lo = setup.lora
        out.update(lora_rank=lo.rank, lora_targets=",".join(lo.targets) if lo.targets else None,
                   quantize_base=lo.quantize_base, lora_alpha=lo.alpha, lora_dropout=lo.dropout or None)
    return {k: v for k, v in out.items() if v is not None}


class SetupFile:
    """What a --setup file gave: keyword arguments, and which fields were read and ignored (for the output).

    `table`: (field, value, the file's key it came from) per field read, for `summary`."""

    def __init__(self, path: str, fmt: str, kwargs: dict[str, Any], read: list[str], ignored: list[str],
                 table: list[tuple[str, str, str]] | None = None, warnings: list[str] | None = None):
        self.path, self.format, self.kwargs, self.read, self.ignored = path, fmt, kwargs, read, ignored
        self.table = table if table is not None else [(r, "", r) for r in read]
        self.warnings: list[str] = list(warnings or [])

    def summary(self, verbose: bool = False) -> str:
        """What was read, as a short table (field, value, from where); the ignored keys counted, or listed in
        full with `verbose`."""
        from memplan.report.tables import setup_reading_table

        return setup_reading_table(self.path, self.format, self.table, self.ignored, verbose)


SCRIPT_SUFFIXES = (".sh", ".bash", ".slurm")  # launch scripts: only the Megatron reader reads them


def _read_structured(path: str) -> Any:
    """JSON, YAML or TOML by extension (memplan's own setup files), read and parsed exactly as the engine readers
    read theirs (memplan/setupfiles/_source.py: the file bounded in size, then nesting, string length, whole
    numbers and non-finite numbers bounded, every parser error one MemplanError naming the file)."""
    from memplan.setupfiles import _source

    lower = path.lower()
    syntax = "yaml" if lower.endswith((".yaml", ".yml")) else "toml" if lower.endswith(".toml") else "json"
    text = _source.read_text_bounded(path, what="--setup")
    return _source.parse_any(path, text, syntax)


def load_setup_file(path: str) -> SetupFile:
    """A --setup FILE: memplan's own TrainingSetup (as --save-setup writes it), or an engine's config file
    (DeepSpeed, accelerate, torchtitan, axolotl, HF TrainingArguments, Megatron-LM: memplan/setupfiles/)."""
    if not isinstance(path, str) or not path.strip():
        raise MemplanError("--setup needs a file name")
    data = None
    if not path.lower().endswith(SCRIPT_SUFFIXES):
        try:
            data = _read_structured(path)
        except MemplanError:
            data = None  # not JSON/YAML/TOML of ours: maybe an engine's format (a Megatron shell script, ...)
    if isinstance(data, dict) and SETUP_FORMAT_KEY in data:
        return read_setup_data(data, path)
    if isinstance(data, dict) and {"model", "layout"} <= set(data) and isinstance(data.get("layout"), dict):
        try:
            setup = TrainingSetup.model_validate(data)
        except ValidationError as exc:
            raise MemplanError(one_line(exc, f"--setup file {path}")) from None
        kwargs = setup_to_kwargs(setup)
        keys = sorted(k for k in data if k in MEMPLAN_SETUP_KEYS)
        return SetupFile(path, "memplan", kwargs, keys, sorted(k for k in data if k not in MEMPLAN_SETUP_KEYS),
                         _memplan_table(setup))
    from memplan.setupfiles import read_setup_file

    reading = read_setup_file(path)
    kwargs = reading.setup.setup_kwargs()
    read = [f"{r.key} -> {r.field}" + (" (default)" if r.default else "") for r in reading.read if not r.consulted]
    ignored = [f"{i.key} ({i.reason})" for i in reading.ignored]
    table = [(r.field, _short_value(kwargs.get(r.field, r.value)), r.key + (" (default)" if r.default else ""))
             for r in reading.read if not r.consulted]
    return SetupFile(path, reading.format, kwargs, read, ignored, table, warnings=reading.warnings)


def _memplan_table(setup: TrainingSetup) -> list[tuple[str, str, str]]:
    """A memplan setup file as the reading table shows it: the model, recipe and optimizer, then the layout and
    workload fields that differ from their defaults (the file holds every field)."""
    rows = [("model", setup.model.name, "model.name"), ("precision", setup.recipe.name, "recipe.name"),
            ("optimizer", setup.optimizer.name, "optimizer.name")]
    for section in ("layout", "workload"):
        value = getattr(setup, section)
        default = type(value)()
        rows += [(k, _short_value(v), f"{section}.{k}") for k, v in value.model_dump().items()
                 if getattr(default, k) != v]
    if setup.lora is not None:
        rows += [(f"lora_{k}", _short_value(v), f"lora.{k}") for k, v in setup.lora.model_dump().items()
                 if v is not None]
    return rows


def _short_value(value: Any, limit: int = 40) -> str:
    """A value as the reading table shows it: a model by its name, a dict by its keys, cut to `limit`."""
    name = getattr(value, "name", None)
    if isinstance(name, str):
        text = name
    elif isinstance(value, dict):
        text = "{" + ", ".join(map(str, value)) + "}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


SETUP_FORMAT_KEY = "memplan_setup"  # the version of memplan's own setup file (what the user set, as keywords)


def setup_file_data(setup: TrainingSetup) -> dict[str, Any]:
    """What --save-setup writes: the inputs the user set (model + keywords, as flags name them), not the whole
    architecture; --setup reads it back through the same builder, so defaults stay defaults.  A model given as a
    config path is written as an absolute path; one given as an object (the API) is written whole."""
    import os

    given = setup.given
    if not given:  # a setup built without memplan.setups (by hand): the whole object, the old format
        return setup.model_dump(mode="json", exclude_none=True)
    model = given.get("model")
    if isinstance(model, str) and os.path.exists(os.path.expanduser(model)):
        model = os.path.abspath(os.path.expanduser(model))
    elif not isinstance(model, str):
        model = setup.model.model_dump(mode="json", exclude_none=True)
    return {SETUP_FORMAT_KEY: 1, "model": model, **{k: v for k, v in given.items() if k != "model"}}


def read_setup_data(data: dict[str, Any], path: str) -> SetupFile:
    """memplan's own setup file as --save-setup writes it: {"memplan_setup": 1, "model": ..., keywords...}."""
    kwargs = {k: v for k, v in data.items() if k != SETUP_FORMAT_KEY}
    unknown = [k for k in kwargs if k not in TRAINING_KEYS]
    if unknown:
        raise MemplanError(f"--setup file {path}: " + did_you_mean(unknown[0], TRAINING_KEYS, "setting"))
    if isinstance(kwargs.get("model"), dict):
        try:
            kwargs["model"] = ModelSpec.model_validate(kwargs["model"])
        except ValidationError as exc:
            raise MemplanError(one_line(exc, f"--setup file {path}: model")) from None
    table = [(k, _short_value(v), k) for k, v in kwargs.items()]
    return SetupFile(path, "memplan", kwargs, sorted(kwargs), [], table)


def save_setup_file(path: str, setup: TrainingSetup, force: bool = False) -> str:
    """Write the setup used as memplan's own setup file (JSON, or YAML by extension): --setup reads it back."""
    from memplan.outfiles import write_new_file

    data = setup_file_data(setup)
    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise MemplanError("--save-setup as YAML needs PyYAML: `pip install pyyaml` (or save as .json)") from None
        text = yaml.safe_dump(data, sort_keys=False)
    elif path.lower().endswith(".toml"):
        raise MemplanError("--save-setup writes JSON or YAML (.json, .yaml); --setup reads TOML too")
    else:
        import json

        text = json.dumps(data, indent=2) + "\n"
    return str(write_new_file(path, text, force=force, what="--save-setup"))
