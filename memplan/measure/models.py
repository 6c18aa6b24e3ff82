"""Build a torch nn.Module from a memplan ModelSpec: random weights, nothing downloaded.

Three sources:
- "hf": Hugging Face transformers (optional dependency), the Architecture turned back into the family's config
  class (`hf_config`), `attn_implementation` from Workload.attention;
- "reference": the project's own decoder (`ReferenceDecoder`, below), nanoGPT-short: pre-norm blocks, RMSNorm or
  LayerNorm, SwiGLU or GeLU MLP, rotary or learned positions, GQA, biases where the Architecture says so;
- a factory "package.module:function" returning an nn.Module (called with the ModelSpec if it takes an argument).
Every build is checked: sum(numel) over the module's parameters must equal memplan's count_parameters, otherwise
the measurement would not be of the model the estimate describes (MemplanError says which source to use).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from memplan.errors import MemplanError
from memplan.spec.model import Architecture, ModelSpec, count_parameters


@dataclass
class BuiltModel:
    """The module and how the runner drives it."""

    module: nn.Module
    source: str  # hf | reference | factory:<spec>
    kind: str  # causal-lm (returns logits or .loss) | encoder (BertModel: hidden states, synthetic loss)
    lm_head: nn.Module | None  # the module whose forward ends the forward phase (loss phase starts after it)
    vocab_size: int


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


def _norm(a: Architecture) -> nn.Module:
    if a.norm == "rmsnorm":
        return RMSNorm(a.hidden_size)
    return nn.LayerNorm(a.hidden_size, bias=a.norm_bias)


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


class Attention(nn.Module):
    def __init__(self, a: Architecture, attention: str, selective_recompute: bool) -> None:
        super().__init__()
        self.a = a
        self.attention = attention
        self.selective = selective_recompute
        h, q, kv = a.hidden_size, a.q_size, a.kv_size
        if a.fused_qkv:
            self.qkv = nn.Linear(h, q + 2 * kv, bias=a.qkv_bias)
        else:
            self.q = nn.Linear(h, q, bias=a.qkv_bias)
            self.k = nn.Linear(h, kv, bias=a.qkv_bias)
            self.v = nn.Linear(h, kv, bias=a.qkv_bias)
        self.o = nn.Linear(q, h, bias=a.attn_out_bias)

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self.a
        if a.kv_heads != a.n_heads:  # GQA (Ainslie et al. 2023): each KV head serves n_heads/kv_heads queries
            rep = a.n_heads // a.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if self.attention == "eager":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(a.head_size)
            if a.causal:
                s = q.shape[-2]
                mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            if a.attention_dropout and self.training:
                probs = F.dropout(probs, a.attention_dropout)
            return probs @ v
        return F.scaled_dot_product_attention(q, k, v, is_causal=a.causal,
                                              dropout_p=a.attention_dropout if self.training else 0.0)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        a = self.a
        b, s, _ = x.shape
        if a.fused_qkv:
            q, k, v = self.qkv(x).split([a.q_size, a.kv_size, a.kv_size], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(b, s, a.n_heads, a.head_size).transpose(1, 2)
        k = k.view(b, s, a.kv_heads, a.head_size).transpose(1, 2)
        v = v.view(b, s, a.kv_heads, a.head_size).transpose(1, 2)
        if cos is not None:
            q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        if self.selective:  # Korthikanti et al. 2022 sec. 4.2: recompute only the attention core in backward
            y = checkpoint(self._core, q, k, v, use_reentrant=False)
        else:
            y = self._core(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, s, a.q_size))


class MLP(nn.Module):
    def __init__(self, a: Architecture) -> None:
        super().__init__()
        self.swiglu = a.mlp == "swiglu"
        h, f, bias = a.hidden_size, a.ffn_hidden_size, a.mlp_bias
        if self.swiglu:  # Shazeer 2020, GLU variants: down(silu(gate x) * up x)
            self.gate = nn.Linear(h, f, bias=bias)
        self.up = nn.Linear(h, f, bias=bias)
        self.down = nn.Linear(f, h, bias=bias)
        self.act = a.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        approx = "tanh" if self.act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast") else "none"
        return self.down(F.gelu(self.up(x), approximate=approx))


class Block(nn.Module):
    def __init__(self, a: Architecture, attention: str, selective: bool) -> None:
        super().__init__()
        self.norm1 = _norm(a)
        self.attn = Attention(a, attention, selective)
        self.shared_norm = a.norms_per_layer == 1  # Falcon-7B style: one norm feeds both branches
        if not self.shared_norm:
            self.norm2 = _norm(a)
        self.mlp = MLP(a)
        self.layout = a.parallel_residual or self.shared_norm
        self.p_drop = a.hidden_dropout

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p_drop) if self.p_drop and self.training else x

    def forward(self, x, cos, sin):
        if self.layout:  # GPT-J / NeoX / Falcon: x + attn(ln(x)) + mlp(ln'(x))
            h1 = self.norm1(x)
            h2 = h1 if self.shared_norm else self.norm2(x)
            return x + self._drop(self.attn(h1, cos, sin)) + self._drop(self.mlp(h2))
        x = x + self._drop(self.attn(self.norm1(x), cos, sin))
        return x + self._drop(self.mlp(self.norm2(x)))


class ReferenceDecoder(nn.Module):
    """A decoder-only transformer from an Architecture; returns logits [batch, seq, vocab]."""

    def __init__(self, a: Architecture, attention: str = "sdpa", recompute: str = "none") -> None:
        super().__init__()
        if a.n_experts:
            raise MemplanError("the reference decoder has no MoE layers; use --model-source hf for MoE models")
        if a.position == "alibi":
            raise MemplanError("the reference decoder has no ALiBi; use --model-source hf for Falcon/BLOOM-style ALiBi")
        if a.token_type_vocab or a.pooler or a.embedding_norm or not a.causal:
            raise MemplanError("the reference decoder is decoder-only; use --model-source hf for BERT-style encoders")
        if a.norms_per_layer not in (1, 2):
            raise MemplanError(f"the reference decoder needs 1 or 2 norms per layer, got {a.norms_per_layer}")
        self.a = a
        self.recompute_full = recompute == "full"
        self.embed = nn.Embedding(a.vocab_size, a.hidden_size)
        self.pos = nn.Embedding(a.max_positions, a.hidden_size) if a.position == "learned" else None
        self.layers = nn.ModuleList(Block(a, attention, recompute == "selective") for _ in range(a.n_layers))
        self.norm = _norm(a) if a.final_norm else None
        self.lm_head = None
        if a.lm_head:
            self.lm_head = nn.Linear(a.hidden_size, a.vocab_size, bias=a.lm_head_bias)
            if a.tied_embeddings:
                self.lm_head.weight = self.embed.weight
        if a.position == "rotary":
            cos, sin = _rotary_tables(a.head_size, a.rotary_fraction, a.max_positions)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        else:
            self.cos = self.sin = None
        self.p_drop = a.embedding_dropout
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # GPT-2 initialisation (Radford et al. 2019; nanoGPT): N(0, 0.02) weights, zero biases
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

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
HF_FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "falcon", "bert")


def _hf_attention(attention: str) -> str:
    if attention == "flash":
        if importlib.util.find_spec("flash_attn") is None:
            raise MemplanError("--attention flash with --model-source hf needs the flash-attn package; "
                               "use --attention sdpa (torch picks its flash kernel on cuda)")
        return "flash_attention_2"
    return attention


def hf_config(a: Architecture, attention: str = "sdpa"):
    """The transformers config of `a`'s family (the inverse of reading a config.json), or a MemplanError."""
    try:
        import transformers as tf
    except ImportError:
        raise MemplanError("--model-source hf needs transformers: `pip install transformers` "
                           "(or use --model-source reference)") from None
    fam = a.family.replace("-", "_").lower()
    if fam == "custom" and (a.mlp, a.norm, a.position) == ("swiglu", "rmsnorm", "rotary"):
        fam = "llama"  # an architecture given by flags (--layers/--hidden/...) is Llama-shaped by default
    common = dict(vocab_size=a.vocab_size, tie_word_embeddings=a.tied_embeddings)
    if fam == "gpt2":
        special = min(50256, a.vocab_size - 1)  # GPT-2's <|endoftext|>, kept inside a small test vocabulary
        cfg = tf.GPT2Config(bos_token_id=special, eos_token_id=special, n_layer=a.n_layers, n_embd=a.hidden_size, n_head=a.n_heads, n_inner=a.ffn_hidden_size,
                            n_positions=a.max_positions, activation_function=a.activation,
                            resid_pdrop=a.hidden_dropout, embd_pdrop=a.embedding_dropout,
                            attn_pdrop=a.attention_dropout, **common)
    elif fam == "gpt_neox":
        cfg = tf.GPTNeoXConfig(num_hidden_layers=a.n_layers, hidden_size=a.hidden_size,
                               num_attention_heads=a.n_heads, intermediate_size=a.ffn_hidden_size,
                               max_position_embeddings=a.max_positions, rotary_pct=a.rotary_fraction,
                               use_parallel_residual=a.parallel_residual, hidden_act=a.activation,
                               attention_dropout=a.attention_dropout, hidden_dropout=a.hidden_dropout, **common)
    elif fam in ("llama", "mistral", "mixtral", "qwen2"):
        kw = dict(num_hidden_layers=a.n_layers, hidden_size=a.hidden_size, num_attention_heads=a.n_heads,
                  num_key_value_heads=a.kv_heads, head_dim=a.head_size, intermediate_size=a.ffn_hidden_size,
                  max_position_embeddings=a.max_positions, hidden_act=a.activation,
                  attention_dropout=a.attention_dropout, **common)
        if fam == "llama":
            cfg = tf.LlamaConfig(attention_bias=a.qkv_bias, mlp_bias=a.mlp_bias, **kw)
        elif fam == "mistral":
            cfg = tf.MistralConfig(sliding_window=a.sliding_window, **kw)
        elif fam == "mixtral":
            cfg = tf.MixtralConfig(num_local_experts=a.n_experts, num_experts_per_tok=a.experts_per_token,
                                   sliding_window=a.sliding_window, **kw)
        else:
            cfg = tf.Qwen2Config(**kw)
    elif fam == "falcon":
        multi_query = a.kv_heads == 1 and a.norms_per_layer == 1
        cfg = tf.FalconConfig(num_hidden_layers=a.n_layers, hidden_size=a.hidden_size,
                              num_attention_heads=a.n_heads, num_kv_heads=a.kv_heads,
                              new_decoder_architecture=not multi_query and a.kv_heads != a.n_heads,
                              multi_query=multi_query, parallel_attn=a.parallel_residual,
                              bias=a.qkv_bias, alibi=a.position == "alibi",
                              ffn_hidden_size=a.ffn_hidden_size, max_position_embeddings=a.max_positions,
                              attention_dropout=a.attention_dropout, hidden_dropout=a.hidden_dropout, **common)
    elif fam == "bert":
        cfg = tf.BertConfig(num_hidden_layers=a.n_layers, hidden_size=a.hidden_size, num_attention_heads=a.n_heads,
                            intermediate_size=a.ffn_hidden_size, max_position_embeddings=a.max_positions,
                            type_vocab_size=max(a.token_type_vocab, 1), hidden_act=a.activation,
                            hidden_dropout_prob=a.hidden_dropout, attention_probs_dropout_prob=a.attention_dropout,
                            vocab_size=a.vocab_size)
    else:
        raise MemplanError(f"no Hugging Face mapping for family {a.family!r} (known: {', '.join(HF_FAMILIES)}); "
                           "use --model-source reference or --factory module:function")
    return cfg


