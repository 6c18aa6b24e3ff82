"""Implementation profiles: what one training implementation keeps in memory, as data.

profiles/implementations/<name>.json lists, per region of the model (one transformer layer, the embeddings,
the head and loss), the tensors the implementation keeps for backward and the transient buffers at the moments
the timeline looks at.  Each tensor is a row: its element count as a product of named sizes, its bytes per
element under each precision mode, when it exists, and how tensor/sequence parallelism shards it.  A new
implementation (another library, another kernel set) is a new file; nothing here changes.

Rows of the per-layer regions (`layer`, `checkpoint`, `layer_forward`, `layer_backward`) are evaluated once per
layer group of the pipeline stage, with that layer kind's features and sizes (memory/activations.py
`layer_features`, `layer_sizes`); the model-level regions use the model's features and the first layer's sizes.

Element-count expressions are sums of products of integers and these names (no other syntax):
  b micro-batch, s sequence (per context-parallel rank), h hidden, q = heads*head_dim, kv = kv_heads*head_dim
  (keys), vw = kv_heads*v_head_dim (values), a heads, g KV heads, d head_dim, dv v_head_dim, f FFN width (dense,
  or one routed expert), fk = f*top-k (routed tokens), fs shared-expert width, E routed experts, K top-k, w keys
  a query attends (the window, else s), lq / lkv / dr MLA's q and kv ranks and rotary dim, V vocabulary,
  P max positions (position tables),
  qkv_linears (3, 1 fused), mlp_in_linears (2 gated, 1 fused or not gated), norms (block norms per layer),
  norm_inputs (distinct norm inputs per layer), act_saves (extra tensors the nonlinearity saves, from the
  profile's `activation_saves`), n_linear_params / n_head_params (parameters of the layer's linears / of the LM
  head: autocast weight copies), L layers on the stage.
Features usable in `when`: see memory/activations.py layer_features / model_features.
Precision modes: fp32 (fp32 weights, no autocast), half (16-bit weights: bf16, fp16, mixed with fp32 master),
autocast (fp32 weights under torch.autocast).

A profile with `family` set was traced from that family's modeling code (`memplan trace`, measure/trace.py):
`--implementation hf` (the default) uses profiles/implementations/hf-<family>.json when it exists.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memplan.errors import MemplanError

Mode = Literal["fp32", "half", "autocast"]
Kernels = Literal["cuda", "cpu"]
_TERM = re.compile(r"^(\d+|[A-Za-z_][A-Za-z_0-9]*)$")


class Tensor(BaseModel):
    """One tensor (or a group of equal tensors: `count`) kept by the implementation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what the tensors are, in words (traced rows: measure/trace/names.py)")
    detail: str = Field("", description="traced rows: the aten ops that made and saved them, and where "
                                        "(`module: op, saved by op @ module`), for --json and --verbose")
    elems: str = Field(description="element count: a sum of products of sizes, e.g. 'b*s*h' or '2*b*a*s*s'")
    bytes: dict[str, float] = Field(description="bytes per element by precision mode; a missing mode = absent")
    cpu_bytes: dict[str, float] | None = Field(None, description="bytes per element with CPU kernels, if different")
    when: dict[str, bool | str | list[str]] = Field(default_factory=dict,
                                                    description="feature -> required value (or any of a list)")
    tp: Literal["split", "sp", "none"] = Field(
        "sp", description="split: divided by TP size; sp: divided only with sequence parallelism; none: never")
    core: bool = Field(False, description="part of the attention core that selective recompute drops "
                                          "(Korthikanti et al. 2022 sec. 4.2)")
    moment: str = Field("", description="transient lists: rows of one moment add up; the list's value is the "
                                        "largest moment (e.g. the MLP's or the attention's backward)")
    holds: list[str] = Field(default_factory=list, description=(
        "what the row stores, by the names memory/lora.py gives the inputs a frozen base may not save: attn_in "
        "(QKV input), attn_ctx (o_proj input), mlp_in, mlp_act (down_proj input), norm_y (RMSNorm's normalised x), "
        "first_norm_input / first_norm_stats (the first norm's saved input and statistics), lm_head_in, "
        "final_norm_y; LoRA shows what it does not save as reductions of these rows"))
    note: str = ""


