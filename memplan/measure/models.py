"""Build a torch nn.Module from a memplan ModelSpec: random weights, nothing downloaded.

Three sources:
- "hf": Hugging Face transformers (optional dependency): the model's own config.json (`ModelSpec.hf_config`) turned
  into its transformers config class, built through the family's `transformers_class` (memplan/families/<type>.py;
  AutoModelForCausalLM unless the family says otherwise, e.g. BertForMaskedLM), `attn_implementation` from
  Workload.attention, optionally at fewer layers (the family's layer key, nested text_config included);
- "reference": the project's own decoder (`ReferenceDecoder`, below), nanoGPT-short: pre-norm blocks, RMSNorm or
  LayerNorm, gated or GeLU MLP, rotary or learned positions, GQA, biases where the layer spec says so -- for a
  Model whose layer groups all share one dense layer spec;
- a factory "package.module:function" returning an nn.Module (called with the ModelSpec if it takes an argument).
Every build is checked: sum(numel) over the module's parameters must equal memplan's count_parameters, otherwise
the measurement would not be of the model the estimate describes (MemplanError says which source to use).
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from memplan.errors import MemplanError
from memplan.measure.oom import first_line, is_out_of_memory
from memplan.spec.model import LayerSpec, Model, ModelSpec, count_parameters

# how a built module is driven (runner.training_loss): causal-lm and masked-lm take labels=input_ids and return
# .loss; pretraining (BertForPreTraining) also takes next_sentence_label; encoder (BertModel) has no LM loss
KINDS = ("causal-lm", "masked-lm", "pretraining", "encoder", "sequence-classification")


@dataclass
class BuiltModel:
    """The module and how the runner drives it."""

    module: nn.Module
    source: str  # hf | reference | factory:<spec>
    kind: str  # one of KINDS
    lm_head: nn.Module | None  # the module whose forward ends the forward phase (loss phase starts after it)
    vocab_size: int
    model: Model | None = None  # the architecture that was built (fewer layers when asked)


# ---------------------------------------------------------------------------------------------------------
# the reference decoder
# ---------------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019; computed in fp32 and cast back, as Llama's LlamaRMSNorm does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(kind: str, bias: bool, hidden: int) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(hidden)
    return nn.LayerNorm(hidden, bias=bias)


def _rotary_tables(head_dim: int, fraction: float, max_positions: int, base: float = 10000.0):
    """RoFormer (Su et al. 2021) eq. 34: inverse frequencies base^(-2i/d) over the rotated share of head_dim."""
    rot = int(head_dim * fraction) // 2 * 2
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    t = torch.arange(max_positions, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat([x_rot * cos + _rotate_half(x_rot) * sin, x_pass], dim=-1)


def _sdpa_has_gqa() -> bool:
    import inspect as _inspect

    try:
        return "enable_gqa" in _inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature: torch >= 2.5 documents enable_gqa
        return tuple(int(x) for x in torch.__version__.split(".")[:2] if x.isdigit()) >= (2, 5)


_SDPA_HAS_GQA = _sdpa_has_gqa()


class Attention(nn.Module):
    def __init__(self, hidden: int, spec: LayerSpec, attention: str, selective_recompute: bool) -> None:
        super().__init__()
        at = spec.attention
        self.at = at
        self.attention = attention
        self.selective = selective_recompute
        q, kv = at.q_size, at.kv_size
        if at.fused_qkv:
            self.qkv = nn.Linear(hidden, q + 2 * kv, bias=at.qkv_bias)
        else:
            self.q = nn.Linear(hidden, q, bias=at.qkv_bias)
            self.k = nn.Linear(hidden, kv, bias=at.qkv_bias)
            self.v = nn.Linear(hidden, kv, bias=at.qkv_bias)
        self.o = nn.Linear(q, hidden, bias=at.out_bias)

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        at = self.at
        gqa = at.kv_heads != at.heads  # GQA (Ainslie et al. 2023): each KV head serves heads/kv_heads queries
        # sdpa takes the KV heads as they are (enable_gqa, torch >= 2.5) where transformers does
        # (integrations/sdpa_attention.py use_gqa_in_sdpa at 5.17: no mask, head dim <= 256): the kernel that then
        # runs is torch's choice (measure/cuda.py sdpa_kernel), as for a Llama under transformers.  Repeating K/V
        # to every head instead kept two b x heads x s x d copies per layer that no estimate counts (-2.5% bf16,
        # -3.5% fp32 at 1B, micro-batch 8, seq 2048, measured on fake tensors).
        native_gqa = gqa and self.attention != "eager" and at.head_dim <= 256 and _SDPA_HAS_GQA
        if gqa and not native_gqa:
            rep = at.heads // at.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if self.attention == "eager":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(at.head_dim)
            if at.causal:
                s = q.shape[-2]
                mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            if at.dropout and self.training:
                probs = F.dropout(probs, at.dropout)
            return probs @ v
        extra = {"enable_gqa": True} if native_gqa else {}
        return F.scaled_dot_product_attention(q, k, v, is_causal=at.causal,
                                              dropout_p=at.dropout if self.training else 0.0, **extra)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        at = self.at
        b, s, _ = x.shape
        if at.fused_qkv:
            q, k, v = self.qkv(x).split([at.q_size, at.kv_size, at.kv_size], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(b, s, at.heads, at.head_dim).transpose(1, 2)
        k = k.view(b, s, at.kv_heads, at.head_dim).transpose(1, 2)
        v = v.view(b, s, at.kv_heads, at.head_dim).transpose(1, 2)
        if cos is not None:
            q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        if self.selective:  # Korthikanti et al. 2022 sec. 4.2: recompute only the attention core in backward
            y = checkpoint(self._core, q, k, v, use_reentrant=False)
        else:
            y = self._core(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, s, at.q_size))


class MLP(nn.Module):
    def __init__(self, hidden: int, spec: LayerSpec) -> None:
        super().__init__()
        ffn = spec.ffn
        self.gated = ffn.gated
        f, bias = ffn.intermediate_size, ffn.bias
        if self.gated:  # Shazeer 2020, GLU variants: down(act(gate x) * up x)
            self.gate = nn.Linear(hidden, f, bias=bias)
        self.up = nn.Linear(hidden, f, bias=bias)
        self.down = nn.Linear(f, hidden, bias=bias)
        self.act = ffn.activation

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if self.act in ("silu", "swish"):
            return F.silu(x)
        if self.act == "relu":
            return F.relu(x)
        approx = "tanh" if self.act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast") else "none"
        return F.gelu(x, approximate=approx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down(self._act(self.gate(x)) * self.up(x))
        return self.down(self._act(self.up(x)))


class Block(nn.Module):
    def __init__(self, hidden: int, spec: LayerSpec, attention: str, selective: bool) -> None:
        super().__init__()
        self.norm1 = _norm(spec.norm.kind, spec.norm.bias, hidden)
        self.attn = Attention(hidden, spec, attention, selective)
        self.shared_norm = spec.norm_place == "shared"  # Falcon-7B style: one norm feeds both branches
        if not self.shared_norm:
            self.norm2 = _norm(spec.norm.kind, spec.norm.bias, hidden)
        self.mlp = MLP(hidden, spec)
        self.parallel = spec.parallel_residual or self.shared_norm
        self.p_drop = spec.dropout

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p_drop) if self.p_drop and self.training else x

    def forward(self, x, cos, sin):
        if self.parallel:  # GPT-J / NeoX / Falcon: x + attn(ln(x)) + mlp(ln'(x))
            h1 = self.norm1(x)
            h2 = h1 if self.shared_norm else self.norm2(x)
            return x + self._drop(self.attn(h1, cos, sin)) + self._drop(self.mlp(h2))
        x = x + self._drop(self.attn(self.norm1(x), cos, sin))
        return x + self._drop(self.mlp(self.norm2(x)))


def reference_refusal(m: Model) -> str | None:
    """Why the reference decoder cannot express `m` (None: it can)."""
    specs = {g.layer for g in m.groups}
    if len(specs) > 1:
        return f"{m.family} has {len(specs)} layer kinds; the reference decoder builds one dense layer spec"
    spec = next(iter(specs))
    at, ffn = spec.attention, spec.ffn
    why = [(ffn.moe, "MoE layers"), (at.mla, "MLA attention"), (at.window_kind != "global", "windowed attention"),
           (at.softcap is not None, "soft-capping"), (at.sinks, "attention sinks"), (at.qk_norm != "none", "QK-norm"),
           (at.position == "alibi", "ALiBi"), (not at.causal, "bidirectional (encoder) attention"),
           (spec.norm_place not in ("pre", "shared"), f"{spec.norm_place} norms"),
           (ffn.fused_gate_up, "a fused gate_up projection"), (at.v_head_dim is not None, "a separate value dim"),
           (m.embeddings.token_types > 0 or m.embeddings.norm or m.embeddings.scale, "BERT/Gemma-style embeddings"),
           (m.head.pooler or m.head.mlm_transform or m.head.softcap is not None or m.mtp is not None or m.extras,
            "this head"),
           (ffn.activation not in ("silu", "swish", "relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"),
            f"activation {ffn.activation}")]
    for bad, what in why:
        if bad:
            return f"the reference decoder has no {what}"
    return None


class ReferenceDecoder(nn.Module):
    """A decoder-only transformer from a one-kind Model; returns logits [batch, seq, vocab]."""

    def __init__(self, m: Model, attention: str = "sdpa", recompute: str = "none") -> None:
        super().__init__()
        why = reference_refusal(m)
        if why:
            raise MemplanError(f"{why}; use --model-source hf")
        spec = m.first
        at = spec.attention
        h = m.hidden_size
        self.m = m
        self.recompute_full = recompute == "full"
        self.embed = nn.Embedding(m.vocab_size, h)
        self.pos = nn.Embedding(m.max_positions, h) if m.embeddings.learned_positions else None
        self.layers = nn.ModuleList(Block(h, spec, attention, recompute == "selective") for _ in range(m.n_layers))
        self.norm = _norm(m.norm.kind, m.norm.bias, h) if m.head.final_norm else None
        self.lm_head = None
        if m.head.lm_head:
            self.lm_head = nn.Linear(h, m.vocab_size, bias=m.head.bias)
            if m.head.tied:
                self.lm_head.weight = self.embed.weight
        if at.position == "rotary":
            cos, sin = _rotary_tables(at.head_dim, at.rotary_fraction, m.max_positions)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        else:
            self.cos = self.sin = None
        self.p_drop = m.embeddings.dropout
        self.apply(self._init)

    @staticmethod
    def _init(mod: nn.Module) -> None:
        # GPT-2 initialisation (Radford et al. 2019; nanoGPT): N(0, 0.02) weights, zero biases
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            nn.init.normal_(mod.weight, std=0.02)
        if isinstance(mod, nn.Linear) and mod.bias is not None:
            nn.init.zeros_(mod.bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        b, s = input_ids.shape
        x = self.embed(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(s, device=input_ids.device))
        if self.p_drop and self.training:
            x = F.dropout(x, self.p_drop)
        cos = sin = None
        if self.cos is not None:
            cos, sin = self.cos[:s].to(x.dtype), self.sin[:s].to(x.dtype)
        for layer in self.layers:
            if self.recompute_full and self.training:  # Chen et al. 2016: keep only each layer's input
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        if self.norm is not None:
            x = self.norm(x)
        return self.lm_head(x) if self.lm_head is not None else x


# ---------------------------------------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------------------------------------
def _hf_attention(attention: str) -> str:
    if attention == "flash":
        if importlib.util.find_spec("flash_attn") is None:
            raise MemplanError("--attention flash with --model-source hf needs the flash-attn package; "
                               "use --attention sdpa (torch picks its flash kernel on cuda)")
        return "flash_attention_2"
    return attention


def need_transformers():
    try:
        import transformers
    except ImportError:
        raise MemplanError("--model-source hf needs transformers: `pip install 'memplan[hf]'` "
                           "(or use --model-source reference)") from None
    return transformers


def config_of(model: ModelSpec) -> dict[str, Any]:
    """The Hugging Face config.json of `model`: its own, or (a model built from memplan's flags, family custom)
    the Llama/Mixtral config its flags describe (families/custom.py builds Llama's layer)."""
    if model.hf_config is not None:
        return model.hf_config
    m = model.arch
    if m.family != "custom":
        raise MemplanError(f"{model.name!r} has no config.json to build a transformers model from; "
                           "use --model-source reference or --factory module:function")
    spec = m.first
    at, ffn = spec.attention, spec.ffn
    if not ffn.gated or spec.norm.kind != "rmsnorm":
        raise MemplanError("a model built from --mlp gelu / --norm layernorm flags has no transformers class; "
                           "use --model-source reference")
    out: dict[str, Any] = {
        "model_type": "mixtral" if ffn.moe else "llama", "num_hidden_layers": m.n_layers,
        "hidden_size": m.hidden_size, "num_attention_heads": at.heads, "num_key_value_heads": at.kv_heads,
        "head_dim": at.head_dim, "intermediate_size": ffn.intermediate_size, "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_positions, "tie_word_embeddings": m.head.tied, "hidden_act": "silu"}
    if ffn.moe:
        out.update(num_local_experts=ffn.experts, num_experts_per_tok=ffn.top_k)
    return out


def with_layers(config: dict[str, Any], layers: int | None) -> dict[str, Any]:
    """`config` at `layers` layers (the family's layer key, nested text_config included; per-layer lists such as
    layer_types keep their period: families/registry.apply_overrides)."""
    if layers is None:
        return config
    from memplan.families.registry import apply_overrides

    return apply_overrides(config, {"layers": layers}, str(config.get("model_type", "config")))


def _token_ids_inside_vocab(cfg) -> None:
    """Special token ids beyond a small test vocabulary (GPT-2's default 50256 with vocab 512) would index out of
    range: they are moved to the last id (the ids do not change any tensor's size)."""
    vocab = getattr(cfg, "vocab_size", None)
    if isinstance(vocab, int):
        for key in [k for k in dir(cfg) if k.endswith("_token_id") and not k.startswith("_")]:
            try:
                value = getattr(cfg, key)
            except AttributeError:
                continue
            if isinstance(value, int) and value >= vocab:
                setattr(cfg, key, vocab - 1)
            elif isinstance(value, list):
                setattr(cfg, key, [min(v, vocab - 1) if isinstance(v, int) else v for v in value])
    for sub in ("text_config",):
        if getattr(cfg, sub, None) is not None and sub in getattr(cfg, "sub_configs", {}):
            _token_ids_inside_vocab(getattr(cfg, sub))


def transformers_config(config: dict[str, Any], attention: str = "sdpa"):
    """The transformers config object of a config.json dict."""
    tf = need_transformers()
    data = copy.deepcopy({k: v for k, v in config.items() if not k.startswith("_")})
    model_type = data.pop("model_type")
    try:
        cfg = tf.AutoConfig.for_model(model_type, **data)
    except ValueError as exc:
        raise MemplanError(f"transformers cannot build a {model_type!r} config: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # transformers' strict dataclass validation (huggingface_hub)
        raise MemplanError(f"transformers refuses this {model_type} config: "
                           f"{_plain(str(exc).strip().splitlines()[-1].strip())}") from None
    _token_ids_inside_vocab(cfg)
    return cfg


def _plain(text: str) -> str:
    """A library's message without Python's exception class names (`StrictDataclassFieldValidationError:`,
    `KeyError`): the user reads what is wrong with the config, not which exception carried it."""
    import re

    return re.sub(r"\b[A-Z]\w*(?:Error|Exception)\b:?\s*", "", text).strip() or "invalid value"


def transformers_class_name(config: dict[str, Any]) -> str:
    """The family's transformers class; AutoModelForCausalLM for a model_type no family file covers (memplan
    trace reads those from their module tree)."""
    from memplan.families.heads import sequence_classification_class
    from memplan.families.registry import find_family

    fam = find_family(str(config.get("model_type")))
    if sequence_classification_class(config) and (fam is None or "bert" not in fam.model_types):
        # a decoder's score head (families/heads.py): the class AutoModelForSequenceClassification maps its
        # model_type to (transformers' GenericForSequenceClassification)
        return "AutoModelForSequenceClassification"
    if fam is None:
        return "AutoModelForCausalLM"
    cls = fam.transformers_class
    return cls(config) if callable(cls) else cls


def kind_of(class_name: str) -> str:
    if class_name.endswith("ForSequenceClassification"):
        return "sequence-classification"
    if class_name.endswith("ForMaskedLM"):
        return "masked-lm"
    if class_name.endswith("ForPreTraining"):
        return "pretraining"
    if class_name.endswith("Model") and not class_name.endswith("LMHeadModel"):
        return "encoder"
    return "causal-lm"


def build_hf_config(config: dict[str, Any], attention: str = "sdpa") -> BuiltModel:
    """A transformers module from a config.json dict, through its family's transformers class."""
    tf = need_transformers()
    impl = _hf_attention(attention)
    cfg = transformers_config(config, attention)
    name = transformers_class_name(config)
    cls = getattr(tf, name, None)
    if cls is None:
        raise MemplanError(f"transformers {tf.__version__} has no class {name}")
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if kind_of(name) == "sequence-classification" and getattr(text, "pad_token_id", None) is None:
        # GenericForSequenceClassification refuses a batch of more than one sequence without a padding token (it
        # pools each sequence's last non-padding token); a reward model's tokenizer has one (TRL sets it)
        text.pad_token_id = 0
    try:
        # the recipe's weight dtype (the caller's default dtype), not the config's saved torch_dtype
        dtype = torch.get_default_dtype()
        if name.startswith("Auto"):
            module = cls.from_config(cfg, attn_implementation=impl, dtype=dtype)
        else:
            module = cls._from_config(cfg, attn_implementation=impl, dtype=dtype)
    except MemplanError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming it (an unknown hidden_act is a KeyError in ACT2FN)
        if is_out_of_memory(exc):
            raise
        raise MemplanError(f"--model-source hf: transformers could not build {name} with attention {impl!r} "
                           f"({_plain(first_line(exc))}); check the config's fields, or use "
                           "--model-source reference") from None
    if getattr(module, "loss_type", "unset") is None:  # what it falls back to anyway, minus the warning
        module.loss_type = "ForCausalLM"
    kind = kind_of(type(module).__name__)
    head = module.get_output_embeddings() if kind != "encoder" else None
    if kind == "sequence-classification":  # the score head ends the forward (GenericForSequenceClassification)
        head = getattr(module, "score", None)
    from memplan.families.registry import find_family, read_config

    known = find_family(str(config.get("model_type"))) is not None
    return BuiltModel(module=module, source="hf", kind=kind, lm_head=head, vocab_size=_vocab(cfg),
                      model=read_config(config, str(config.get("model_type"))) if known else None)


def _vocab(cfg) -> int:
    """The vocabulary of a transformers config (a multimodal config's text config holds it; an absent key is the
    config class's default)."""
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for holder in (cfg, text):
        if isinstance(getattr(holder, "vocab_size", None), int):
            return holder.vocab_size
    raise MemplanError("the config has no vocab_size")


def build_hf(model: ModelSpec, attention: str = "sdpa", layers: int | None = None) -> BuiltModel:
    return build_hf_config(with_layers(config_of(model), layers), attention)


def build_reference(model: ModelSpec, attention: str = "sdpa", recompute: str = "none",
                    layers: int | None = None) -> BuiltModel:
    m = model.arch
    if layers is not None:
        m = m.model_copy(update={"groups": m.slice(0, layers)})
    module = ReferenceDecoder(m, "sdpa" if attention == "flash" else attention, recompute)
    return BuiltModel(module=module, source="reference", kind="causal-lm" if m.head.lm_head else "encoder",
                      lm_head=module.lm_head, vocab_size=m.vocab_size, model=m)


def load_factory(spec: str):
    """'package.module:function' -> the function (MemplanError on a bad spec)."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise MemplanError(f"--factory {spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise MemplanError(f"--factory: cannot import {mod_name!r} ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing (SyntaxError, ...)
        raise MemplanError(f"--factory: importing {mod_name!r} raised {type(exc).__name__}: {first_line(exc)}") \
            from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise MemplanError(f"--factory: {mod_name!r} has no function {fn_name!r}")
    return fn


def build_factory(spec: str, model: ModelSpec) -> BuiltModel:
    fn = load_factory(spec)
    try:
        takes_arg = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                        for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C function without a signature: call it with the spec
        takes_arg = True
    try:
        module = fn(model) if takes_arg else fn()
    except MemplanError:
        raise
    except Exception as exc:  # noqa: BLE001
        if is_out_of_memory(exc):
            raise
        raise MemplanError(f"--factory {spec}: the function raised {type(exc).__name__}: {first_line(exc)}") \
            from None
    if not isinstance(module, nn.Module):
        raise MemplanError(f"--factory {spec!r} returned {type(module).__name__}, not a torch nn.Module")
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else getattr(module, "lm_head", None)
    vocab = model.architecture.vocab_size if model.architecture else getattr(getattr(module, "config", None), "vocab_size", 0)
    return BuiltModel(module=module, source=f"factory:{spec}", kind="causal-lm", lm_head=head, vocab_size=vocab,
                      model=model.architecture)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Create parameters directly in `dtype`: no fp32 copy first, and no `.to()` (which fake tensors refuse)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_model(model: ModelSpec, source: str = "hf", attention: str = "sdpa", recompute: str = "none",
                check_count: bool = True, dtype: torch.dtype = torch.float32, layers: int | None = None) -> BuiltModel:
    """The module for `model` from `source` ('hf', 'reference', or a 'module:function' factory).

    Parameters are random and created in `dtype` (the recipe's weight dtype); `layers` builds fewer layers.
    `check_count`: the built module must hold exactly count_parameters(architecture).total parameters.
    """
    with default_dtype(dtype):
        if source == "hf":
            built = build_hf(model, attention, layers)
        elif source == "reference":
            built = build_reference(model, attention, recompute, layers)
        elif ":" in source:
            built = build_factory(source.removeprefix("factory:"), model)
        else:
            raise MemplanError(f"unknown model source {source!r}; use hf, reference or --factory module:function")
    if ":" in source:
        check_count = check_count and model.architecture is not None
    if check_count:
        check_parameters(built, built.model or model.arch, model.name)
    return built


def check_parameters(built: BuiltModel, m: Model, name: str) -> None:
    have = module_parameters(built.module)
    want = count_parameters(m).total
    if have != want:
        raise MemplanError(
            f"the {built.source} module for {name!r} has {have:,} parameters but memplan counts {want:,}; "
            "the architecture has a feature this source does not express -- try another --model-source")


def module_parameters(module: nn.Module) -> int:
    """Distinct parameters (a tied weight counts once, as in count_parameters)."""
    return sum(p.numel() for p in module.parameters())
