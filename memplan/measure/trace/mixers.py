"""A recurrent or convolutional token mixer read from transformers' module tree (spec/model.py Mixer).

The mixer is found by what it holds, not by model_type: the module around a depthwise causal Conv1d
(groups == channels) of the layer.  Its kind follows from its raw parameters and projections:
- A_log, dt_bias and D beside one input projection: Mamba-2 (Mamba2Mixer, NemotronHMamba2Mixer, BambaMixer,
  FalconH1Mixer, GraniteMoeHybridMambaLayer); Mamba-1's x_proj / dt_proj are refused by name;
- A_log and dt_bias, no D, two input projections (in_proj_qkvz and in_proj_ba): Gated DeltaNet
  (Qwen3NextGatedDeltaNet);
- no raw parameter, an input projection of 3 x hidden: LFM2's short convolution (Lfm2ShortConv).
Its dims come from the shapes (heads = A_log's length, head_v_dim = the gated norm's, channels = the conv's); the
two the shapes cannot separate (key heads x key head dim, groups x state size) from the config, checked against
the shapes.  The reading is accepted only if its count equals the module's parameters.
"""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError

# transformers 5.24 config keys for the dims the shapes cannot separate
KEY_HEADS = ("linear_num_key_heads",)  # Qwen3NextConfig
GROUPS = ("n_groups", "mamba_n_groups")  # Mamba2Config, NemotronHConfig / BambaConfig / FalconH1Config
STATE = ("state_size", "ssm_state_size", "mamba_d_state")


def _depthwise(mod) -> bool:
    from torch import nn

    return isinstance(mod, nn.Conv1d) and mod.groups == mod.in_channels == mod.out_channels


def find_mixer(layer) -> str | None:
    """Path of the module around the layer's depthwise Conv1d, or None (an attention-only layer)."""
    convs = [n for n, m in layer.named_modules() if _depthwise(m)]
    if not convs:
        return None
    if len(convs) > 1:
        raise MemplanError(f"{len(convs)} depthwise convolutions ({', '.join(convs)}); one token mixer per layer "
                           "is read")
    if "." not in convs[0]:
        raise MemplanError(f"the depthwise convolution {convs[0]} sits directly in the layer, with no mixer module")
    return convs[0].rsplit(".", 1)[0]


def read_mixer(layer, path: str, text, h: int) -> tuple[Any, dict[str, str], set[int]]:
    """(Mixer, module names by role, ids of the parameters it accounts for) of the mixer module at `path`."""
    from torch import nn

    from memplan.spec.model import Mixer

    mod = layer.get_submodule(path)
    raw = dict(mod.named_parameters(recurse=False))
    lins = {n: m for n, m in mod.named_modules() if isinstance(m, nn.Linear)}
    conv_name = next(n for n, m in mod.named_modules() if _depthwise(m))
    conv = mod.get_submodule(conv_name)
    if {"x_proj", "dt_proj"} & set(lins):
        raise MemplanError(f"mixer {path} is Mamba-1 (x_proj, dt_proj): memplan reads Mamba-2, Gated DeltaNet and "
                           "short convolutions")
    # the output projection: the one linear back to the hidden size (named *out* where in_proj is h -> h too)
    outs = [n for n in lins if lins[n].out_features == h]
    if len(outs) > 1:
        outs = [n for n in outs if "out" in n.rsplit(".", 1)[-1]]
    ins = [n for n in lins if lins[n].in_features == h and n not in outs]
    if len(outs) != 1:
        raise MemplanError(f"mixer {path}: cannot name its output projection among {sorted(lins)}")
    norms = [n for n, m in mod.named_modules() if "norm" in type(m).__name__.lower() and hasattr(m, "weight")]
    out = lins[outs[0]]
    common = dict(conv_kernel=conv.kernel_size[0], conv_bias=conv.bias is not None,
                  proj_bias=out.bias is not None)
    names = {"mixer_conv": f"{path}.{conv_name}", "mixer_out": f"{path}.{outs[0]}"}
    if "A_log" in raw and "D" in raw:
        spec = _mamba2(mod, path, text, raw, conv, out, norms, common)
        names.update(mixer_in=f"{path}.{ins[0]}", mixer_D=f"{path}.D")
        if len(ins) != 1:
            raise MemplanError(f"mixer {path}: Mamba-2 has one input projection, found {ins}")
    elif "A_log" in raw:
        spec = _gated_deltanet(mod, path, text, raw, conv, out, norms, ins, lins, common)
        names.update({role: f"{path}.{n}" for role, n in _gdn_roles(ins, lins, spec, path).items()})
    elif not raw and len(ins) == 1 and lins[ins[0]].out_features == 3 * h:
        spec = Mixer(kind="short_conv", **common)
        names["mixer_in"] = f"{path}.{ins[0]}"
    else:
        raise MemplanError(f"mixer {path}: a depthwise convolution with {sorted(raw) or 'no raw parameters'} and "
                           f"projections {sorted(lins)}: not a Mamba-2, Gated DeltaNet or short-conv mixer")
    if "A_log" in raw:
        names.update(mixer_A_log=f"{path}.A_log", mixer_dt_bias=f"{path}.dt_bias")
    if norms:
        names["mixer_norm"] = f"{path}.{norms[0]}"
    have = sum(p.numel() for p in mod.parameters())
    want = sum(x.params for x in spec.linears(h, names)) + sum(v.size for v in spec.vectors(h, names))
    if have != want:
        raise MemplanError(f"mixer {path} ({spec.describe()}): its modules hold {have:,} parameters, the reading "
                           f"counts {want:,}")
    return spec, names, {id(p) for p in mod.parameters()}


