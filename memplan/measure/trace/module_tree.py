"""A memplan Model read from transformers' module tree (meta device), for a model_type no family file covers.

`memplan trace` needs the model's layer specs (their sizes name the tensor dimensions, their kinds the rows), and
the estimate needs them to count states.  Per layer the module tree says:
- attention: q/k/v/o (or one fused QKV) linears, their shapes and biases, Q/K norms, the heads from the config, a
  window where the layer's attention module has one, Qwen3-Next's output gate (a q_proj twice the query width);
- a token mixer that is not attention (mixers.py): Gated DeltaNet, Mamba-2 or a short convolution, found by its
  depthwise Conv1d -- beside attention (Falcon-H1) or instead of it (hybrids' layer_types make layer groups);
- the FFN: a dense MLP (gate/up/down, fused gate_up, or up/down), or a MoE block (moe_tree.py: 3-D expert banks,
  router, shared experts in or beside the block);
- the norms' kind and count.
The reading is accepted only if its parameter count equals the module's exactly; anything else (MLA, Mamba-1,
raw parameters outside these blocks, weightless norms, layers without an FFN) is refused in one line naming the
layer and module: such a model needs a family file (memplan/families/<model_type>.py).
"""
from __future__ import annotations

import contextlib
from typing import Any

from memplan.errors import MemplanError

from memplan.measure.trace.linear_names import DOWN, GATE, GATE_UP, K, O, Q, QKV, UP, V  # noqa: F401 - re-exported
from memplan.measure.trace.linear_names import last as _last


def _is_linear(mod) -> bool:
    from torch import nn

    return isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"


def _is_norm(mod) -> bool:
    return "norm" in type(mod).__name__.lower() and getattr(mod, "weight", None) is not None


def _refuse(model_type: str, why: str) -> MemplanError:
    return MemplanError(f"model_type {model_type!r} has no family file and memplan cannot read its layers from the "
                        f"module tree ({why}); a family file memplan/families/{model_type}.py is needed")


