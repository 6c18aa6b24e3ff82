"""What a model is: its architecture, and the exact parameter count by component.

The counting follows the module structure of the reference implementations (Hugging Face transformers'
modeling_<family>.py, which is what the published counts were produced from): one weight matrix per linear
layer, optional biases, one or two norm vectors per norm.  `tests/test_models.py` checks every built-in
profile against its published exact count.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memplan.errors import MemplanError


class Architecture(BaseModel):
    """A decoder (or BERT-style encoder) transformer, described by the numbers its config file holds."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field("custom", description="model_type in Hugging Face terms: llama, gpt2, falcon, ...")
    n_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int | None = Field(None, gt=0, description="key/value heads (GQA/MQA); default n_heads")
    head_dim: int | None = Field(None, gt=0, description="default hidden_size // n_heads")
    ffn_hidden_size: int = Field(gt=0, description="MLP intermediate size (per expert for MoE)")
    mlp: Literal["gelu", "swiglu"] = Field("swiglu", description="gelu: 2 matrices; swiglu: gated, 3 matrices")
    activation: str = Field("silu", description="the MLP nonlinearity's name, e.g. silu, gelu_new, gelu")
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    norm_bias: bool = Field(False, description="LayerNorm with a bias vector")
    norms_per_layer: int = Field(2, ge=0, description="2 for pre-norm blocks; 1 for Falcon-7B's shared norm")
    final_norm: bool = True
    vocab_size: int = Field(gt=0)
    max_positions: int = Field(2048, gt=0)
    position: Literal["learned", "rotary", "alibi", "none"] = "rotary"
    tied_embeddings: bool = False
    fused_qkv: bool = Field(False, description="one QKV projection module (GPT-2 c_attn, Falcon, GPT-NeoX)")
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    lm_head: bool = Field(True, description="False for encoder backbones (BertModel) that end in a pooler")
    lm_head_bias: bool = False
    token_type_vocab: int = Field(0, ge=0, description="BERT segment embeddings")
    embedding_norm: bool = Field(False, description="a norm right after the embeddings (BERT)")
    pooler: bool = Field(False, description="BERT pooler: a hidden x hidden dense layer with bias")
    causal: bool = True
    parallel_residual: bool = Field(False, description="attention and MLP read the same input (GPT-J/NeoX/Falcon)")
    n_experts: int = Field(0, ge=0, description="MoE experts per layer; 0 = dense")
    experts_per_token: int = Field(0, ge=0, description="MoE top-k")
    router_bias: bool = False
    sliding_window: int | None = Field(None, gt=0)
    rotary_fraction: float = Field(1.0, gt=0, le=1, description="share of head_dim rotated (GPT-NeoX rotary_pct)")
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    hidden_dropout: float = Field(0.0, ge=0, lt=1, description="residual / MLP-output dropout")
    embedding_dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "Architecture":
        kv = self.kv_heads
        if self.n_heads % kv:
            raise MemplanError(
                f"attention heads ({self.n_heads}) must be divisible by KV heads ({kv}); pick --kv-heads that divides it"
            )
        if self.head_dim is None and self.hidden_size % self.n_heads:
            raise MemplanError(
                f"hidden size {self.hidden_size} is not divisible by {self.n_heads} heads; set --head-dim explicitly"
            )
        if self.n_experts and not 0 < self.experts_per_token <= self.n_experts:
            raise MemplanError(
                f"experts_per_token must be in 1..{self.n_experts} for a MoE model, got {self.experts_per_token}"
            )
        return self

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.n_heads

    @property
    def q_size(self) -> int:
        return self.n_heads * self.head_size

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_size

    @property
    def norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm == "layernorm" and self.norm_bias else 1)

    def linears(self) -> list["Linear"]:
        """Every linear layer of one transformer layer, in module order (the unit of TP, LoRA and Adafactor)."""
        h, q, kv, f = self.hidden_size, self.q_size, self.kv_size, self.ffn_hidden_size
        out: list[Linear] = []
        if self.fused_qkv:
            out.append(Linear(role="qkv", in_features=h, out_features=q + 2 * kv, bias=self.qkv_bias, split="column"))
        else:
            out += [
                Linear(role="q", in_features=h, out_features=q, bias=self.qkv_bias, split="column"),
                Linear(role="k", in_features=h, out_features=kv, bias=self.qkv_bias, split="column"),
                Linear(role="v", in_features=h, out_features=kv, bias=self.qkv_bias, split="column"),
            ]
        out.append(Linear(role="o", in_features=q, out_features=h, bias=self.attn_out_bias, split="row"))
        experts = max(self.n_experts, 1)
        if self.mlp == "swiglu":
            out += [
                Linear(role="gate", in_features=h, out_features=f, bias=self.mlp_bias, split="column", count=experts),
                Linear(role="up", in_features=h, out_features=f, bias=self.mlp_bias, split="column", count=experts),
            ]
        else:
            out.append(Linear(role="up", in_features=h, out_features=f, bias=self.mlp_bias, split="column", count=experts))
        out.append(Linear(role="down", in_features=f, out_features=h, bias=self.mlp_bias, split="row", count=experts))
        if self.n_experts:
            out.append(Linear(role="router", in_features=h, out_features=self.n_experts, bias=self.router_bias,
                              split="replicated"))
        return out


