"""How the model is trained: precision recipe, optimizer, parallel layout, workload.

All of it is data.  The arithmetic that turns these into bytes lives in memplan.memory; this module only
names things, holds presets, and rejects combinations no engine supports.
"""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memplan.errors import MemplanError, did_you_mean

MAX_SEQ = 1 << 24  # 16M tokens: beyond any context a training run uses; a bound keeps searches finite
# The training sequence when none is given: 4,096 tokens, or the model's max positions when smaller.  A model's
# context window (131,072 for Llama 3.1 and Qwen2.5) is what it can attend to after long-context extension, not
# what a step trains on: Llama 2 pre-trained at 4,096 (Touvron et al. 2023, sec. 2.2), Llama 3's main pre-training
# ran at 8,192 before a separate long-context stage (Dubey et al. 2024, sec. 3.4), and fine-tuning recipes default
# shorter (TRL 0.20+ SFTConfig.max_length 1024, axolotl sequence_len 512).  Pass --seq for anything else.
DEFAULT_TRAINING_SEQ = 4096


class DType(str, Enum):
    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"
    int8 = "int8"
    int4 = "int4"
    nf4 = "nf4"

    @property
    def bytes(self) -> float:
        return _DTYPE_BYTES[self]

    @classmethod
    def parse(cls, text: str | "DType") -> "DType":
        if isinstance(text, DType):
            return text
        key = _DTYPE_ALIASES.get(str(text).lower().replace("-", "").replace("_", ""), str(text).lower())
        try:
            return cls(key)
        except ValueError:
            raise MemplanError(did_you_mean(str(text), [d.value for d in cls], "dtype")) from None


_DTYPE_BYTES = {DType.fp32: 4, DType.tf32: 4, DType.bf16: 2, DType.fp16: 2, DType.fp8: 1, DType.int8: 1,
                DType.int4: 0.5, DType.nf4: 0.5}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                  "float8": "fp8", "fp8e4m3": "fp8", "e4m3": "fp8"}