def read_module_tree(config: dict[str, Any], path: str = "config") -> Any:
    """The Model of `config` (a decoder transformers can build), from its modules on the meta device."""
    import torch

    from memplan.families._decoder import groups_of
    from memplan.measure.models import transformers_config
    from memplan.measure.trace.record import layers_of
    from memplan.spec.model import Embeddings, Extra, Head, Model, Norm, count_parameters

    from memplan.families.heads import score_head, sequence_classification_class

    model_type = str(config.get("model_type"))
    cfg = transformers_config(config)
    import transformers as tf

    # the head the config's architectures name: a score head (families/heads.py), else the causal LM's
    seq_cls = sequence_classification_class(config) is not None
    auto, what = (tf.AutoModelForSequenceClassification, "sequence classifier") if seq_cls else \
        (tf.AutoModelForCausalLM, "causal LM")
    try:
        with torch.device("meta"):
            module = auto.from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - transformers' own message, one line
        raise _refuse(model_type, f"transformers builds no {what} from it: {str(exc).splitlines()[0][:120]}")
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    h, vocab = text.hidden_size, text.vocab_size
    # attention-free models (Mamba) have no heads: their layers' mixers say what they are
    heads = getattr(text, "num_attention_heads", None) or 0
    kv = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (h // heads if heads else 0)
    n = text.num_hidden_layers
    prefix, layers = layers_of(module, n)
    names: dict[str, str] = {}
    with _activation_parameters_aside(layers) as act_params:
        specs = [_layer(layer, i, text, h, heads, kv, head_dim, names, model_type) for i, layer in enumerate(layers)]
    embed = module.get_input_embeddings()
    head = None if seq_cls else module.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    positions = [m for name, m in module.named_modules() if isinstance(m, torch.nn.Embedding) and m is not embed
                 and not name.startswith(prefix)]
    after = [m for name, m in module.named_modules() if _is_norm(m) and not name.startswith(prefix + ".")]
    final = after[-1] if after else None
    norm = Norm(kind=_norm_kind(final), bias=getattr(final, "bias", None) is not None) if final is not None else Norm()
    try:
        model = Model(family=model_type, hidden_size=h, vocab_size=vocab,
                      max_positions=getattr(text, "max_position_embeddings", None) or 2048, norm=norm,
                      embeddings=Embeddings(learned_positions=bool(positions),
                                            dropout=float(getattr(text, "embd_pdrop", 0.0) or 0.0)),
                      groups=groups_of(specs),
                      head=Head(final_norm=final is not None, lm_head=head is not None, tied=tied,
                                bias=head is not None and getattr(head, "bias", None) is not None),
                      module_names=names,
                      extras=[Extra(name=f"{kind} activation parameters", params=count, per_token=True,
                                    note=f"{', '.join(sorted(which))} of every layer's {kind} (transformers "
                                         f"activations.py), read from the module tree")
                              for kind, (count, which) in act_params.items()])
        if seq_cls:  # GenericForSequenceClassification.score: nn.Linear(hidden, num_labels, bias=False)
            model = score_head(model, module.score.out_features)
    except MemplanError as exc:
        raise _refuse(model_type, str(exc)) from None
    have = sum(p.numel() for p in module.parameters())
    want = count_parameters(model).total
    if have != want:
        raise _refuse(model_type, f"its modules hold {have:,} parameters, the reading counts {want:,}")
    return model


@contextlib.contextmanager
def _activation_parameters_aside(layers):
    """Learned activation functions hold parameters of their own (xIELU: alpha_p and alpha_n per layer,
    transformers activations.py XIELUActivation, Apertus's MLP): set aside while the layers are read (a layer spec
    has no place for them), and counted as the model's extras, by activation class -> (parameters, names)."""
    from torch import nn

    found: dict[str, tuple[int, set[str]]] = {}
    moved: list[tuple[nn.Module, dict]] = []
    try:
        for layer in layers:
            for mod in layer.modules():
                if "activation" in type(mod).__name__.lower() and mod._parameters:
                    own = {k: v for k, v in mod._parameters.items() if v is not None}
                    kind = type(mod).__name__.removesuffix("Activation") or type(mod).__name__
                    count, which = found.get(kind, (0, set()))
                    found[kind] = (count + sum(p.numel() for p in own.values()), which | set(own))
                    moved.append((mod, dict(mod._parameters)))
                    mod._parameters.clear()
        yield found
    finally:
        for mod, params in moved:
            mod._parameters.update(params)


def _norm_kind(mod) -> str:
    name = type(mod).__name__.lower()
    return "layernorm" if "layernorm" in name and "rms" not in name else "rmsnorm"


def _layer(layer, i: int, text, h: int, heads: int, kv: int, head_dim: int, names: dict[str, str],
           model_type: str):
    from memplan.measure.trace.mixers import find_mixer, read_mixer
    from memplan.measure.trace.moe_tree import expert_banks, read_moe
    from memplan.spec.model import FFN, LayerSpec, Norm

    moe = None
    banks = expert_banks(layer)
    if banks:
        try:
            moe = read_moe(layer, banks, text, h, f"layer {i}")
        except MemplanError as exc:
            raise _refuse(model_type, str(exc)) from None
    try:
        mixer_path = find_mixer(layer)
        mixer, mixer_names, mixer_owned = read_mixer(layer, mixer_path, text, h) if mixer_path else (None, {}, set())
    except MemplanError as exc:
        raise _refuse(model_type, f"layer {i}: {exc}") from None
    blocks = [b for b in (moe.block if moe else None, mixer_path) if b]
    inside = lambda n: any(n == b or n.startswith(b + ".") for b in blocks)  # noqa: E731
    lins = {name: mod for name, mod in layer.named_modules() if _is_linear(mod) and not inside(name)}
    norms = {name: mod for name, mod in layer.named_modules() if _is_norm(mod) and not inside(name)}
    if moe and any(_is_norm(m) for n, m in layer.named_modules() if n.startswith(moe.block + ".")):
        raise _refuse(model_type, f"layer {i}: norms inside the MoE block {moe.block}")
    owned = {id(p) for m in list(lins.values()) + list(norms.values()) for p in m.parameters(recurse=False)}
    owned |= (moe.owned if moe else set()) | mixer_owned
    loose = [n for n, p in layer.named_parameters() if id(p) not in owned]
    if loose:
        raise _refuse(model_type, f"layer {i}: parameters outside linears, norms, MoE and token mixer: {loose[:3]}")

    def find(cands: tuple[str, ...], inside: str | None = None) -> str | None:
        hits = [n for n in lins if _last(n) in cands and (inside is None or n.startswith(inside + "."))]
        return hits[0] if hits else None

    q, k, v, qkv = find(Q), find(K), find(V), find(QKV)
    attn = (qkv or q or "").rsplit(".", 1)[0]
    roles: dict[str, str] = {}
    if mixer is not None and not (qkv or q):
        attn = None  # a mixer-only layer (Gated DeltaNet, Mamba-2, short conv)
    elif not attn or not (qkv or (q and k and v)):
        raise _refuse(model_type, f"layer {i}: no q/k/v projections among {sorted(lins)[:6]}, and no "
                                  "recurrent/convolutional mixer (a depthwise Conv1d)")
    else:
        o = find(O, attn)
        if o is None:
            raise _refuse(model_type, f"layer {i}: cannot name the attention output projection among {sorted(lins)}")
        roles["o"] = o
        roles.update({"qkv": qkv} if qkv else dict(q=q, k=k, v=v))
    mlp = _dense_roles(lins, attn, model_type) if moe is None else {}
    if moe is not None and set(lins) - set(roles.values()):
        _sibling_shared(lins, attn, roles, moe, model_type)
    roles.update(mlp)
    if set(lins) - set(roles.values()):
        raise _refuse(model_type, f"layer {i}: linears it cannot name: {sorted(set(lins) - set(roles.values()))}")
    for role, name in list(roles.items()) + (list(moe.names.items()) if moe else []) + list(mixer_names.items()):
        prev = names.setdefault(role, name)
        if prev != name:
            raise _refuse(model_type, f"layers name their {role} module differently ({prev}, {name})")
    qk_norms = [n for n in norms if attn and n.startswith(attn + ".")]
    block_norms = [n for n in norms if n not in qk_norms]
    qk = "none"
    if qk_norms:
        size = norms[qk_norms[0]].weight.numel()
        qk = "head" if size == head_dim else ("full" if size == heads * head_dim else "none")
        if qk == "none":
            raise _refuse(model_type, f"a query/key norm of {size} elements")
    place = {1: "shared", 2: "pre", 4: "sandwich"}.get(len(block_norms))
    if place is None:
        raise _refuse(model_type, f"{len(block_norms)} norms per layer")
    first_norm = norms[block_norms[0]]
    bias = lambda n: getattr(lins[n], "bias", None) is not None  # noqa: E731
    act = str(getattr(text, "hidden_act", None) or getattr(text, "hidden_activation", "silu"))
    try:
        attention = None if attn is None else _attention(
            layer, attn, lins, roles, text, i, heads, kv, head_dim, qk)
        if moe is not None:
            ffn = FFN(activation=act, **moe.fields)
        else:
            up_mod = lins[mlp.get("gate_up") or mlp["up"]]
            ffn = FFN(intermediate_size=up_mod.out_features // 2 if "gate_up" in mlp else up_mod.out_features,
                      gated="gate" in mlp or "gate_up" in mlp, fused_gate_up="gate_up" in mlp,
                      bias=bias(mlp["down"]), activation=act, conv1d=type(lins[mlp["down"]]).__name__ == "Conv1D")
        return LayerSpec(attention=attention, mixer=mixer, ffn=ffn,
                         norm=Norm(kind=_norm_kind(first_norm), bias=getattr(first_norm, "bias", None) is not None),
                         norm_place=place, parallel_residual=place == "shared" or bool(
                             getattr(text, "use_parallel_residual", False)))
    except MemplanError as exc:
        raise _refuse(model_type, str(exc)) from None


def _attention(layer, attn: str, lins: dict[str, Any], roles: dict[str, str], text, i: int, heads: int, kv: int,
               head_dim: int, qk: str):
    """The Attention of layer i from its projections; a q_proj twice the query width carries Qwen3-Next's output
    gate (Qwen3NextAttention)."""
    from memplan.spec.model import Attention

    if not heads:
        raise MemplanError(f"layer {i} has attention projections but the config names no attention heads")
    q = roles.get("qkv") or roles["q"]
    bias = lambda n: getattr(lins[n], "bias", None) is not None  # noqa: E731
    gate = "q" in roles and lins[roles["q"]].out_features == 2 * heads * head_dim
    window, kind = _window(layer.get_submodule(attn), text, i)
    return Attention(heads=heads, kv_heads=kv, head_dim=head_dim, fused_qkv="qkv" in roles,
                     qkv_bias=bias(q), out_bias=bias(roles["o"]), window=window, window_kind=kind,
                     qk_norm=qk, dropout=float(getattr(text, "attention_dropout", 0.0) or 0.0),
                     rotary_fraction=float(getattr(text, "partial_rotary_factor", 1.0) or 1.0),
                     conv1d=type(lins[q]).__name__ == "Conv1D", output_gate=gate)


def _sibling_shared(lins: dict[str, Any], attn: str | None, roles: dict[str, str], moe, model_type: str) -> None:
    """A dense MLP beside the MoE block, outside it, is its shared expert (GraniteMoeHybridDecoderLayer: shared_mlp
    next to block_sparse_moe, both fed the same normed input and summed)."""
    rest = {n: m for n, m in lins.items() if n not in roles.values()}
    shared = _dense_roles(rest, attn, model_type)
    gated = "gate" in shared or "gate_up" in shared
    if moe.fields.get("shared_intermediate_size") or gated != moe.fields["gated"]:
        raise _refuse(model_type, f"a dense MLP {sorted(shared.values())} beside the MoE block {moe.block}, which "
                                  "is not read as its shared expert")
    up = rest[shared.get("gate_up") or shared["up"]]
    moe.fields["shared_intermediate_size"] = up.out_features // 2 if "gate_up" in shared else up.out_features
    moe.fields["fused_gate_up"] = "gate_up" in shared
    moe.names["shared"] = shared["down"].rsplit(".", 1)[0] + "."
    for role, path in shared.items():
        moe.names["shared" + role] = path
        roles["shared" + role] = path


def _dense_roles(lins: dict[str, Any], attn: str | None, model_type: str) -> dict[str, str]:
    """role -> path of a dense MLP's linears (those outside the attention module)."""
    mlp_names = [n for n in lins if attn is None or not n.startswith(attn + ".")]
    if not mlp_names:
        raise _refuse(model_type, "a layer with no MLP (Mamba-2's and Nemotron-H's blocks hold one mixer or one MLP "
                                  "each): memplan's layers pair a token mixer with an FFN")
    gate = next((n for n in mlp_names if _last(n) in GATE), None)
    gate_up = next((n for n in mlp_names if _last(n) in GATE_UP), None)
    up = next((n for n in mlp_names if _last(n) in UP), None)
    down = next((n for n in mlp_names if _last(n) in DOWN), None)
    if down is None or not (up or gate_up):
        raise _refuse(model_type, f"cannot name the MLP among {sorted(lins)}")
    roles = {"down": down}
    if gate_up:
        roles["gate_up"] = gate_up
    else:
        roles["up"] = up
        if gate:
            roles["gate"] = gate
    return roles


def _window(attn_mod, text, i: int) -> tuple[int | None, str]:
    """(window, kind) of layer i: the attention module's sliding_window, the config's layer_types."""
    window = getattr(attn_mod, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    kind = "global"
    if isinstance(types, list) and i < len(types):
        kind = {"sliding_attention": "sliding", "chunked_attention": "chunked"}.get(types[i], "global")
        if kind != "global" and not window:
            window = getattr(text, "sliding_window", None) if kind == "sliding" else getattr(
                text, "attention_chunk_size", None)
    elif window:
        kind = "sliding"
    return (None if kind == "global" else window), kind