def build_hf(a: Architecture, attention: str = "sdpa") -> BuiltModel:
    import transformers as tf

    cfg = hf_config(a, attention)
    impl = _hf_attention(attention)
    if a.family.lower() == "bert":
        module = tf.BertModel(cfg, add_pooling_layer=a.pooler) if a.pooler else tf.BertModel(cfg, add_pooling_layer=False)
        kind, head = "encoder", None
    else:
        module = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl)
        if getattr(module, "loss_type", "unset") is None:  # what it falls back to anyway, minus the warning
            module.loss_type = "ForCausalLM"
        kind, head = "causal-lm", module.get_output_embeddings()
    if kind == "encoder":
        module.config._attn_implementation = impl
    return BuiltModel(module=module, source="hf", kind=kind, lm_head=head, vocab_size=a.vocab_size)


def build_reference(a: Architecture, attention: str = "sdpa", recompute: str = "none") -> BuiltModel:
    module = ReferenceDecoder(a, "sdpa" if attention == "flash" else attention, recompute)
    return BuiltModel(module=module, source="reference", kind="causal-lm" if a.lm_head else "encoder",
                      lm_head=module.lm_head, vocab_size=a.vocab_size)


def load_factory(spec: str):
    """'package.module:function' -> the function (MemplanError on a bad spec)."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise MemplanError(f"--factory {spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise MemplanError(f"--factory: cannot import {mod_name!r} ({exc})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise MemplanError(f"--factory: {mod_name!r} has no function {fn_name!r}")
    return fn


def build_factory(spec: str, model: ModelSpec) -> BuiltModel:
    fn = load_factory(spec)
    takes_arg = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                    for p in inspect.signature(fn).parameters.values())
    module = fn(model) if takes_arg else fn()
    if not isinstance(module, nn.Module):
        raise MemplanError(f"--factory {spec!r} returned {type(module).__name__}, not a torch nn.Module")
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else getattr(module, "lm_head", None)
    vocab = model.architecture.vocab_size if model.architecture else getattr(getattr(module, "config", None), "vocab_size", 0)
    return BuiltModel(module=module, source=f"factory:{spec}", kind="causal-lm", lm_head=head, vocab_size=vocab)


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
                check_count: bool = True, dtype: torch.dtype = torch.float32) -> BuiltModel:
    """The module for `model` from `source` ('hf', 'reference', or a 'module:function' factory).

    Parameters are random and created in `dtype` (the recipe's weight dtype).
    `check_count`: the built module must hold exactly count_parameters(architecture).total parameters.
    """
    with default_dtype(dtype):
        built = _build(model, source, attention, recompute)
    if ":" in source:
        check_count = check_count and model.architecture is not None
    if check_count:
        have = module_parameters(built.module)
        want = count_parameters(model.arch).total
        if have != want:
            raise MemplanError(
                f"the {built.source} module for {model.name!r} has {have:,} parameters but memplan counts {want:,}; "
                "the architecture has a feature this source does not express -- try another --model-source")
    return built


def _build(model: ModelSpec, source: str, attention: str, recompute: str) -> BuiltModel:
    if source == "hf":
        built = build_hf(model.arch, attention)
    elif source == "reference":
        built = build_reference(model.arch, attention, recompute)
    elif ":" in source:
        built = build_factory(source.removeprefix("factory:"), model)
    else:
        raise MemplanError(f"unknown model source {source!r}; use hf, reference or --factory module:function")
    return built


def module_parameters(module: nn.Module) -> int:
    """Distinct parameters (a tied weight counts once, as in count_parameters)."""
    return sum(p.numel() for p in module.parameters())
