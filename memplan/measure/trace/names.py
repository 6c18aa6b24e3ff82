"""What a traced tensor is, in words people read: one table-driven function, applied once at trace time.

`row_name` names a storage from what the trace knows of it: the module that made it (its path inside the layer:
`self_attn.q_proj`, `mlp.act_fn`, `input_layernorm`; or the model-level path: `model.norm`, `lm_head`), the op
that made it, the module whose autograd node saved it, its element-count expression, whether it is floating
point, and the kernel emulation's tags.  The aten detail (`storage_name` in analyze.py) stays in the row's
`detail` field for --json and --verbose.  No torch here: the names are plain string logic (tests/test_row_names.py).

A tensor the table does not know is "other (<module>)", never an aten name.
"""
from __future__ import annotations

import re

# module roles, from the last component(s) of a module path (first match wins; `parent` narrows a generic name)
# (pattern on the last component, pattern on the parent path or None, role)
ROLES: tuple[tuple[str, str | None, str], ...] = (
    (r"rotary_emb|rotary", None, "rotary"),
    (r".*(norm|layernorm)$|^ln(_\w+)?$|^layer_?norm$", None, "norm"),
    (r".*drop(out)?$|^drop$", None, "dropout"),
    (r"c_attn|qkv_proj|query_key_value|w_pack|qkv", None, "qkv"),
    (r"q_proj|q_a_proj|q_b_proj|query|wq", None, "q"),
    (r"kv_a_proj_with_mqa|kv_b_proj|kv_proj", None, "kv"),
    (r"k_proj|key|wk", None, "k"),
    (r"v_proj|value|wv", None, "v"),
    (r"o_proj|out_proj|wo", None, "o"),
    (r"c_proj|dense", r"(^|\.)(self_)?attn$|(^|\.)(self_)?attention(\.output)?$|attention\.self$", "o"),
    (r"gate_up_proj", None, "gate_up"),
    (r"gate_proj|w1", None, "gate"),
    (r"up_proj|w3|c_fc|fc1|dense_h_to_4h", None, "up"),
    (r"dense", r"(^|\.)intermediate$", "up"),
    (r"down_proj|w2|fc2|dense_4h_to_h|c_proj", None, "down"),
    (r"dense", r"(^|\.)output$", "down"),
    (r"act_fn|act|activation_fn|activation|intermediate_act_fn", None, "act"),
    # recurrent / convolutional token mixers (spec/model.py Mixer): Qwen3NextGatedDeltaNet.in_proj_qkvz /
    # in_proj_ba, Mamba2Mixer.in_proj, Lfm2ShortConv.in_proj; their depthwise conv1d / conv
    (r"in_proj(_\w+)?", None, "mixer_in"),
    (r"conv1d|conv", r"(^|\.)(linear_attn|mixer|mamba|conv)$", "conv"),
    (r"linear_attn|mixer|mamba|conv", r"^$", "mixer"),  # the mixer block itself (Lfm2DecoderLayer.conv)
    (r"router|gate|shared_expert_gate", None, "router"),
    (r"experts", None, "experts"),
    (r"shared_experts?", None, "shared"),
    (r"embed_tokens|wte|wpe|word_embeddings|embed_in|embeddings|token_type_embeddings|position_embeddings",
     None, "embed"),
    (r"lm_head|embed_out", None, "lm_head"),
    (r"score", None, "score"),  # a sequence-classification head (GenericForSequenceClassification.score)
    (r"self_attn|attn|attention|self_attention|self", None, "attn"),
    (r"mlp|feed_forward|block_sparse_moe|moe|intermediate|output", None, "mlp"),
)
_ROLES = [(re.compile(f"^(?:{p})$"), re.compile(q) if q else None, r) for p, q, r in ROLES]

WIDTHS = ("h", "q", "kv", "d", "lq", "lkv", "f")  # per-token widths: a norm's row without one is its statistics
SAVED_BY_PROJ = {
    "q": "attention input", "k": "attention input", "v": "attention input", "qkv": "attention input",
    "kv": "attention input", "gate": "MLP input", "up": "MLP input", "gate_up": "MLP input", "router": "MLP input",
    "o": "attention output (o_proj input)", "down": "MLP down input", "lm_head": "LM head input",
    "score": "score head input",
    "mixer_in": "mixer input", "conv": "causal conv input",
}
HEADS = ("lm_head", "score")
PRODUCED = {
    "q": "Q", "k": "K", "v": "V", "qkv": "fused QKV", "kv": "KV (compressed)", "gate": "gate output",
    "up": "up output", "gate_up": "gate/up output", "act": "activation output", "o": "attention output projection",
    "down": "MLP output", "embed": "embedding output", "lm_head": "logits", "rotary": "RoPE cos/sin tables",
    "score": "score logits",
    "mixer_in": "mixer input projection", "conv": "causal conv output",
}


def strip_layer(path: str) -> str:
    """'model.layers.0.self_attn.q_proj' -> 'self_attn.q_proj' (the path inside a layer); model-level as is."""
    m = re.search(r"\.(layers|h|layer|blocks)\.\d+(\.|$)", path)
    return path[m.end():] if m else path