def _config_int(text, keys: tuple[str, ...], path: str, what: str) -> int:
    for key in keys:
        v = getattr(text, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    raise MemplanError(f"mixer {path}: the config names no {what} ({', '.join(keys)})")


def _one_norm(norms: list[str], path: str, optional: bool = False) -> None:
    if len(norms) > 1 or not norms and not optional:
        raise MemplanError(f"mixer {path}: {len(norms)} gated norms ({norms}); one is read")


def _mamba2(mod, path: str, text, raw: dict, conv, out, norms: list[str], common: dict):
    from memplan.spec.model import Mixer

    _one_norm(norms, path, optional=True)  # FalconH1Mixer: a norm only with mamba_rms_norm
    heads, inner = raw["A_log"].numel(), out.in_features
    channels = conv.in_channels
    groups = _config_int(text, GROUPS, path, "B/C groups")
    state = (channels - inner) // (2 * groups)
    want = _config_int(text, STATE, path, "state size")
    if inner % heads or 2 * groups * state != channels - inner or state != want:
        raise MemplanError(f"mixer {path}: conv channels {channels}, inner {inner}, {heads} heads and {groups} groups "
                           f"do not fit state size {want}")
    # Mamba2Mixer / BambaMixer / FalconH1Mixer .chunk_size: torch_forward pads the sequence to whole chunks
    chunk = getattr(mod, "chunk_size", 0)
    return Mixer(kind="mamba2", heads=heads, key_heads=groups, key_dim=state, value_dim=inner // heads,
                 gated_norm=bool(norms), chunk_size=chunk if isinstance(chunk, int) else 0, **common)


def _gated_deltanet(mod, path: str, text, raw: dict, conv, out, norms: list[str], ins: list[str], lins: dict,
                    common: dict):
    from memplan.spec.model import Mixer

    _one_norm(norms, path)
    if len(ins) not in (2, 4):
        raise MemplanError(f"mixer {path}: Gated DeltaNet has two input projections (qkvz, ba) or four (qkv, z, b, "
                           f"a), found {ins}")
    heads = raw["A_log"].numel()
    dv = mod.get_submodule(norms[0]).weight.numel()
    key_heads = _config_int(text, KEY_HEADS, path, "key heads")
    key = (conv.in_channels - heads * dv) // 2
    if key % key_heads or 2 * key + heads * dv != conv.in_channels or out.in_features != heads * dv:
        raise MemplanError(f"mixer {path}: conv channels {conv.in_channels}, {heads} value heads of {dv} and "
                           f"{key_heads} key heads do not fit")
    # torch_chunk_gated_delta_rule(chunk_size=64): Qwen3NextGatedDeltaNet.forward passes no chunk_size
    return Mixer(kind="gated_deltanet", heads=heads, key_heads=key_heads, key_dim=key // key_heads, value_dim=dv,
                 chunk_size=64, split_projections=len(ins) == 4, **common)


def _gdn_roles(ins: list[str], lins: dict, spec, path: str) -> dict[str, str]:
    """role -> linear: the widest input projection is q,k,v(,z); two: the other is b,a; four: the one of the value
    width is z, and b and a are told apart by their names (both heads wide)."""
    big = max(ins, key=lambda n: lins[n].out_features)
    rest = [n for n in ins if n != big]
    if len(rest) == 1:
        return {"mixer_in": big, "mixer_ba": rest[0]}
    z = [n for n in rest if lins[n].out_features == spec.heads * spec.value_dim]
    b = [n for n in rest if n.rsplit("_", 1)[-1] == "b"]
    a = [n for n in rest if n.rsplit("_", 1)[-1] == "a"]
    if len(z) != 1 or len(b) != 1 or len(a) != 1:
        raise MemplanError(f"mixer {path}: cannot name the z, b and a projections among {rest}")
    return {"mixer_in": big, "mixer_z": z[0], "mixer_b": b[0], "mixer_a": a[0]}
