"""What a model is: embeddings, an ordered list of layer groups (count x layer spec), and its head(s).

A layer spec holds its own attention block (MHA/GQA/MQA or MLA, window, soft-capping, sinks, QK-norm, rotary),
its FFN block (dense GeLU/gated, or MoE with routed and shared experts) and its norms (kind, count, place).  The
architectures of 2026 alternate layer kinds (Gemma 2/3 sliding and global, gpt-oss alternating windows, DeepSeek-V3
dense then MoE layers, Llama 4 chunked and NoPE-global layers); a flat "one layer times n_layers" description
cannot say that, so every consumer (states, layout, activations, timeline, inference, FLOPs, LoRA, measurement)
walks `Model.groups` instead.

Counting follows the module structure of the reference implementations (Hugging Face transformers'
modeling_<family>.py, from which the published counts come): one weight matrix per linear module, optional biases,
one or two vectors per norm.  The family readers in memplan/families/ build these specs from config.json;
tests/test_families.py checks every family against transformers on the meta device, parameter for parameter.

`Linear` is the one place that knows how tensor (and expert) parallelism shards a matrix (`Linear.shard`).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from memplan.errors import MemplanError

NormKind = Literal["rmsnorm", "layernorm"]
# pre: x + f(norm(x)) (GPT-2, Llama); post: norm(x + f(x)) (BERT); sublayer-post: x + norm(f(x)) (OLMo 2);
# sandwich: x + norm'(f(norm(x))) (Gemma 2/3: four norms); shared: one norm feeds parallel branches (Falcon-7B)
NormPlace = Literal["pre", "post", "sublayer-post", "sandwich", "shared"]
NORMS_PER_PLACE: dict[str, int] = {"pre": 2, "post": 2, "sublayer-post": 2, "sandwich": 4, "shared": 1}
WindowKind = Literal["global", "sliding", "chunked"]
Position = Literal["rotary", "learned", "alibi", "none"]
# per head: RMSNorm(head_dim) on q and k (Qwen3, Gemma 3); full: RMSNorm(heads*head_dim) (OLMo 2);
# l2: a weightless L2 norm (Llama 4)
QKNorm = Literal["none", "head", "full", "l2"]
Split = Literal["column", "row", "replicated"]
# Linear roles: attention q k v qkv o (MLA: q_a q_b kv_a kv_b); FFN gate up gate_up down (dense, shared or routed:
# see Linear.experts / Linear.shared), router, shared_gate; heads: pooler, mlm_dense
ATTENTION_ROLES = frozenset({"q", "k", "v", "qkv", "o", "q_a", "q_b", "kv_a", "kv_b"})
# a recurrent / convolutional token mixer's linears (Mixer.linears): its input projections and its output
MIXER_ROLES = frozenset({"mixer_in", "mixer_ba", "mixer_z", "mixer_b", "mixer_a", "mixer_out"})
TOKEN_MIXER_ROLES = ATTENTION_ROLES | MIXER_ROLES

_FROZEN = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------------
# derived pieces (plain dataclasses: built on the fly by the walks, never read from user input)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """One linear on one GPU: `count` matrices of rows x cols (out x in), each with `bias` bias elements."""

    rows: int
    cols: int
    count: int
    bias: int

    @property
    def params(self) -> int:
        return self.count * (self.rows * self.cols + self.bias)


@dataclass(frozen=True)
class Linear:
    """One weight matrix of a layer (out_features x in_features), as the family's code registers it.

    `name`: the module path inside the layer (`self_attn.q_proj`; PEFT matches target names on its last part).
    `experts` > 0: a bank of routed experts (one matrix per expert); each token uses `top_k` of them.
    `is_module`: False when the weights are a raw parameter of a bigger module (transformers 5 stores MoE experts as
    3-D parameters `experts.gate_up_proj`): no nn.Linear, so PEFT's all-linear and bitsandbytes skip it.
    `module`: the nn.Module that holds the parameter directly (DeepSpeed's largest_layer_params groups by it).
    `split`/`unit`: how Megatron tensor parallelism cuts it: column-parallel splits the output rows (in whole units,
    e.g. a head's head_dim rows), row-parallel the input columns; replicated keeps it whole.
    """

    name: str
    role: str
    in_features: int
    out_features: int
    bias: bool = False
    split: Split = "column"
    unit: int = 1
    experts: int = 0
    top_k: int = 0
    is_module: bool = True
    module: str = ""
    shared: bool = False
    transposed: bool = False

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The weight parameter's shape as the module stores it (FSDP shards its dim 0): nn.Linear (out, in);
        GPT-2's Conv1D (in, out); a fused expert bank (experts, out, in), or (experts, in, out) transposed."""
        mat = (self.in_features, self.out_features) if self.transposed else (self.out_features, self.in_features)
        return (self.experts, *mat) if self.routed and not self.is_module else mat

    @property
    def count(self) -> int:
        return max(self.experts, 1)

    @property
    def routed(self) -> bool:
        return self.experts > 0

    @property
    def params(self) -> int:
        return self.count * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    @property
    def is_attention(self) -> bool:
        """The layer's token mixer (attention, or a recurrent/convolutional mixer), as against its FFN."""
        return self.role in TOKEN_MIXER_ROLES

    @property
    def peft_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def holder(self) -> str:
        return self.module or self.name

    def shard(self, tp: int = 1, ep: int = 1, etp: int | None = None) -> Shard:
        """This linear on one GPU.  Megatron (Shoeybi et al. 2019, sec. 3): a column-parallel layer splits its
        weight and bias by output rows, a row-parallel layer splits its weight by input columns and replicates the
        bias.  Routed experts (Megatron-Core MoE, `--expert-model-parallel-size`): the bank is divided over `ep`
        ranks, each expert split by the expert-tensor-parallel size `etp` (default: tp, Megatron's default)."""
        if self.routed:
            count = -(-self.experts // ep)
            t = tp if etp is None else etp
        else:
            count, t = 1, tp
        rows, cols, bias = self.out_features, self.in_features, self.out_features if self.bias else 0
        if t > 1 and self.split == "column":
            units = -(-rows // self.unit)
            rows = -(-units // t) * self.unit  # a rank holds whole units (a KV head is replicated, never cut)
            bias = rows if self.bias else 0
        elif t > 1 and self.split == "row":
            cols = -(-cols // t)
        return Shard(rows=rows, cols=cols, count=count, bias=bias)


@dataclass(frozen=True)
class Vector:
    """A parameter that is no linear's: a norm's weight or bias, attention sinks, a token mixer's own (`mixer`: a
    depthwise convolution's weight and bias, Mamba's A_log, D and dt_bias; `size` counts all its elements)."""

    name: str
    size: int
    kind: Literal["norm", "sink", "mixer"] = "norm"
    split: Split = "replicated"

    def shard(self, tp: int = 1) -> int:
        return -(-self.size // tp) if self.split == "column" and tp > 1 else self.size


# ---------------------------------------------------------------------------------------------------------
# the blocks
# ---------------------------------------------------------------------------------------------------------
class Norm(BaseModel):
    model_config = _FROZEN

    kind: NormKind = "rmsnorm"
    bias: bool = Field(False, description="LayerNorm with a bias vector")

    @property
    def vectors_per_norm(self) -> int:
        return 2 if self.kind == "layernorm" and self.bias else 1


class Attention(BaseModel):
    """One layer's attention.  MHA: kv_heads == heads; GQA: fewer; MQA: one; MLA: kv_lora_rank is set."""

    model_config = _FROZEN

    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0, description="query/key head dimension (MLA: qk_nope_head_dim + qk_rope_head_dim)")
    v_head_dim: int | None = Field(None, gt=0, description="value head dimension when it differs (MLA)")
    # MLA (DeepSeek-V2 sec. 2.1, DeepSeek-V3): q through a low-rank q_lora_rank bottleneck (None: a full q_proj),
    # k and v from one joint latent of kv_lora_rank plus a shared rotary key of qk_rope_head_dim
    q_lora_rank: int | None = Field(None, gt=0)
    kv_lora_rank: int | None = Field(None, gt=0)
    qk_rope_head_dim: int = Field(0, ge=0)
    window: int | None = Field(None, gt=0, description="tokens a query sees (sliding) or the chunk size (chunked)")
    window_kind: WindowKind = "global"
    softcap: float | None = Field(None, gt=0, description="tanh soft-capping of the scores (Gemma 2)")
    sinks: bool = Field(False, description="learned per-head sink logits (gpt-oss)")
    qk_norm: QKNorm = "none"
    position: Position = "rotary"
    rotary_fraction: float = Field(1.0, gt=0, le=1, description="share of the head dim rotated")
    fused_qkv: bool = Field(False, description="one QKV module (GPT-2 c_attn, GPT-NeoX, Falcon, Phi-3)")
    qkv_bias: bool = False
    out_bias: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    causal: bool = True
    conv1d: bool = Field(False, description="weights stored (in, out) as GPT-2's Conv1D")
    output_gate: bool = Field(False, description="q_proj also yields a sigmoid gate on the output (Qwen3-Next)")

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # a switch at its default is left out, so that the dumps of every existing profile stay as they were
        out = handler(self)
        if isinstance(out, dict) and not self.output_gate:
            out.pop("output_gate", None)
        return out

    @model_validator(mode="after")
    def _check(self) -> "Attention":
        if self.heads % self.kv_heads:
            raise MemplanError(f"attention heads ({self.heads}) must be divisible by KV heads ({self.kv_heads})")
        if self.window_kind != "global" and self.window is None:
            raise MemplanError(f"a {self.window_kind} attention layer needs its window size")
        if self.kv_lora_rank is not None and not self.qk_rope_head_dim:
            raise MemplanError("MLA needs qk_rope_head_dim (the decoupled rotary key) with kv_lora_rank")
        if self.kv_lora_rank is None and (self.q_lora_rank is not None or self.qk_rope_head_dim):
            raise MemplanError("q_lora_rank / qk_rope_head_dim are MLA settings: set kv_lora_rank too")
        return self

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def kind(self) -> str:
        if self.mla:
            return "mla"
        if self.kv_heads == self.heads:
            return "mha"
        return "mqa" if self.kv_heads == 1 else "gqa"

    @property
    def value_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def q_size(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the keys (= the values, except MLA) over all KV heads."""
        return self.kv_heads * self.head_dim

    @property
    def out_in_features(self) -> int:
        return self.heads * self.value_dim

    def linears(self, hidden: int, names: dict[str, str]) -> list[Linear]:
        """Module names are full paths inside the layer: `names[role]`, else `names["attn"]` + Llama's name."""
        h, d = hidden, self.head_dim
        pre = names.get("attn", "self_attn.")

        def n(role: str, default: str) -> str:
            return names.get(role, pre + default)

        conv = self.conv1d
        if self.mla:
            out: list[Linear] = []
            nope = d - self.qk_rope_head_dim
            if self.q_lora_rank:
                # q_a_proj (h -> q_lora_rank) is replicated, q_b_proj column-parallel by heads (Megatron-Core
                # MLASelfAttention: linear_q_down_proj "duplicated", linear_q_up_proj column-parallel)
                out += [Linear(n("q_a", "q_a_proj"), "q_a", h, self.q_lora_rank, self.qkv_bias, "replicated"),
                        Linear(n("q_b", "q_b_proj"), "q_b", self.q_lora_rank, self.heads * d, False, "column", d)]
            else:
                out.append(Linear(n("q", "q_proj"), "q", h, self.heads * d, False, "column", d))
            # kv_a_proj_with_mqa: the latent plus the shared rotary key; kv_b_proj: per head nope-key and value
            out.append(Linear(n("kv_a", "kv_a_proj_with_mqa"), "kv_a", h, self.kv_lora_rank + self.qk_rope_head_dim,
                              self.qkv_bias, "replicated"))
            out.append(Linear(n("kv_b", "kv_b_proj"), "kv_b", self.kv_lora_rank,
                              self.heads * (nope + self.value_dim), False, "column", nope + self.value_dim))
            out.append(Linear(n("o", "o_proj"), "o", self.out_in_features, h, self.out_bias, "row"))
            return out
        q, kv = self.q_size, self.kv_size
        if self.fused_qkv:
            out = [Linear(n("qkv", "qkv_proj"), "qkv", h, q + 2 * kv, self.qkv_bias, "column", d, transposed=conv)]
        else:
            # a gated q_proj's rows are per head [query d, gate d] (Qwen3NextAttention views it (.., heads, 2d))
            out = [Linear(n("q", "q_proj"), "q", h, q + self.gate_size, self.qkv_bias, "column",
                          2 * d if self.output_gate else d),
                   Linear(n("k", "k_proj"), "k", h, kv, self.qkv_bias, "column", d),
                   Linear(n("v", "v_proj"), "v", h, self.kv_heads * self.value_dim, self.qkv_bias, "column",
                          self.value_dim)]
        out.append(Linear(n("o", "o_proj"), "o", self.out_in_features, h, self.out_bias, "row", transposed=conv))
        return out

    def vectors(self, norm: Norm, names: dict[str, str]) -> list[Vector]:
        out: list[Vector] = []
        k = norm.vectors_per_norm
        if self.mla:
            if self.q_lora_rank:
                out += [Vector(names.get("q_a_norm", "q_a_layernorm"), self.q_lora_rank)] * k
            out += [Vector(names.get("kv_a_norm", "kv_a_layernorm"), self.kv_lora_rank or 0)] * k
        if self.qk_norm == "head":
            out += [Vector(names.get("q_norm", "q_norm"), self.head_dim),
                    Vector(names.get("k_norm", "k_norm"), self.head_dim)] * k
        elif self.qk_norm == "full":
            out += [Vector(names.get("q_norm", "q_norm"), self.q_size, split="column"),
                    Vector(names.get("k_norm", "k_norm"), self.kv_size, split="column")] * k
        if self.sinks:
            out.append(Vector(names.get("sinks", "sinks"), self.heads, kind="sink", split="column"))
        return out

    @property
    def gate_size(self) -> int:
        """Width of the output gate q_proj yields besides the queries (Qwen3NextAttention: q_proj out
        heads * head_dim * 2, `query_states, gate = torch.chunk(..., 2, dim=-1)`, output * sigmoid(gate))."""
        return self.q_size if self.output_gate else 0

    def describe(self) -> str:
        if self.window_kind == "sliding":
            return f"sliding-window ({self.window})"
        if self.window_kind == "chunked":
            return f"chunked-local ({self.window})"
        return "global" + (" NoPE" if self.position == "none" else "")

    def kv_cache_elems_per_token(self) -> int:
        """Elements one token adds to this layer's KV cache as a paged engine stores it (both K and V; MLA: the
        compressed latent and the rotary key, DeepSeek-V2 sec. 2.1.2 "only c_t^KV and k_t^R need to be cached")."""
        if self.mla:
            return (self.kv_lora_rank or 0) + self.qk_rope_head_dim
        return self.kv_heads * (self.head_dim + self.value_dim)


MixerKind = Literal["gated_deltanet", "mamba2", "short_conv"]
# default module names inside the layer, per kind (transformers 5.24: Qwen3NextDecoderLayer.linear_attn,
# Mamba2Block.mixer, Lfm2DecoderLayer.conv); a model's module_names override them (role -> path)
MIXER_NAMES: dict[str, dict[str, str]] = {
    "gated_deltanet": {"mixer_in": "linear_attn.in_proj_qkvz", "mixer_ba": "linear_attn.in_proj_ba",
                       "mixer_out": "linear_attn.out_proj", "mixer_conv": "linear_attn.conv1d",
                       "mixer_norm": "linear_attn.norm", "mixer_dt_bias": "linear_attn.dt_bias",
                       "mixer_A_log": "linear_attn.A_log"},
    "mamba2": {"mixer_in": "mixer.in_proj", "mixer_out": "mixer.out_proj", "mixer_conv": "mixer.conv1d",
               "mixer_norm": "mixer.norm", "mixer_dt_bias": "mixer.dt_bias", "mixer_A_log": "mixer.A_log",
               "mixer_D": "mixer.D"},
    "short_conv": {"mixer_in": "conv.in_proj", "mixer_out": "conv.out_proj", "mixer_conv": "conv.conv"},
}


class Mixer(BaseModel):
    """A token mixer that is not softmax attention: a recurrent state or a short causal convolution, as data.

    - gated_deltanet (Gated DeltaNet, Yang et al. 2024; transformers 5.24 models/qwen3_next/modeling_qwen3_next.py
      Qwen3NextGatedDeltaNet): `heads` value heads of `value_dim`, `key_heads` key heads of `key_dim`;
      in_proj_qkvz h -> 2*key + 2*value (q, k, v, z), in_proj_ba h -> 2*heads (beta, decay), a depthwise causal
      conv over q,k,v (2*key + value channels, kernel `conv_kernel`, no bias), dt_bias and A_log (heads),
      a gated RMSNorm of value_dim, out_proj value -> h; key = key_heads*key_dim, value = heads*value_dim.
    - mamba2 (Mamba-2, Dao & Gu 2024; models/mamba2/modeling_mamba2.py Mamba2Mixer, and the same mixer in
      nemotron_h, bamba, falcon_h1, granitemoehybrid): `heads` heads of `value_dim` (head_dim), `key_heads` B/C groups
      (n_groups) of `key_dim` (state size); inner = heads*head_dim, conv_dim = inner + 2*groups*state; in_proj
      h -> inner + conv_dim + heads (gate z, x B C, dt), conv1d over conv_dim channels, dt_bias, A_log, D (heads),
      a gated RMSNorm of inner, out_proj inner -> h.
    - short_conv (LFM2, models/lfm2/modeling_lfm2.py Lfm2ShortConv): in_proj h -> 3h (B, C, x), a depthwise conv of
      h channels and kernel conv_L_cache, out_proj h -> h; `proj_bias` and `conv_bias` are both config.conv_bias.

    The recurrent state per sequence (`state_elems`) is what transformers' cache holds (cache_utils.py
    LinearAttentionLayer.lazy_initialization: conv_states (conv channels, kernel) in the conv input's dtype, and
    recurrent_states as zeros_like the mixer's final state): Gated DeltaNet's final state is fp32
    (torch_chunk_gated_delta_rule casts q/k/v to float32 and its state follows), Mamba-2's too (mamba2_chunk_scan
    computes on .float() inputs); the short convolution keeps no recurrent state.
    """

    model_config = _FROZEN

    kind: MixerKind
    heads: int = Field(0, ge=0, description="value heads (GDN linear_num_value_heads, Mamba-2 num_heads)")
    key_heads: int = Field(0, ge=0, description="GDN linear_num_key_heads; Mamba-2 n_groups (B/C groups)")
    key_dim: int = Field(0, ge=0, description="GDN linear_key_head_dim; Mamba-2 state_size")
    value_dim: int = Field(0, ge=0, description="GDN linear_value_head_dim; Mamba-2 head_dim")
    conv_kernel: int = Field(gt=0, description="the depthwise causal convolution's kernel (its cache keeps as many "
                                               "columns)")
    conv_bias: bool = False
    proj_bias: bool = Field(False, description="bias on the input and output projections")
    split_projections: bool = Field(False, description="Gated DeltaNet's input projections as four linears "
                                                        "in_proj_qkv, in_proj_z, in_proj_b, in_proj_a (Qwen3.5)")
    gated_norm: bool = Field(True, description="a gated RMSNorm before out_proj (Falcon-H1 without mamba_rms_norm "
                                               "has none)")
    chunk_size: int = Field(0, ge=0, description="tokens per chunk of the chunked scan transformers' reference "
                                                 "path runs (the sequence is padded to whole chunks); 0: none")

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)  # switches at their defaults left out (a shorter profile)
        if isinstance(out, dict):
            for key, default in (("gated_norm", True), ("chunk_size", 0), ("split_projections", False)):
                if out.get(key) == default:
                    out.pop(key)
        return out

    @model_validator(mode="after")
    def _check(self) -> "Mixer":
        if self.kind != "short_conv" and not (self.heads and self.key_heads and self.key_dim and self.value_dim):
            raise MemplanError(f"a {self.kind} mixer needs heads, key_heads, key_dim and value_dim")
        if self.kind == "gated_deltanet" and self.heads % self.key_heads:
            raise MemplanError(f"Gated DeltaNet value heads ({self.heads}) must be a multiple of its key heads "
                               f"({self.key_heads})")
        if self.kind == "mamba2" and self.heads % self.key_heads:
            raise MemplanError(f"Mamba-2 heads ({self.heads}) must be a multiple of its groups ({self.key_heads})")
        return self

    def inner(self, hidden: int) -> int:
        """Width of the mixer's output (out_proj's input)."""
        return hidden if self.kind == "short_conv" else self.heads * self.value_dim

    def conv_channels(self, hidden: int) -> int:
        if self.kind == "gated_deltanet":
            return 2 * self.key_heads * self.key_dim + self.heads * self.value_dim
        if self.kind == "mamba2":
            return self.heads * self.value_dim + 2 * self.key_heads * self.key_dim
        return hidden

    def linears(self, hidden: int, names: dict[str, str]) -> list[Linear]:
        """Input projection(s) column-parallel by heads, output projection row-parallel (as attention's; Megatron-
        Core's MambaMixer splits in_proj by column and out_proj by row)."""
        h, b, inner = hidden, self.proj_bias, self.inner(hidden)
        n = {**MIXER_NAMES[self.kind], **names}
        if self.kind == "gated_deltanet" and self.split_projections:
            # Qwen3_5GatedDeltaNet: in_proj_qkv (q, k, v), in_proj_z (the output gate), in_proj_b, in_proj_a
            key = self.key_heads * self.key_dim
            ins = [Linear(n["mixer_in"], "mixer_in", h, 2 * key + inner, b, "column"),
                   Linear(n["mixer_z"], "mixer_z", h, inner, b, "column"),
                   Linear(n["mixer_b"], "mixer_b", h, self.heads, b, "column"),
                   Linear(n["mixer_a"], "mixer_a", h, self.heads, b, "column")]
        elif self.kind == "gated_deltanet":
            key = self.key_heads * self.key_dim
            ins = [Linear(n["mixer_in"], "mixer_in", h, 2 * key + 2 * inner, b, "column"),
                   Linear(n["mixer_ba"], "mixer_ba", h, 2 * self.heads, b, "column")]
        elif self.kind == "mamba2":
            ins = [Linear(n["mixer_in"], "mixer_in", h, inner + self.conv_channels(h) + self.heads, b, "column")]
        else:
            ins = [Linear(n["mixer_in"], "mixer_in", h, 3 * h, b, "column")]
        return ins + [Linear(n["mixer_out"], "mixer_out", inner, h, b, "row")]

    def vectors(self, hidden: int, names: dict[str, str]) -> list[Vector]:
        """The conv weight (channels x kernel) and bias, per-head dt_bias / A_log / D, the gated norm's weight."""
        n = {**MIXER_NAMES[self.kind], **names}
        conv = self.conv_channels(hidden)
        out = [Vector(n["mixer_conv"] + ".weight", conv * self.conv_kernel, "mixer", "column")]
        if self.conv_bias:
            out.append(Vector(n["mixer_conv"] + ".bias", conv, "mixer", "column"))
        if self.kind == "short_conv":
            return out
        out += [Vector(n["mixer_dt_bias"], self.heads, "mixer", "column"),
                Vector(n["mixer_A_log"], self.heads, "mixer", "column")]
        if self.kind == "mamba2":
            out.append(Vector(n["mixer_D"], self.heads, "mixer", "column"))
        if not self.gated_norm:
            return out
        # GDN's Qwen3NextRMSNormGated(head_v_dim) is shared by the heads; Mamba-2's MambaRMSNormGated(inner)
        norm = self.value_dim if self.kind == "gated_deltanet" else self.inner(hidden)
        out.append(Vector(n["mixer_norm"] + ".weight", norm, "mixer", "replicated" if self.kind == "gated_deltanet"
                          else "column"))
        return out

    def state_elems(self, hidden: int) -> tuple[int, int]:
        """(conv state, recurrent state) elements per sequence: (conv channels x kernel, heads x key_dim x
        value_dim for GDN's (heads_v, dk, dv) and Mamba-2's (heads, head_dim, state); 0 for a short conv)."""
        conv = self.conv_channels(hidden) * self.conv_kernel
        if self.kind == "short_conv":
            return conv, 0
        return conv, self.heads * self.key_dim * self.value_dim

    @property
    def chunk(self) -> int:
        return self.chunk_size

    @property
    def recurrent_state_bytes_per_elem(self) -> int:
        """fp32 whatever the weights (see the class docstring); the conv state is in the weights' dtype (the conv
        input's).  tests/test_module_tree.py checks both against transformers' cache after prefill + a decode step."""
        return 4

    def describe(self) -> str:
        return {"gated_deltanet": f"Gated DeltaNet ({self.heads} heads)", "mamba2": f"Mamba-2 ({self.heads} heads)",
                "short_conv": f"short conv ({self.conv_kernel})"}[self.kind]


class FFN(BaseModel):
    """One layer's feed-forward block: dense, or MoE (routed experts, top-k, optional shared experts)."""

    model_config = _FROZEN

    intermediate_size: int = Field(gt=0, description="dense width, or the width of one routed expert")
    activation: str = Field("silu", description="the nonlinearity's name in transformers' ACT2FN")
    gated: bool = Field(True, description="GLU (SwiGLU/GeGLU): gate and up matrices")
    bias: bool = False
    fused_gate_up: bool = Field(False, description="one gate_up_proj module (Phi-3)")
    experts: int = Field(0, ge=0, description="routed experts; 0 = dense")
    top_k: int = Field(0, ge=0)
    shared_intermediate_size: int = Field(0, ge=0, description="width of the shared expert MLP (0: none)")
    shared_expert_gate: bool = Field(False, description="a sigmoid gate on the shared expert (Qwen2-MoE)")
    router_bias: bool = False
    experts_fused: bool = Field(True, description="experts stored as 3-D parameters (transformers 5)")
    experts_transposed: bool = Field(False, description="fused expert weights stored (experts, in, out) (gpt-oss)")
    router_is_module: bool = Field(False, description="the router is an nn.Linear (else a raw weight parameter, "
                                                      "as transformers 5's TopKRouter)")
    dispatch: Literal["topk", "all"] = Field(
        "topk", description="topk: each token visits its top-k experts; all: the implementation runs every token "
                            "through every expert, weighted by its router score (transformers' Llama4TextMoe): the "
                            "model's FLOPs are still top-k, the hardware's are not")
    dropout: float = Field(0.0, ge=0, lt=1)
    conv1d: bool = Field(False, description="weights stored (in, out) as GPT-2's Conv1D")

    @model_validator(mode="after")
    def _check(self) -> "FFN":
        if self.experts and not 0 < self.top_k <= self.experts:
            raise MemplanError(f"a MoE layer routes each token to top-k of its {self.experts} experts: top-k must be "
                               f"in 1..{self.experts}, got {self.top_k}")
        if not self.experts and (self.top_k or self.shared_intermediate_size):
            raise MemplanError("top-k and shared experts are MoE settings: set the number of routed experts")
        return self

    @property
    def moe(self) -> bool:
        return self.experts > 0

    def _mlp(self, hidden: int, width: int, names: dict[str, str], kind: str) -> list[Linear]:
        """One MLP: `kind` "" (dense), "expert" (the routed bank) or "shared" (the shared expert).  Names: the
        full path `names[kind + role]`, else the prefix `names[kind]` (default mlp. / mlp.experts. /
        mlp.shared_expert.) + Llama's module name."""
        defaults = {"": "mlp.", "expert": "mlp.experts.", "shared": "mlp.shared_expert."}
        pre = names.get(kind or "mlp", defaults[kind])
        routed = kind == "expert"
        fused_param = routed and self.experts_fused
        h, f, b = hidden, width, self.bias

        def lin(role: str, default: str, i: int, o: int, split: Split) -> Linear:
            return Linear(names.get(kind + role, pre + default), role, i, o, b, split, 1,
                          self.experts if routed else 0, self.top_k if routed else 0, not fused_param,
                          pre.rstrip(".") if fused_param else "", kind == "shared",
                          self.conv1d or (fused_param and self.experts_transposed))

        if self.gated:
            if self.fused_gate_up or fused_param:
                ups = [lin("gate_up", "gate_up_proj", h, 2 * f, "column")]
            else:
                ups = [lin("gate", "gate_proj", h, f, "column"), lin("up", "up_proj", h, f, "column")]
        else:
            ups = [lin("up", "up_proj", h, f, "column")]
        return ups + [lin("down", "down_proj", f, h, "row")]

    def linears(self, hidden: int, names: dict[str, str]) -> list[Linear]:
        if not self.moe:
            return self._mlp(hidden, self.intermediate_size, names, "")
        pre = names.get("mlp", "mlp.")
        out = [Linear(names.get("router", pre + "gate"), "router", hidden, self.experts, self.router_bias,
                      "replicated", is_module=self.router_is_module)]
        out += self._mlp(hidden, self.intermediate_size, names, "expert")
        if self.shared_intermediate_size:
            out += self._mlp(hidden, self.shared_intermediate_size, names, "shared")
            if self.shared_expert_gate:
                out.append(Linear(names.get("shared_gate", pre + "shared_expert_gate"), "shared_gate", hidden, 1,
                                  False, "replicated"))
        return out

    def describe(self) -> str:
        if not self.moe:
            return f"dense FFN ({self.intermediate_size})"
        shared = f" + shared ({self.shared_intermediate_size})" if self.shared_intermediate_size else ""
        return f"MoE ({self.experts} experts of {self.intermediate_size}, top-{self.top_k}{shared})"


class LayerSpec(BaseModel):
    """One transformer layer: its token mixer(s) (attention, or a recurrent/convolutional `mixer`, or both side by
    side as Falcon-H1's), FFN, norms (kind, place), residual wiring.

    Design: the attention is stored in the optional field `attn` (given and dumped as "attention", so every profile
    reads and writes as before) and read through the property `attention`, which returns it or -- in a layer with
    no attention -- raises a one-line MemplanError naming the layer's mixer.  About a hundred places read
    `layer.attention` (KV cache, FLOPs, layouts, serving engines); each stays correct for attention layers and
    refuses a Gated DeltaNet / Mamba-2 / short-conv layer instead of counting it as attention, until it learns the
    mixer (`layer.attn` is None there; `layer.mixer` says what it is).  Making `attention` Optional outright would
    turn each of those places into an AttributeError on None, or a silent miscount where None is skipped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    attn: Attention | None = Field(None, alias="attention")
    mixer: Mixer | None = Field(None, description="a token mixer that is not attention (Gated DeltaNet, Mamba-2, "
                                                  "short conv)")
    ffn: FFN
    norm: Norm = Field(default_factory=Norm)
    norm_place: NormPlace = "pre"
    parallel_residual: bool = Field(False, description="attention and FFN read the same input (GPT-J/NeoX/Falcon)")
    dropout: float = Field(0.0, ge=0, lt=1, description="residual dropout")

    @model_validator(mode="after")
    def _check_mixer(self) -> "LayerSpec":
        if self.attn is None and self.mixer is None:
            raise MemplanError("a layer needs a token mixer: attention or a recurrent/convolutional mixer")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # no mixer: the dump is as before this field existed (profiles and --json outputs unchanged)
        out = handler(self)
        if isinstance(out, dict) and self.mixer is None:
            out.pop("mixer", None)
        return out

    @property
    def attention(self) -> Attention:
        if self.attn is None:
            assert self.mixer is not None
            raise MemplanError(f"a {self.mixer.describe()} layer has no attention, and this part of memplan models "
                               "attention layers only (it would count the mixer as attention)")
        return self.attn

    @property
    def norms(self) -> int:
        """Block norms (not counting QK/MLA-internal norms)."""
        return NORMS_PER_PLACE[self.norm_place]

    @property
    def kind(self) -> str:
        return f"{self.mixer_describe()}, {self.ffn.describe()}"

    def mixer_describe(self) -> str:
        parts = ([self.attn.describe()] if self.attn is not None else []) + (
            [self.mixer.describe()] if self.mixer is not None else [])
        return " + ".join(parts)

    def linears(self, hidden: int, names: dict[str, str]) -> list[Linear]:
        # a layer spec is frozen and its Linears are frozen dataclasses: computed once per (spec, width, names), as
        # every estimate walks every layer group (Gemma 2: 42 groups of one layer) and a search runs hundreds
        return list(_layer_linears(self, hidden, tuple(sorted(names.items()))))

    def vectors(self, hidden: int, names: dict[str, str]) -> list[Vector]:
        block = [Vector(f"norm{i}", hidden) for i in range(self.norms) for _ in range(self.norm.vectors_per_norm)]
        attn = self.attn.vectors(self.norm, names) if self.attn is not None else []
        return block + attn + (self.mixer.vectors(hidden, names) if self.mixer is not None else [])

    def parameters(self, hidden: int, names: dict[str, str]) -> "LayerParameters":
        return _layer_parameters(self, hidden, tuple(sorted(names.items())))

    def _parameters(self, hidden: int, names: dict[str, str]) -> "LayerParameters":
        lins = self.linears(hidden, names)
        vecs = self.vectors(hidden, names)
        # "attention" is the token mixer's share: attention linears and sinks, a recurrent/conv mixer's everything
        attention = sum(x.params for x in lins if x.is_attention) + sum(
            v.size for v in vecs if v.kind in ("sink", "mixer"))
        ffn = sum(x.params for x in lins if not x.is_attention)
        norms = sum(v.size for v in vecs if v.kind == "norm")
        inactive = sum(x.params * (x.experts - x.top_k) // x.experts for x in lins if x.routed)
        total = attention + ffn + norms
        return LayerParameters(attention=attention, ffn=ffn, norms=norms, total=total, active=total - inactive)


@lru_cache(maxsize=1024)
def _layer_linears(layer: LayerSpec, hidden: int, names: tuple[tuple[str, str], ...]) -> tuple[Linear, ...]:
    attn = layer.attn.linears(hidden, dict(names)) if layer.attn is not None else []
    mixer = layer.mixer.linears(hidden, dict(names)) if layer.mixer is not None else []
    return tuple(attn + mixer + layer.ffn.linears(hidden, dict(names)))


@lru_cache(maxsize=1024)
def _layer_parameters(layer: LayerSpec, hidden: int, names: tuple[tuple[str, str], ...]) -> "LayerParameters":
    return layer._parameters(hidden, dict(names))


class LayerParameters(BaseModel):
    """Parameters of one layer (shared between callers: read, never changed)."""

    model_config = ConfigDict(frozen=True)

    attention: int
    ffn: int
    norms: int
    total: int
    active: int = Field(description="MoE: only the top-k routed experts per token")


class LayerGroup(BaseModel):
    """`count` consecutive layers of one spec."""

    model_config = _FROZEN

    count: int = Field(gt=0)
    layer: LayerSpec


class Embeddings(BaseModel):
    model_config = _FROZEN

    learned_positions: bool = Field(False, description="a learned position table of max_positions rows (GPT-2, BERT)")
    token_types: int = Field(0, ge=0, description="BERT segment embeddings")
    norm: bool = Field(False, description="a norm right after the embeddings (BERT)")
    scale: bool = Field(False, description="multiplied by sqrt(hidden) (Gemma): no parameters, one more tensor")
    dropout: float = Field(0.0, ge=0, lt=1)


Objective = Literal["causal-lm", "masked-lm", "encoder", "sequence-classification"]


class Head(BaseModel):
    """What follows the last layer: final norm, LM head (maybe tied, soft-capped), BERT's pooler or MLM head, or a
    sequence-classification (reward) score head.

    sequence-classification: transformers 5.24 modeling_layers.py GenericForSequenceClassification (the class of
    LlamaForSequenceClassification, Qwen3ForSequenceClassification, ... and what TRL's reward and value models are
    built as: AutoModelForSequenceClassification, num_labels=1): `score = nn.Linear(hidden, num_labels,
    bias=False)` on every position's final-norm output, then the logits of the last non-padding token (last-token
    pooling); its loss (loss/loss_utils.py ForSequenceClassificationLoss) is MSE for num_labels 1, cross-entropy on
    the pooled logits otherwise.  No vocabulary head."""

    model_config = _FROZEN

    objective: Objective = "causal-lm"
    final_norm: bool = True
    lm_head: bool = True
    tied: bool = False
    bias: bool = False
    softcap: float | None = Field(None, gt=0, description="tanh soft-capping of the logits (Gemma 2)")
    pooler: bool = Field(False, description="BERT pooler: hidden x hidden dense with bias, tanh")
    mlm_transform: bool = Field(False, description="BERT MLM head: dense + activation + LayerNorm before the decoder")
    num_labels: int = Field(0, ge=0, description="sequence-classification: the score head's outputs (hidden x "
                                                 "num_labels, no bias; a reward model has 1)")

    @model_validator(mode="after")
    def _check_score(self) -> "Head":
        if self.objective == "sequence-classification":
            if self.num_labels < 1:
                raise MemplanError("a sequence-classification head needs num_labels >= 1 (a reward model has 1)")
            if self.lm_head or self.pooler or self.mlm_transform:
                raise MemplanError("a sequence-classification head has a score head, no LM head, pooler or MLM head")
        elif self.num_labels:
            raise MemplanError(f"num_labels is the score head's width: a {self.objective} head has none")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_labels(self, handler):
        # num_labels only where there is a score head: every other model's JSON stays as it was
        out = handler(self)
        if isinstance(out, dict) and not self.num_labels:
            out.pop("num_labels", None)
        return out

    @property
    def score(self) -> bool:
        """A sequence-classification (reward) score head."""
        return self.objective == "sequence-classification"

    def describe(self) -> str:
        """What the head is and what a training step trains, for the outputs."""
        if self.score:
            return (f"score head (hidden x {self.num_labels}, last-token pooling"
                    + ("; a reward/value model" if self.num_labels == 1 else "") + ")")
        if self.objective == "masked-lm":
            return "masked-LM head"
        if self.objective == "encoder":
            return "encoder outputs (no LM head)" + (" + pooler" if self.pooler else "")
        return "LM head" + (" (tied)" if self.tied else "")


class MTP(BaseModel):
    """DeepSeek-V3 multi-token prediction modules (sec. 2.2): per depth an embedding-sharing module with two norms,
    a 2h -> h projection and one transformer layer; the output head is shared with the main model."""

    model_config = _FROZEN

    depth: int = Field(gt=0)
    layer: LayerSpec
    trained: bool = Field(False, description="counted in the model (Megatron trains them; transformers does not "
                                             "build them)")


class Extra(BaseModel):
    """Parameters outside the text transformer (a vision tower, a projector): counted, not walked."""

    model_config = _FROZEN

    name: str
    params: int = Field(ge=0)
    note: str = ""
    per_token: bool = Field(False, description="used by every text token, so active (parameters of the layers that "
                                               "their specs do not hold: xIELU's alpha_p/alpha_n)")

    @model_serializer(mode="wrap")
    def _without_default_per_token(self, handler):
        out = handler(self)  # per_token only where set: the JSON of every other model stays as it was
        if isinstance(out, dict) and not self.per_token:
            out.pop("per_token", None)
        return out


class Model(BaseModel):
    """A transformer: embeddings + ordered layer groups + head, with the widths they share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field("custom", description="model_type in Hugging Face terms: llama, gemma2, deepseek_v3, ...")
    hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_positions: int = Field(2048, gt=0)
    norm: Norm = Field(default_factory=Norm, description="the final and embedding norms' kind")
    embeddings: Embeddings = Field(default_factory=Embeddings)
    groups: list[LayerGroup] = Field(min_length=1)
    head: Head = Field(default_factory=Head)
    mtp: MTP | None = None
    extras: list[Extra] = []
    module_names: dict[str, str] = Field(default_factory=dict,
                                         description="role -> module name where the family's code differs from "
                                                     "Llama's (PEFT targets match these)")

    @model_validator(mode="after")
    def _check(self) -> "Model":
        for g in self.groups:
            a = g.layer.attn
            if a is not None and a.window is not None and a.window_kind == "global":
                raise MemplanError("a window needs window_kind sliding or chunked")
        return self

    # ---- walking the layers -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return sum(g.count for g in self.groups)

    def layers(self) -> Iterator[LayerSpec]:
        for g in self.groups:
            for _ in range(g.count):
                yield g.layer

    def slice(self, start: int, stop: int) -> list[LayerGroup]:
        """The layer groups of layers [start, stop) (a pipeline stage), counts trimmed."""
        out: list[LayerGroup] = []
        pos = 0
        for g in self.groups:
            lo, hi = max(start, pos), min(stop, pos + g.count)
            if hi > lo:
                out.append(LayerGroup(count=hi - lo, layer=g.layer))
            pos += g.count
        return out

    def kinds(self) -> list[tuple[LayerSpec, int]]:
        """Distinct layer specs with their total counts, in order of first appearance."""
        seen: dict[LayerSpec, int] = {}
        for g in self.groups:
            seen[g.layer] = seen.get(g.layer, 0) + g.count
        return list(seen.items())

    @property
    def first(self) -> LayerSpec:
        return self.groups[0].layer

    @property
    def first_attention(self) -> Attention | None:
        """The first layer's attention that has one (a hybrid's first layer may be a recurrent mixer)."""
        return next((g.layer.attn for g in self.groups if g.layer.attn is not None), None)

    @property
    def causal(self) -> bool:
        # recurrent and convolutional mixers are causal; a hybrid's first layer may be one of them
        attn = next((g.layer.attn for g in self.groups if g.layer.attn is not None), None)
        return attn.causal if attn is not None else True

    @property
    def tied(self) -> bool:
        return self.head.tied

    @property
    def has_lm_head(self) -> bool:
        return self.head.lm_head

    @property
    def moe(self) -> bool:
        return any(g.layer.ffn.moe for g in self.groups)

    def linears(self, layer: LayerSpec) -> list[Linear]:
        return layer.linears(self.hidden_size, self.module_names)

    def describe_layers(self) -> str:
        """'40 sliding-window (4096) layers, 8 global layers; 3 dense FFN, 45 MoE (...)' ."""
        def tally(key) -> str:
            counts: dict[str, int] = {}
            for g in self.groups:
                counts[key(g.layer)] = counts.get(key(g.layer), 0) + g.count
            return ", ".join(f"{n} {k}" for k, n in counts.items())

        attn = tally(lambda s: s.attention.describe() + f" {s.attention.kind.upper()}" if s.attn is not None
                     else s.mixer_describe())
        ffn = tally(lambda s: s.ffn.describe())
        return f"{self.n_layers} layers: attention {attn}; {ffn}"

    # ---- parameters ---------------------------------------------------------------------------------------
    @property
    def norm_params(self) -> int:
        return self.hidden_size * self.norm.vectors_per_norm

    def embedding_params(self) -> int:
        h = self.hidden_size
        e = self.vocab_size * h + self.embeddings.token_types * h
        if self.embeddings.learned_positions:
            e += self.max_positions * h
        if self.embeddings.norm:
            e += self.norm_params
        return e

    def head_params(self) -> int:
        """LM head (untied), its bias, BERT's MLM transform and bias; or a sequence-classification score head."""
        h, V, hd = self.hidden_size, self.vocab_size, self.head
        if hd.score:  # GenericForSequenceClassification: score = nn.Linear(hidden, num_labels, bias=False)
            return h * hd.num_labels
        if not hd.lm_head:
            return 0
        n = 0 if hd.tied else V * h
        n += V if hd.bias else 0
        if hd.mlm_transform:
            n += h * h + h + self.norm_params
        return n

    def mtp_params(self) -> int:
        """DeepSeek-V3 MTP (modeling as in the released checkpoint's model.layers.61): enorm, hnorm, eh_proj
        (2h -> h, no bias), one decoder layer and a final norm (shared_head.norm) per depth; embeddings and the
        output head are shared with the main model."""
        if self.mtp is None:
            return 0
        h = self.hidden_size
        per = 3 * self.norm_params + 2 * h * h + self.mtp.layer.parameters(h, self.module_names).total
        return self.mtp.depth * per


class GroupParameters(BaseModel):
    first_layer: int
    count: int
    kind: str
    per_layer: int
    attention: int
    ffn: int
    norms: int
    active_per_layer: int


class ParameterCount(BaseModel):
    """Exact parameter count by component, per layer group, and active per token (MoE: top-k experts)."""

    embeddings: int = 0
    attention: int = 0
    mlp: int = 0
    norms: int = 0
    lm_head: int = 0
    other: int = Field(0, description="BERT's pooler, a vision tower, ...")
    mtp: int = Field(0, description="multi-token-prediction modules, when trained (DeepSeek-V3)")
    mtp_declared: int = Field(0, description="MTP parameters the config declares, counted or not")
    total: int
    active: int = Field(description="per text token: top-k routed experts only, extras (vision) excluded")
    per_layer: int = Field(0, description="the first layer group's per-layer count")
    groups: list[GroupParameters] = []
    exact: bool = Field(True, description="False when only a total was given (no architecture)")


def count_parameters(m: Model) -> ParameterCount:
    """Exact count, component by component, walking the layer groups."""
    groups: list[GroupParameters] = []
    attention = mlp = norms = inactive = 0
    first = 0
    for g in m.groups:
        lp = g.layer.parameters(m.hidden_size, m.module_names)
        groups.append(GroupParameters(first_layer=first, count=g.count, kind=g.layer.kind, per_layer=lp.total,
                                      attention=lp.attention, ffn=lp.ffn, norms=lp.norms,
                                      active_per_layer=lp.active))
        attention += g.count * lp.attention
        mlp += g.count * lp.ffn
        norms += g.count * lp.norms
        inactive += g.count * (lp.total - lp.active)
        first += g.count
    norms += m.norm_params if m.head.final_norm else 0
    embeddings = m.embedding_params()
    lm_head = m.head_params()
    other = (m.hidden_size ** 2 + m.hidden_size if m.head.pooler else 0) + sum(x.params for x in m.extras)
    declared = m.mtp_params()
    mtp = declared if m.mtp is not None and m.mtp.trained else 0
    if mtp and m.mtp is not None:
        lp = m.mtp.layer.parameters(m.hidden_size, m.module_names)
        inactive += m.mtp.depth * (lp.total - lp.active)
    total = embeddings + attention + mlp + norms + lm_head + other + mtp
    # active per text token: the top-k experts, and not the extras (a vision tower runs on images, not tokens)
    active = total - inactive - sum(x.params for x in m.extras if not x.per_token)
    return ParameterCount(embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, lm_head=lm_head,
                          other=other, mtp=mtp, mtp_declared=declared, total=total, active=active,
                          per_layer=groups[0].per_layer, groups=groups)


class ModelSpec(BaseModel):
    """A model: an architecture (exact counts) or just a parameter count (model states only)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] = Field(default_factory=list, description="other names users type (hub ids, short forms)")
    source: str | None = Field(None, description="where the architecture and the published count come from")
    published_parameters: int | None = Field(None, description="the count the source publishes, checked in tests")
    architecture: Model | None = None
    total_parameters: int | None = Field(None, gt=0, description="used when there is no architecture")
    hf_config: dict | None = Field(None, description="the Hugging Face config.json the architecture was read from "
                                                     "(memplan profile builds transformers' model from it)")

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
    def arch(self) -> Model:
        """The architecture, or a clear error for commands that need one."""
        if self.architecture is None:
            raise MemplanError(
                f"{self.name!r} is a bare parameter count; this needs an architecture: use a profile name "
                "(see `memplan models`), a config.json path, or --layers/--hidden/--heads/--ffn/--vocab"
            )
        return self.architecture