class Linear(BaseModel):
    """One linear layer (per transformer layer). `count` > 1 for MoE experts. `split`: how Megatron TP shards it."""

    role: Literal["qkv", "q", "k", "v", "o", "gate", "up", "down", "router"]
    in_features: int
    out_features: int
    bias: bool = False
    split: Literal["column", "row", "replicated"] = "column"
    count: int = 1

    @property
    def params(self) -> int:
        return self.count * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    def params_per_tp_rank(self, tp: int) -> int:
        """Megatron: column-parallel splits weight and bias; row-parallel splits the weight, replicates the bias."""
        w = self.in_features * self.out_features
        b = self.out_features if self.bias else 0
        if self.split == "column":
            return self.count * (math.ceil(w / tp) + math.ceil(b / tp))
        if self.split == "row":
            return self.count * (math.ceil(w / tp) + b)
        return self.count * (w + b)

    @property
    def is_attention(self) -> bool:
        return self.role in ("qkv", "q", "k", "v", "o")


class ParameterCount(BaseModel):
    """Exact parameter count by component. `active` differs from `total` for MoE (top-k experts per token)."""

    embeddings: int = 0
    attention: int = 0
    mlp: int = 0
    norms: int = 0
    lm_head: int = 0
    other: int = Field(0, description="e.g. the BERT pooler")
    total: int
    active: int
    per_layer: int = 0
    exact: bool = Field(True, description="False when only a total was given (no architecture)")


def count_parameters(a: Architecture) -> ParameterCount:
    """Exact count, component by component (see the module docstring for the convention)."""
    h, L = a.hidden_size, a.n_layers
    embeddings = a.vocab_size * h
    if a.position == "learned":
        embeddings += a.max_positions * h
    embeddings += a.token_type_vocab * h
    if a.embedding_norm:
        embeddings += a.norm_params
    linears = a.linears()
    attention = L * sum(x.params for x in linears if x.is_attention)
    mlp_layer = sum(x.params for x in linears if not x.is_attention)
    mlp = L * mlp_layer
    norms = L * a.norms_per_layer * a.norm_params + (a.norm_params if a.final_norm else 0)
    lm_head = 0
    if a.lm_head and not a.tied_embeddings:
        lm_head = a.vocab_size * h + (a.vocab_size if a.lm_head_bias else 0)
    other = (h * h + h) if a.pooler else 0
    total = embeddings + attention + mlp + norms + lm_head + other
    active = total
    if a.n_experts:
        expert_params = sum(x.params // x.count for x in linears if not x.is_attention and x.role != "router")
        active = total - L * expert_params * (a.n_experts - a.experts_per_token)
    per_layer = (attention + mlp) // L + a.norms_per_layer * a.norm_params
    return ParameterCount(embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, lm_head=lm_head,
                          other=other, total=total, active=active, per_layer=per_layer)


class ModelSpec(BaseModel):
    """A model: an architecture (exact counts) or just a parameter count (model states only)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = Field(default_factory=list, description="other names users type (hub ids, short forms)")
    source: str | None = Field(None, description="where the architecture and the published count come from")
    published_parameters: int | None = Field(None, description="the count the source publishes, checked in tests")
    architecture: Architecture | None = None
    total_parameters: int | None = Field(None, gt=0, description="used when there is no architecture")

    @model_validator(mode="after")
    def _need_something(self) -> "ModelSpec":
        if self.architecture is None and self.total_parameters is None:
            raise MemplanError(f"model {self.name!r} needs an architecture or a parameter count")
        return self

    @property
    def parameters(self) -> ParameterCount:
        if self.architecture is not None:
            return count_parameters(self.architecture)
        n = self.total_parameters or 0
        return ParameterCount(total=n, active=n, exact=False)

    @property
    def arch(self) -> Architecture:
        """The architecture, or a clear error for commands that need one."""
        if self.architecture is None:
            raise MemplanError(
                f"{self.name!r} is a bare parameter count; this needs an architecture: use a profile name "
                "(see `memplan models`), a config.json path, or --layers/--hidden/--heads/--ffn/--vocab"
            )
        return self.architecture