class OptimizerTemporaries(BaseModel):
    """Transient buffers of one optimizer step, in units of the optimizer-state dtype.

    `group`: multiples of all parameters of a param group (foreach: one list op's outputs over the group);
    `current` / `previous`: multiples of the tensor being updated and of the one updated just before it (the
    for-loop's intermediates; the previous tensor's survive while the next are computed, because the Python
    variable holding them is rebound only after the new value exists)."""

    group: float = 0
    current: float = 0
    previous: float = 0


class ImplementationProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = []
    description: str
    family: str | None = Field(None, description="the model_type this profile was traced from (hf-<family>)")
    traced_with: dict[str, str] = Field(default_factory=dict, description=(
        "the library releases the rows were traced under (transformers, torch); `estimate` warns when the installed "
        "transformers differs"))
    frozen_modes: list[str] = Field(default_factory=list, description=(
        "precision modes traced with every parameter frozen too (rows `when: {frozen: true}`): LoRA's base in "
        "these modes is read from the trace, not adjusted from the full step's rows"))
    sources: list[str] = []
    layer: list[Tensor] = Field(description="kept for backward, per transformer layer")
    checkpoint: list[Tensor] = Field(description="kept per layer under full recompute (the layer's input)")
    embedding: list[Tensor] = Field(description="kept for backward by the embeddings (first pipeline stage)")
    head: list[Tensor] = Field(description="kept for backward by the final norm, LM head and loss (last stage)")
    forward_only: list[Tensor] = Field(default_factory=list,
                                       description="alive from the forward until the loss is computed, not saved "
                                                   "(model outputs, caches): counted at the forward/loss peaks")
    loss_forward: list[Tensor] = Field(default_factory=list, description="extra transients at the loss's peak")
    loss_backward: list[Tensor] = Field(default_factory=list,
                                        description="extra transients while the loss/head backward runs")
    layer_forward: list[Tensor] = Field(default_factory=list,
                                        description="transients inside one layer's forward (on top of saved)")
    layer_backward: list[Tensor] = Field(default_factory=list,
                                         description="transients inside one layer's backward (gradients of "
                                                     "activations in flight)")
    inputs: list[Tensor] = Field(default_factory=list, description="the batch itself (token ids, targets)")
    family_flags: dict[str, list[str]] = Field(default_factory=dict,
                                               description="feature name -> model families where it holds "
                                                           "(family-specific code paths, usable in `when`)")
    activation_saves: dict[str, int] = Field(default_factory=dict,
                                             description="MLP nonlinearity -> extra b*s*f tensors it saves")
    optimizer_impl: str | None = Field(None, description="forces an optimizer implementation (e.g. fused)")
    optimizer_temporaries: dict[str, dict[str, OptimizerTemporaries]] = Field(
        default_factory=dict, description="optimizer -> implementation (for-loop/foreach/fused) -> temporaries")
    master_grad_copy_bytes: float = Field(0, description="bytes/param of fp32 gradients materialized for the "
                                                         "master weights during the step (recipes with master)")
    gradient_bucket_bytes: int = Field(0, description="DDP/ZeRO gradient bucket (bytes) alive during backward "
                                                      "when dp > 1")


@lru_cache(maxsize=None)
def compile_expr(expr: str) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """'2*b*s*h + b*a*s*s' -> ((2, ('b','s','h')), (1, ('b','a','s','s'))); a MemplanError on other syntax."""
    terms = []
    for raw in expr.replace(" ", "").split("+"):
        coef, names = 1, []
        for factor in raw.split("*"):
            if not _TERM.match(factor):
                raise MemplanError(f"implementation profile: bad size expression {expr!r} (use sums of products "
                                   "of integers and size names)")
            if factor.isdigit():
                coef *= int(factor)
            else:
                names.append(factor)
        terms.append((coef, tuple(names)))
    return tuple(terms)


def evaluate(expr: str, sizes: dict[str, int]) -> int:
    total = 0
    for coef, names in compile_expr(expr):
        v = coef
        for n in names:
            try:
                v *= sizes[n]
            except KeyError:
                raise MemplanError(f"implementation profile: unknown size {n!r} in {expr!r}") from None
        total += v
    return total


def get_implementation(name: str) -> ImplementationProfile:
    from memplan.catalog import _lookup

    return _lookup("implementations", ImplementationProfile, name, "implementation")


def traced_implementation(family: str) -> ImplementationProfile | None:
    """The traced profile of a model family (hf-<family>), if one ships (only that file is validated)."""
    from memplan.catalog import _find

    return _find("implementations", ImplementationProfile, f"hf-{family}")
