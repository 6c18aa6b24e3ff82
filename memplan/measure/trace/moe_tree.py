"""A MoE block read from transformers' module tree: routed experts (3-D banks), router, shared experts.

transformers 5 stores routed experts as 3-D parameters of one module (`@use_experts_implementation` classes such as
Qwen3MoeExperts, Glm4MoeExperts, MiniMaxM2Experts: `gate_up_proj` (E, 2f, h) and `down_proj` (E, h, f); gpt-oss's
GptOssExperts stores them transposed, (E, h, 2f) and (E, f, h), with `*_bias` (E, out)).  The block around the bank
(Qwen3MoeSparseMoeBlock, Glm4MoeMoE, JambaSparseMoeBlock, ...) holds the router -- an nn.Linear (E, h) or a raw
(E, h) weight (Qwen3MoeTopKRouter), maybe with a bias vector (the Linear's, or DeepSeek-V3-style
`e_score_correction_bias` when it is a parameter, Ernie 4.5's `moe_statics`) -- and optionally shared experts (a
dense MLP: Glm4MoeMoE.shared_experts, HunYuanMoE.shared_mlp) with a sigmoid gate (Qwen2MoeSparseMoeBlock
.shared_expert_gate, an nn.Linear (1, h)).

The block is identified by its parameters, not by model_type: a 3-D parameter of a module that is not a
convolution (a depthwise Conv1d weight (C, 1, k) is 3-D too, and is a token mixer's, see mixers.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memplan.errors import MemplanError

ROUTER_BIAS = ("e_score_correction_bias", "expert_bias", "bias")
# the config keys transformers' MoE configs use for experts per token (Qwen3MoeConfig, Glm4MoeConfig,
# MiniMaxM2Config, JambaConfig: num_experts_per_tok; GptOssConfig: num_experts_per_tok; HunYuanMoEV1Config: moe_topk)
TOPK_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")


@dataclass
class MoEReading:
    """What `read_moe` found: the block's path, the FFN's fields, and the module names (roles -> paths)."""

    block: str
    fields: dict[str, Any]
    names: dict[str, str]
    owned: set[int]  # ids of the parameters the reading accounts for


def is_conv(mod) -> bool:
    from torch import nn

    return isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def expert_banks(layer) -> dict[str, Any]:
    """path -> module, for the modules of `layer` that hold a 3-D parameter and are not convolutions."""
    out = {}
    for name, mod in layer.named_modules():
        if not is_conv(mod) and any(p.dim() == 3 for p in mod.parameters(recurse=False)):
            out[name] = mod
    return out


def read_moe(layer, banks: dict[str, Any], text, h: int, where: str) -> MoEReading:
    """The MoE block of `layer` around its one expert bank; `where` names the layer in refusals."""
    if len(banks) != 1:
        raise MemplanError(f"{where}: {len(banks)} modules hold 3-D expert banks ({', '.join(sorted(banks))}); "
                           "one routed-expert bank per layer is read")
    bank_path, bank = next(iter(banks.items()))
    if "." not in bank_path:
        raise MemplanError(f"{where}: the expert bank {bank_path} sits directly in the layer, with no MoE block")
    block_path = bank_path.rsplit(".", 1)[0]
    block = layer.get_submodule(block_path)
    experts, width, gated, transposed, bias, names = _bank(bank, bank_path, h, where)
    owned = {id(p) for p in bank.parameters()}
    router, router_bias, router_module = _router(block, block_path, bank_path, experts, h, where, owned)
    names["router"] = router
    fields: dict[str, Any] = dict(intermediate_size=width, gated=gated, experts=experts, top_k=_top_k(text, experts, where),
                                  experts_fused=True, experts_transposed=transposed, bias=bias,
                                  router_bias=router_bias, router_is_module=router_module)
    shared = _shared(block, block_path, h, gated, bias, where, owned, names)
    fields.update(shared)
    return MoEReading(block=block_path, fields=fields, names=names, owned=owned)


def _bank(bank, path: str, h: int, where: str) -> tuple[int, int, bool, bool, bool, dict[str, str]]:
    """(experts, width, gated, transposed, bias, names) of a fused bank: gate_up_proj + down_proj, or up_proj + down_proj."""
    params = dict(bank.named_parameters(recurse=False))
    weights = {n: p for n, p in params.items() if p.dim() == 3}
    ups = [n for n in weights if n in ("gate_up_proj", "up_proj")]
    if "down_proj" not in weights or len(ups) != 1 or len(weights) != 2:
        raise MemplanError(f"{where}: expert bank {path} holds {sorted(weights)}; memplan reads a fused "
                           "gate_up_proj (or up_proj) and a down_proj")
    up, down = weights[ups[0]].shape, weights["down_proj"].shape
    experts = up[0]
    gated = ups[0] == "gate_up_proj"
    k = 2 if gated else 1
    # (E, k*f, h) and (E, h, f) as Qwen3MoeExperts, or (E, h, k*f) and (E, f, h) as GptOssExperts
    if up[2] == h and down[1] == h and up[1] % k == 0 and down[2] == up[1] // k:
        width, transposed = up[1] // k, False
    elif up[1] == h and down[2] == h and up[2] % k == 0 and down[1] == up[2] // k:
        width, transposed = up[2] // k, True
    else:
        raise MemplanError(f"{where}: expert bank {path}: {ups[0]} {tuple(up)} and down_proj {tuple(down)} do not "
                           f"fit hidden size {h}")
    if down[0] != experts:
        raise MemplanError(f"{where}: expert bank {path}: {experts} experts in {ups[0]}, {down[0]} in down_proj")
    biases = {n for n in params if n not in weights}
    want = {f"{ups[0]}_bias", "down_proj_bias"}
    if biases and biases != want:
        raise MemplanError(f"{where}: expert bank {path} holds {sorted(biases)}; memplan reads biases "
                           f"{sorted(want)} or none")
    if biases:  # GptOssExperts: gate_up_proj_bias (E, 2f), down_proj_bias (E, h)
        out_up = up[2] if transposed else up[1]
        if tuple(params[f"{ups[0]}_bias"].shape) != (experts, out_up) or \
                tuple(params["down_proj_bias"].shape) != (experts, h):
            raise MemplanError(f"{where}: expert bank {path}: bias shapes do not match its weights")
    role = "gate_up" if gated else "up"
    names = {"expert": path + ".", "expert" + role: f"{path}.{ups[0]}", "expertdown": f"{path}.down_proj"}
    return experts, width, gated, transposed, bool(biases), names


def _router(block, block_path: str, bank_path: str, experts: int, h: int, where: str, owned: set[int]
            ) -> tuple[str, bool, bool]:
    """(router path, bias, is an nn.Linear): the one (E, h) weight of the block outside the bank; its bias is the
    Linear's, or an (E,)-element parameter named like DeepSeek-V3's e_score_correction_bias beside it."""
    from torch import nn

    hits = [(n, m) for n, m in block.named_modules() if not n.startswith(_rel(bank_path, block_path))
            and getattr(m, "weight", None) is not None and isinstance(m.weight, nn.Parameter)
            and tuple(m.weight.shape) == (experts, h)]
    if len(hits) > 1:  # E == h: a shared expert's (h, h) projection has the router's shape too
        hits = [(n, m) for n, m in hits if not n.endswith("_proj")]
    if len(hits) != 1:
        raise MemplanError(f"{where}: MoE block {block_path} has {len(hits)} router weights of shape ({experts}, {h}) "
                           "(one is read)")
    rel, router = hits[0]
    path = f"{block_path}.{rel}" if rel else block_path
    owned.update(id(p) for p in router.parameters(recurse=False) if p.dim() == 2)
    extra = [(n, p) for n, p in router.named_parameters() if id(p) not in owned]
    extra += [(n, p) for n, p in block.named_parameters(recurse=False) if id(p) not in owned]
    bias = [(n, p) for n, p in extra if n.rsplit(".", 1)[-1] in ROUTER_BIAS and p.numel() == experts]
    if len(extra) != len(bias) or len(bias) > 1:
        raise MemplanError(f"{where}: router {path}: parameters it cannot name: {[n for n, _ in extra]}")
    owned.update(id(p) for _, p in bias)
    return path, bool(bias), isinstance(router, nn.Linear)


def _rel(path: str, block_path: str) -> str:
    return path[len(block_path) + 1:]


def _shared(block, block_path: str, h: int, gated: bool, bias: bool, where: str, owned: set[int], names: dict[str, str]
            ) -> dict[str, Any]:
    """Shared experts: the dense MLP (gate/up/down linears) left in the block, and a (1, h) gate Linear."""
    from torch import nn

    from memplan.measure.trace.linear_names import DOWN, GATE, UP
    from memplan.measure.trace.linear_names import last as _last

    lins = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)
            and not any(id(p) in owned for p in m.parameters(recurse=False))}
    gate = [n for n, m in lins.items() if m.out_features == 1 and m.in_features == h]
    out: dict[str, Any] = {}
    if gate:
        if len(gate) > 1 or lins[gate[0]].bias is not None:
            raise MemplanError(f"{where}: MoE block {block_path}: shared-expert gates {gate} (one, no bias, is read)")
        names["shared_gate"] = f"{block_path}.{gate[0]}"
        owned.update(id(p) for p in lins.pop(gate[0]).parameters())
        out["shared_expert_gate"] = True
    if not lins:
        _leftovers(block, block_path, where, owned)
        return out
    parents = {n.rsplit(".", 1)[0] if "." in n else "" for n in lins}
    roles = {r: [n for n in lins if _last(n) in cands] for r, cands in (("gate", GATE), ("up", UP), ("down", DOWN))}
    if len(parents) != 1 or "" in parents or any(len(v) > 1 for v in roles.values()) or not roles["up"] \
            or not roles["down"] or len(lins) != sum(len(v) for v in roles.values()):
        raise MemplanError(f"{where}: MoE block {block_path}: linears it cannot read as one shared-expert MLP: "
                           f"{sorted(lins)}")
    prefix = f"{block_path}.{parents.pop()}"
    up, down = lins[roles["up"][0]], lins[roles["down"][0]]
    if any((m.bias is not None) != bias for m in lins.values()):
        raise MemplanError(f"{where}: MoE block {block_path}: the shared experts' biases differ from the routed ones")
    if bool(roles["gate"]) != gated:  # FFN.gated is one switch for the routed and the shared experts
        raise MemplanError(f"{where}: MoE block {block_path}: the shared experts are {'' if roles['gate'] else 'not '}"
                           f"gated, the routed ones {'' if gated else 'not '}gated")
    names["shared"] = prefix + "."
    for r, found in roles.items():
        names["shared" + r] = f"{block_path}.{found[0]}"
        owned.update(id(p) for p in lins[found[0]].parameters())
    if up.in_features != h or down.out_features != h or down.in_features != up.out_features:
        raise MemplanError(f"{where}: shared experts {prefix}: shapes do not fit hidden size {h}")
    out["shared_intermediate_size"] = up.out_features
    _leftovers(block, block_path, where, owned)
    return out


def _leftovers(block, block_path: str, where: str, owned: set[int]) -> None:
    left = [n for n, p in block.named_parameters() if id(p) not in owned]
    if left:
        raise MemplanError(f"{where}: MoE block {block_path}: parameters it cannot name: {left[:4]}")


def _top_k(text, experts: int, where: str) -> int:
    for key in TOPK_KEYS:
        k = getattr(text, key, None)
        if isinstance(k, int) and not isinstance(k, bool) and k > 0:
            if k > experts:
                raise MemplanError(f"{where}: {key} {k} exceeds the {experts} experts")
            return k
    raise MemplanError(f"{where}: the config names no experts per token ({', '.join(TOPK_KEYS)})")