class Recipe(BaseModel):
    """The dtype of each model-state component, and how activations are computed.

    `master_weights` is the separate fp32 copy the optimizer updates (None: the optimizer updates `weights`
    directly).  `autocast` means torch.autocast over the stored `weights`: matmuls run in `compute` dtype on
    per-step half-precision copies of the weights, the rest in the stored dtype.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    weights: DType
    gradients: DType
    master_weights: DType | None = None
    optimizer_states: DType = DType.fp32
    compute: DType = Field(description="dtype of matmul inputs/outputs and most saved activations")
    autocast: bool = False
    gradients_given: bool = Field(False, description="the gradients' dtype was asked for (--grads-dtype), not the "
                                  "preset's: Megatron then keeps its main_grad buffer in it (--grad-reduce-in-bf16)")
    description: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(name="fp32", weights=DType.fp32, gradients=DType.fp32, compute=DType.fp32,
               description="everything fp32 (4+4+K bytes/param)"),
        Recipe(name="amp-bf16", weights=DType.fp32, gradients=DType.fp32, compute=DType.bf16, autocast=True,
               description="torch.autocast(bf16) over fp32 weights: fp32 weights, grads, states"),
        Recipe(name="amp-fp16", weights=DType.fp32, gradients=DType.fp32, compute=DType.fp16, autocast=True,
               description="torch.autocast(fp16) + GradScaler over fp32 weights"),
        Recipe(name="bf16-mixed", weights=DType.bf16, gradients=DType.bf16, master_weights=DType.fp32,
               compute=DType.bf16, description="bf16 weights+grads, fp32 master+states (ZeRO paper: 2+2+12)"),
        Recipe(name="fp16-mixed", weights=DType.fp16, gradients=DType.fp16, master_weights=DType.fp32,
               compute=DType.fp16, description="fp16 weights+grads, fp32 master+states (ZeRO paper: 2+2+12)"),
        Recipe(name="fsdp-bf16", weights=DType.fp32, gradients=DType.fp32, compute=DType.bf16,
               description="FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32), as torchtitan runs it: "
                           "fp32 sharded params (the optimizer's), fp32 grad shards and states, bf16 all-gathered "
                           "params and bf16 activations (no autocast); needs --engine fsdp --zero 2/3"),
        Recipe(name="bf16", weights=DType.bf16, gradients=DType.bf16, optimizer_states=DType.bf16,
               compute=DType.bf16, description="pure bf16: weights, grads and optimizer states"),
        Recipe(name="fp8-mixed", weights=DType.bf16, gradients=DType.bf16, master_weights=DType.fp32,
               compute=DType.fp8,
               description="Transformer Engine style: bf16 weights, fp8 matmuls, fp32 master+states; memory is "
                           "accounted as bf16-mixed (TE's fp8 weight/activation copies are not modelled); "
                           "fp8 changes the time (fp8 peak)"),
    ]
}


def get_recipe(name: str, **overrides: str | None) -> Recipe:
    """A preset with per-component overrides, e.g. get_recipe('bf16-mixed', gradients='fp32') (Megatron's 18 B)."""
    if name not in RECIPES:
        raise MemplanError(did_you_mean(name, RECIPES, "precision recipe"))
    recipe = RECIPES[name]
    changes = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "master_weights" and str(value).lower() in ("none", "no", "off"):
            changes[key] = None
        else:
            changes[key] = DType.parse(value)
    if gradients := overrides.get("gradients"):
        changes["gradients_given"] = True
        changes.setdefault("gradients", DType.parse(gradients))
    if changes:
        suffix = ",".join(f"{k}={v.value if v else 'none'}" for k, v in changes.items() if k != "gradients_given")
        recipe = recipe.model_copy(update={**changes, "name": f"{name}[{suffix}]"})
    return recipe


class OptimizerSpec(BaseModel):
    """An optimizer's persistent state per parameter.

    `states`: full-size state tensors per parameter (Adam: exp_avg, exp_avg_sq). `state_bytes`: bytes per state
    element when the optimizer fixes it (8-bit Adam: 1) instead of following the recipe's optimizer_states dtype.
    `block_size`/`block_scale_bytes`: block-wise quantisation scales per state. `factored`: Adafactor's second
    moment is a row and a column vector per matrix (Shazeer & Stern 2018, section 3).
    """

    name: str
    states: int
    state_bytes: float | None = None
    block_size: int | None = None
    block_scale_bytes: int = 0
    min_quantized_numel: int = Field(0, description="tensors smaller than this keep fp32 states (bitsandbytes)")
    factored: bool = False
    source: str = ""


OPTIMIZERS: dict[str, OptimizerSpec] = {
    o.name: o
    for o in [
        OptimizerSpec(name="adamw", states=2, source="Loshchilov & Hutter 2019; torch.optim.AdamW: exp_avg, exp_avg_sq"),
        OptimizerSpec(name="adam", states=2, source="Kingma & Ba 2015; torch.optim.Adam: exp_avg, exp_avg_sq"),
        OptimizerSpec(name="sgd", states=0, source="torch.optim.SGD(momentum=0): no state"),
        OptimizerSpec(name="sgd-momentum", states=1, source="torch.optim.SGD(momentum>0): momentum_buffer"),
        OptimizerSpec(name="lion", states=1, source="Chen et al. 2023 (Lion): one momentum buffer"),
        OptimizerSpec(name="adafactor", states=1, factored=True,
                      source="Shazeer & Stern 2018; transformers.Adafactor(beta1=None): factored row/col second moment "
                             "for matrices, full for vectors"),
        OptimizerSpec(name="adamw-8bit", states=2, state_bytes=1, block_size=256, block_scale_bytes=4,
                      min_quantized_numel=4096,
                      source="Dettmers et al. 2022 (8-bit optimizers); bitsandbytes 0.50 optim/optimizer.py "
                             "Optimizer2State.init_state: uint8 state1/state2, fp32 absmax1/absmax2 per 256-element "
                             "block; tensors under min_8bit_size=4096 elements keep fp32 states"),
    ]
}


def get_optimizer(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise MemplanError(did_you_mean(name, OPTIMIZERS, "optimizer"))
    return OPTIMIZERS[name]


Attention = Literal["eager", "sdpa", "flash"]
OptimizerImpl = Literal["for-loop", "foreach", "fused"]


class Workload(BaseModel):
    """What one step processes and with which kernels (the parallel layout, micro-batch and recompute are the
    Layout's: spec/layout.py)."""

    model_config = ConfigDict(extra="forbid")

    seq: int | None = Field(None, gt=0, le=MAX_SEQ, description="sequence length; default: 4096, or the model's "
                                                                "max positions when smaller")
    attention: Attention = Field("sdpa", description="attention kernel: eager, sdpa or flash; not given: sdpa, or "
                                                     "eager where the family's transformers class has no sdpa "
                                                     "(gemma2, gpt_oss)")
    implementation: str = Field("hf", description="activation accounting profile in profiles/implementations/")
    optimizer_impl: OptimizerImpl = Field("foreach", description="torch.optim implementation: for-loop, foreach "
                                          "(torch's default on CUDA) or fused; decides the optimizer step's "
                                          "temporaries")
