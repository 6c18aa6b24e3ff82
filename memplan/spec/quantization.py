"""How a served checkpoint stores its weights: the `quantization_config` of its config.json, or vLLM's
`--quantization` flag on a 16-bit checkpoint.

Data only (the bytes per format are memplan/memory/quantized.py).  The fields are the ones that decide a format's
layout, as vLLM reads them (vllm/model_executor/layers/quantization/*.py @0.11 and @0.33; /work/research/vllm/vllm.md
section 5):

- fp8 (`Fp8Config.from_config`): `weight_block_size` [bn, bk] (block scales, DeepSeek-V3 / Qwen3-*-FP8) or none
  (one per-tensor scale); `activation_scheme` static adds an input scale; `ignored_layers`, else
  `modules_to_not_convert`, stay 16-bit.  `--quantization fp8` on a 16-bit checkpoint quantises at load
  (per-tensor, dynamic activations).
- compressed-tensors (`CompressedTensorsConfig.from_config`): the first config group's `weights` (num_bits, type
  float|int, strategy tensor|channel|group|block, group_size, block_structure, symmetric, actorder) and whether
  `input_activations` are static; `ignore` (usually ["lm_head"]).
- awq (`AWQConfig.from_config`): `bits`/`w_bit` 4, `group_size`/`q_group_size`, `zero_point`,
  `modules_to_not_convert`.
- gptq (`GPTQConfig.from_config`): `bits`, `group_size` (-1: one group per input row), `desc_act`, `sym`, `lm_head`.
- mxfp4 (`Mxfp4Config`): MoE experts only; `modules_to_not_convert` is ignored by vLLM 0.11 (`from_config` returns
  `cls()`): gpt-oss attention stays bf16 because its model code builds it without a quant config.
- bitsandbytes: `load_in_4bit` (`bnb_4bit_quant_type` nf4|fp4, `bnb_4bit_use_double_quant`) or `load_in_8bit`;
  `llm_int8_skip_modules`.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from memplan.errors import MemplanError, did_you_mean

WeightKind = Literal["fp8", "int8", "int4", "nf4", "fp4", "mxfp4"]
Strategy = Literal["tensor", "channel", "group", "block"]

# vLLM's --quantization names memplan models, and the config quant_method each stands for (the Marlin variants
# are kernels of the same checkpoint format: ModelConfig._verify_quantization accepts them for it)
FLAG_METHODS: dict[str, str] = {"fp8": "fp8", "compressed-tensors": "compressed-tensors", "awq": "awq",
                                "awq_marlin": "awq", "gptq": "gptq", "gptq_marlin": "gptq", "mxfp4": "mxfp4",
                                "bitsandbytes": "bitsandbytes"}
# methods vLLM applies to a 16-bit checkpoint at load time ("online"); the others need a quantised checkpoint
ONLINE_METHODS = ("fp8", "bitsandbytes")


class WeightQuantization(BaseModel):
    """One checkpoint format: what each quantised linear stores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(description="the config's quant_method (vLLM's name)")
    weight: WeightKind
    strategy: Strategy = "tensor"
    group_size: int | None = Field(None, gt=0, description="inputs per scale (group strategy; None = whole row)")
    block: tuple[PositiveInt, PositiveInt] | None = Field(None, description="(output rows, input columns) per scale "
                                                                           "(block)")
    zero_point: bool = Field(False, description="asymmetric: a packed zero point per group")
    desc_act: bool = Field(False, description="GPTQ act-order: the g_idx permutation is kept")
    static_input_scale: bool = Field(False, description="an fp32 input scale per module (static activations)")
    double_quant: bool = Field(False, description="bitsandbytes: absmax quantised to uint8 with fp32 second level")
    ignore: tuple[str, ...] = Field((), description="module names (or re: patterns) that stay 16-bit")
    lm_head: bool = Field(False, description="the LM head is quantised too (GPTQ `lm_head`: true)")
    experts_only: bool = Field(False, description="only the MoE experts are quantised (MXFP4)")
    online: bool = Field(False, description="quantised by vLLM at load from a 16-bit checkpoint")
    forced_kernel: str | None = Field(None, description="--quantization named a kernel explicitly (e.g. gptq: "
                                                        "vLLM then does not switch to gptq_marlin)")
    source: str = "config.json quantization_config"

    def describe(self) -> str:
        """'fp8 block 128x128 (config.json quantization_config)', 'awq int4 group 128 +zeros (...)'."""
        what = {"tensor": "per-tensor", "channel": "per-channel", "group": f"group {self.group_size}",
                "block": f"block {self.block[0]}x{self.block[1]}" if self.block else "block"}[self.strategy]
        head = self.weight if self.method == self.weight else f"{self.method} {self.weight}"
        extra = " +zeros" if self.zero_point else ""
        extra += " act-order" if self.desc_act else ""
        extra += " double-quant" if self.double_quant else ""
        extra += ", experts only" if self.experts_only else ""
        return f"{head} {what}{extra} ({'online at load' if self.online else self.source})"


