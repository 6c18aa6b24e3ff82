"""A model described by memplan's architecture flags alone (`memplan estimate 7B --layers 32 --hidden 4096 ...`):
Llama's layer by default (gated SwiGLU MLP, RMSNorm, rotary, no biases, untied head), GeLU and LayerNorm on
request, MoE with --experts/--top-k.  Not a Hugging Face model_type: `build` takes the flags directly."""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError
from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import FFN, Attention, Head, LayerSpec, Model, Norm

REQUIRED = ("layers", "hidden", "heads", "ffn", "vocab")


def build(flags: dict[str, Any], path: str = "architecture flags") -> Model:
    missing = [f"--{k}" for k in REQUIRED if flags.get(k) is None]
    if missing:
        raise MemplanError(f"a model built from flags needs {' '.join(f'--{k}' for k in REQUIRED)}; missing "
                           + " ".join(missing))
    data = {"model_type": "custom", **{k: v for k, v in flags.items() if v is not None}}
    return read(ConfigReader(data, path, "custom"))


def read(c: ConfigReader) -> Model:
    hidden, n_heads = c.integer("hidden"), c.integer("heads")
    kv = c.integer("kv_heads", default=n_heads)
    head_dim = c.integer("head_dim", default=0, minimum=0)
    if not head_dim:
        if hidden % n_heads:
            raise MemplanError(f"hidden size {hidden} is not divisible by {n_heads} heads; set --head-dim explicitly")
        head_dim = hidden // n_heads
    if n_heads % kv:
        raise MemplanError(f"attention heads ({n_heads}) must be divisible by KV heads ({kv}); pick --kv-heads that "
                           "divides it")
    gated = c.text("mlp", default="swiglu") == "swiglu"
    norm = Norm(kind=c.text("norm", default="rmsnorm"), bias=False)
    experts = c.integer("experts", default=0, minimum=0)
    attn = d.safe(c, lambda: Attention(heads=n_heads, kv_heads=kv, head_dim=head_dim))
    ffn = d.safe(c, lambda: FFN(intermediate_size=c.integer("ffn"), gated=gated,
                                activation="silu" if gated else "gelu", experts=experts,
                                top_k=c.integer("top_k", default=2 if experts else 0, minimum=0)))
    layer = LayerSpec(attention=attn, ffn=ffn, norm=norm)
    return d.decoder(c, family="custom", hidden=hidden, layers=[layer] * c.integer("layers", maximum=1 << 14),
                     vocab=c.integer("vocab"), max_positions=c.integer("max_positions", default=2048), norm=norm,
                     head=Head(tied=c.flag("tied", default=False)))


FAMILY = Family(model_types=("custom",), read=read, description="built from memplan's architecture flags",
                transformers_class="LlamaForCausalLM",
                flag_keys={k: (k,) for k in ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab",
                                              "max_positions", "experts", "top_k", "tied", "mlp", "norm")})