def role(path: str) -> str:
    """The role of a module path ('' when unknown); 'mlp.experts.act_fn' -> 'act'."""
    if not path:
        return ""
    parts = path.split(".")
    last, parent = parts[-1].lower(), ".".join(parts[:-1]).lower()
    for pat, ppat, r in _ROLES:
        if pat.match(last) and (ppat is None or ppat.search(parent)):
            return r
    return ""


def _inside(path: str, r: str) -> bool:
    """Some module on the path has role r ('mlp.experts.act_fn' is inside experts)."""
    parts = path.split(".")
    return any(role(".".join(parts[:i + 1])) == r for i in range(len(parts)))


def _is_core(elems: str) -> bool:
    return any(("s*s" in t or "s*w" in t or "w*s" in t) and "a" in t.split("*") for t in elems.split(" + "))


def _has(elems: str, name: str) -> bool:
    return any(name in t.split("*") for t in elems.split(" + "))


def row_name(region: str, module: str, op: str, saver: str = "", elems: str = "", floating: bool = True,
             tags: frozenset[str] | set[str] = frozenset(), phase: str = "forward", dtype: str = "",
             rope: bool = True) -> str:
    """The human name of one traced storage.  `module`: where it was made (inside the layer, or model-level);
    `op`: the aten op that made it; `saver`: "op @ module path" of the node that saved it ('' if none); `dtype`:
    'float32', 'bfloat16', ...; `rope`: the model has rotary embeddings (its attention's elementwise ops are RoPE)."""
    op = op.split(".")[0]
    save_op, _, save_where = saver.partition(" @ ")
    save_op = save_op.split(".")[0]
    save_mod = strip_layer(save_where)
    made, by = role(module), role(save_mod)
    sdpa = any("sdpa" in t for t in tags)
    in_experts = _inside(module, "experts") or _inside(module, "shared")
    expert = "shared expert " if _inside(module, "shared") else "expert "
    base = module.rsplit(".", 1)[-1] if module else region

    if region == "checkpoint":
        return "layer input"  # the region says checkpoint
    if region == "inputs":
        return "inputs"
    # the loss
    if op == "_log_softmax":
        return "fp32 log-softmax (loss)"
    if op.startswith("nll_loss") or (not _has(elems, "s") and phase == "loss"):
        return "loss"
    if phase == "loss" and not floating:
        return "loss targets"
    # autocast's copies: a linear's weight, or its input, cast to the 16-bit dtype
    if op == "_to_copy" and not _has(elems, "b") and not _has(elems, "s") and (in_experts or made in SAVED_BY_PROJ):
        return "autocast weight copies"
    if op == "_to_copy" and made in SAVED_BY_PROJ or op == "_to_copy" and made == "lm_head":
        if not _has(elems, "b"):
            return "autocast weight copies"
        return {"o": "attention output", "down": "MLP down input", "lm_head": "LM head input"}.get(
            made, SAVED_BY_PROJ.get(made, "other")) + " (autocast copy)"
    if made == "score":
        return PRODUCED["score"]
    if made == "lm_head" or (_has(elems, "V") and floating):
        return "logits"
    if region == "head" and elems == "1" and floating:
        return "loss"
    if region == "head" and not module and op == "_to_copy":
        return "loss input (fp32 copy)"
    if "pooler" in module:
        return "pooler output"
    if "pooler" in save_mod:
        return "pooler input (last layer's output)"
    # dropout
    if op == "native_dropout" or "dropout" in tags or made == "dropout" or op in ("bernoulli", "bernoulli_"):
        if not floating or op in ("empty_like", "bernoulli", "bernoulli_"):
            return "attention dropout mask" if _is_core(elems) else "dropout mask"
        if _is_core(elems):
            return "attention probabilities after dropout"
        if by == "norm" or by in SAVED_BY_PROJ and by not in ("o", "down", *HEADS):
            return "layer input (residual stream)"
        return "dropout output"
    # attention core
    if _is_core(elems):
        if op in ("empty_like", "bernoulli", "bernoulli_"):
            return "attention dropout mask"
        if op == "_softmax":
            return "attention probabilities (softmax)"
        if op == "_to_copy":
            return "attention probabilities (cast)"
        return "attention scores"
    if sdpa or "scaled_dot_product" in op:
        if not floating:
            return "attention RNG state (fused kernel)"
        if _has(elems, "a") and not any(_has(elems, n) for n in ("d", "dv", "q", "h", "kv", "vw")):
            return "attention log-sum-exp (fused kernel)"
        return "attention output"
    # model-level tables and masks
    if made == "rotary":
        return PRODUCED["rotary"]
    if region == "embedding" and elems.count("s") >= 2 and not _has(elems, "h"):
        return "attention mask"
    if region == "embedding" and not floating:
        return "position/token-type ids"
    if not floating and not _has(elems, "s"):
        return "MoE routing indices" if in_experts else "index scalars"
    if region == "forward_only" and made == "attn" and op == "cat":
        return "KV cache (past_key_values)"
    if op == "max" and made == "attn":
        return "attention scores (max, for softmax)"
    # norms: statistics, and what the norm's input or output is saved as
    if made == "norm" or by == "norm" and op in ("add", "embedding", "mul", "_to_copy") and made != "attn":
        if made == "norm" and floating and op in ("rsqrt", "native_layer_norm", "mean", "var_mean", "pow", "add") \
                and not any(_has(elems, n) for n in WIDTHS):
            return "norm statistics (rsqrt)" if op == "rsqrt" else "norm statistics (mean, rstd)"
        qk = re.search(r"(^|_)(q|k|qk|q_a|kv_a)_(layer)?norm$", module.rsplit(".", 1)[-1] if module else "")
        if by in SAVED_BY_PROJ and by != "o" and made == "norm":
            return SAVED_BY_PROJ[by] + (" (norm output)" if by not in HEADS else " (final norm output)")
        if made == "norm" and op == "add" and len(elems.split("*")) == 1:
            return "norm weight (1 + w)"
        if made == "norm" and by == "norm" and (op == "mul" or op == "_to_copy" and dtype not in ("", "float32")):
            return "normalized input (before the weight)"
        if qk:
            return f"{qk.group(2).upper().replace('_A', ' (compressed)')} norm input"
        return "norm input"
    # what a projection saved: its input
    if by in ("o", "down") and made not in ("q", "k", "v", "qkv"):
        if in_experts or _inside(save_mod, "shared"):
            return ("shared " if _inside(save_mod, "shared") else "") + "expert down input"
        return SAVED_BY_PROJ[by]
    # MoE
    if made == "router" or _inside(module, "router") or (made == "mlp" and op in ("topk", "_softmax", "sigmoid")):
        if op in ("topk",):
            return "MoE router top-k weights/indices"
        if op in ("_softmax", "sigmoid", "sum", "div"):
            return "MoE router probabilities"
        return "MoE router logits"
    if in_experts:
        if not floating:
            return "MoE routing indices"
        if made == "act" or op in ("silu", "gelu", "sigmoid", "clamp"):
            return expert + "activation output"
        if made in ("gate", "up", "gate_up") or op == "bmm" or op == "mm":
            return expert + PRODUCED.get(made, "gate/up output") + (" (activation input)" if by == "act" else "")
        wide = _has(elems, "f") or _has(elems, "fk")
        if wide and op in ("new_empty", "bmm", "mm", "_grouped_mm"):
            return expert + "gate/up output" + (" (activation input)" if by == "act" else "")
        if op == "index" and not wide and not _has(elems, "h"):
            return "MoE routing weights (per routed token)"
        if op in ("index", "new_empty", "empty_like", "cat", "repeat", "clone"):
            return "expert inputs (routed tokens)"
        if op in ("mul", "add") and save_op in ("new_empty", "bmm", "mm", "_grouped_mm", "_to_copy"):
            return expert + "down input"  # the experts' down projection is a grouped matmul, no module of its own
        return expert + "activation intermediates"
    if made == "mlp" and op in ("repeat", "clone") and _inside(save_mod, "mlp"):
        return "expert inputs (routed tokens)"
    # projections and the nonlinearity
    if made == "act" or (made == "mlp" and op in ("silu", "gelu", "sigmoid", "tanh")):
        if by == "act" or op in ("tanh", "add", "mul", "pow") and made == "act":
            return "activation intermediates"
        return PRODUCED["act"]
    if made in ("gate", "up", "gate_up"):
        return PRODUCED[made] + (" (activation input)" if by == "act" else "")
    if made == "mlp" and op == "mul":
        return "expert inputs (router-weighted)" if _inside(save_mod, "experts") else "activation output"
    if made in ("q", "k", "v", "qkv", "kv"):
        return "Q (compressed)" if made == "q" and _has(elems, "lq") else PRODUCED[made]
    # inside the attention block: Q/K/V as the attention reads them
    if made == "attn":
        if not _has(elems, "q") and not _has(elems, "kv") and not _has(elems, "d") and not _has(elems, "dv") \
                and (_has(elems, "lkv") or _has(elems, "lq")):
            return "KV (compressed)" if _has(elems, "lkv") else "Q (compressed)"
        if rope and op in ("add", "mul", "neg"):
            return "Q/K after RoPE"
        return "Q/K/V (attention inputs)"
    if made == "embed" or op == "embedding":
        return "layer input (residual stream)" if region in ("layer",) else PRODUCED["embed"]
    if op == "add" and floating and _has(elems, "h"):
        return "residual stream" + (" (norm input)" if by == "norm" else "")
    if made in PRODUCED:
        return PRODUCED[made]
    if made == "mixer" or _inside(module, "mixer"):  # a recurrent/conv mixer's own ops (gates, scan, state)
        return "causal conv output" if op == "convolution" else "mixer intermediates"
    return f"other ({base})"