MAX_SIZE = 1 << 24  # bits, group and block sizes: a whole number this large is no quantisation scheme


def _whole(value: Any, key: str, allow: tuple[int, ...] = ()) -> int:
    """A positive whole number from a config value (a whole float such as 128.0 counts), `allow`ed exceptions
    (GPTQ's group_size -1); anything else is one MemplanError naming quantization_config.<key>."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,9}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not (0 < value <= MAX_SIZE or value in allow):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        also = "".join(f" or {a}" for a in allow)
        raise MemplanError(f"quantization_config.{key} must be a whole number from 1 to {MAX_SIZE:,}{also}, "
                           f"got {shown}")
    return value


def _bits(q: dict[str, Any], *keys: str, default: int | None = None, allow: tuple[int, ...] = ()) -> int:
    for k in keys:
        if q.get(k) is not None:
            return _whole(q[k], k, allow)
    if default is None:
        raise MemplanError(f"quantization_config needs {keys[0]!r}")
    return default


def _block(value: Any, key: str) -> tuple[int, int] | None:
    """[rows, columns] (or '128x128' in older compressed-tensors) -> two positive whole numbers."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, str):
        value = value.lower().split("x")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MemplanError(f"quantization_config.{key} must be [rows, columns] (two whole numbers), got "
                           f"{_short(value)}")
    return _whole(value[0], key), _whole(value[1], key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise MemplanError(f"quantization_config: a list of module names was expected, got {_short(value)}")
    return tuple(str(v) for v in value)


def _from_compressed_tensors(q: dict[str, Any]) -> WeightQuantization:
    groups = q.get("config_groups") or {}
    if not isinstance(groups, dict):
        raise MemplanError(f"quantization_config.config_groups must be an object, got {_short(groups)}")
    group = next((g for g in groups.values() if isinstance(g, dict) and isinstance(g.get("weights"), dict)), None)
    if group is None:
        raise MemplanError("compressed-tensors quantization_config has no config group with weights")
    w, act = group["weights"], group.get("input_activations") or {}
    if not isinstance(act, dict):
        act = {"dynamic": False}
    bits, kind = _bits(w, "num_bits", default=8), w.get("type", "int")
    strategy = w.get("strategy", "tensor")
    if strategy not in ("tensor", "channel", "group", "block"):
        raise MemplanError(f"compressed-tensors weights strategy {_short(strategy)} is not modelled (tensor, "
                           "channel, group, block)")
    block = _block(w.get("block_structure"), "block_structure")  # "128x128" in older compressed-tensors
    group_size = _bits(w, "group_size", default=0, allow=(-1,)) or None
    weight = {(8, "float"): "fp8", (8, "int"): "int8", (4, "int"): "int4"}.get((bits, kind))
    if weight is None:
        raise MemplanError(f"compressed-tensors weights of {bits}-bit {kind} are not modelled (fp8, int8 and int4 "
                           "are)")
    return WeightQuantization(method="compressed-tensors", weight=weight, strategy=strategy,
                              group_size=group_size if group_size and group_size > 0 else None, block=block,
                              zero_point=not w.get("symmetric", True),
                              desc_act=w.get("actorder") in ("group", "weight", True),
                              static_input_scale=bool(act) and not act.get("dynamic", False),
                              ignore=_names(q.get("ignore")))


def from_hf_config(q: dict[str, Any]) -> WeightQuantization:
    """A config.json `quantization_config` -> its format (one line naming what is not modelled or out of range)."""
    if not isinstance(q, dict):
        raise MemplanError("quantization_config must be an object")
    try:
        return _from_hf_config(q)
    except ValidationError as exc:  # belt and braces: the fields are checked above, one line if one slips through
        from memplan.field_errors import field_error_line

        raise MemplanError(field_error_line(exc, "quantization_config")) from None


def _from_hf_config(q: dict[str, Any]) -> WeightQuantization:
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        block = _block(q.get("weight_block_size"), "weight_block_size")
        return WeightQuantization(method="fp8", weight="fp8", strategy="block" if block else "tensor",
                                  block=block,
                                  static_input_scale=q.get("activation_scheme", "dynamic") == "static",
                                  ignore=_names(q.get("ignored_layers") or q.get("modules_to_not_convert")))
    if method == "compressed-tensors":
        return _from_compressed_tensors(q)
    if method == "awq":
        bits = _bits(q, "bits", "w_bit", default=4)
        if bits != 4:
            raise MemplanError(f"AWQ with {bits} bits is not served by vLLM (AWQConfig supports 4-bit only)")
        return WeightQuantization(method="awq", weight="int4", strategy="group",
                                  group_size=_bits(q, "group_size", "q_group_size", default=128),
                                  zero_point=bool(q.get("zero_point", True)),
                                  ignore=_names(q.get("modules_to_not_convert")))
    if method == "gptq":
        bits = _bits(q, "bits", default=4)
        if bits not in (4, 8):
            raise MemplanError(f"GPTQ with {bits} bits: memplan models 4- and 8-bit GPTQ")
        g = _bits(q, "group_size", default=128, allow=(-1,))
        return WeightQuantization(method="gptq", weight="int4" if bits == 4 else "int8", strategy="group",
                                  group_size=None if g == -1 else g, zero_point=not q.get("sym", True),
                                  desc_act=bool(q.get("desc_act", False)), lm_head=bool(q.get("lm_head", False)))
    if method == "mxfp4":
        return WeightQuantization(method="mxfp4", weight="mxfp4", strategy="group", group_size=32,
                                  experts_only=True)
    if method == "bitsandbytes":
        if q.get("load_in_8bit"):
            return WeightQuantization(method="bitsandbytes", weight="int8", strategy="channel",
                                      ignore=_names(q.get("llm_int8_skip_modules")))
        kind = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
        return WeightQuantization(method="bitsandbytes", weight="nf4" if kind == "nf4" else "fp4", strategy="group",
                                  group_size=64, double_quant=bool(q.get("bnb_4bit_use_double_quant", False)),
                                  ignore=_names(q.get("llm_int8_skip_modules")))
    known = ", ".join(sorted(set(FLAG_METHODS.values())))
    raise MemplanError(f"quantization_config quant_method {method or '(none)'!r} is not modelled; memplan models "
                       f"{known}")


def from_flag(flag: str) -> WeightQuantization:
    """--quantization METHOD on a checkpoint without a quantization_config.  fp8 and bitsandbytes are quantised by
    vLLM at load (Fp8LinearMethod: per-tensor scale, dynamic activations; BitsAndBytesModelLoader: NF4 with
    compress_statistics=True); the others describe a checkpoint quantised that way at its usual defaults (AWQ /
    GPTQ 4-bit, group 128), as a what-if."""
    method = FLAG_METHODS.get(flag)
    if method is None:
        raise MemplanError(did_you_mean(flag, list(FLAG_METHODS), "--quantization"))
    src = f"--quantization {flag}"
    if method == "fp8":
        return WeightQuantization(method="fp8", weight="fp8", online=True, source=src)
    if method == "bitsandbytes":
        return WeightQuantization(method="bitsandbytes", weight="nf4", strategy="group", group_size=64,
                                  double_quant=True, online=True, source=src)
    if method == "awq":
        return WeightQuantization(method="awq", weight="int4", strategy="group", group_size=128, zero_point=True,
                                  source=src + " (what-if: an AWQ 4-bit g128 checkpoint)")
    if method == "gptq":
        return WeightQuantization(method="gptq", weight="int4", strategy="group", group_size=128,
                                  forced_kernel=flag, source=src + " (what-if: a GPTQ 4-bit g128 checkpoint)")
    if method == "mxfp4":
        return WeightQuantization(method="mxfp4", weight="mxfp4", strategy="group", group_size=32,
                                  experts_only=True, source=src + " (what-if: MXFP4 experts)")
    raise MemplanError(f"--quantization {flag} needs a checkpoint whose config.json has its quantization_config "
                       "(the scheme lives there)")


def resolve(hf_config: dict[str, Any] | None, flag: str | None) -> WeightQuantization | None:
    """The served format: the config's quantization_config, checked against --quantization the way vLLM's
    ModelConfig._verify_quantization does (a contradiction is refused), else the flag, else None (16-bit)."""
    q = None
    if hf_config:
        q = hf_config.get("quantization_config")
        if q is None and isinstance(hf_config.get("text_config"), dict):
            q = hf_config["text_config"].get("quantization_config")
    if flag in (None, "", "none"):
        return from_hf_config(q) if q is not None else None
    if flag not in FLAG_METHODS:
        raise MemplanError(did_you_mean(flag, list(FLAG_METHODS), "--quantization"))
    if q is None:
        return from_flag(flag)
    fmt = from_hf_config(q)
    if FLAG_METHODS[flag] != fmt.method:
        raise MemplanError(f"--quantization {flag} contradicts the model's config, which is quantised with "
                           f"{fmt.method} (vLLM refuses: the quantization method in the model config does not match "
                           f"the `quantization` argument); drop --quantization or pass --quantization {fmt.method}")
    if flag in ("gptq", "awq") and flag == fmt.method:
        # vLLM: "you specified quantization=gptq explicitly, so forcing gptq" (no switch to the Marlin kernel)
        fmt = fmt.model_copy(update={"forced_kernel": flag})
    return fmt
