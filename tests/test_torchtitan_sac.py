"""torchtitan's op-level SAC, run: a block shaped like torchtitan's llama3 TransformerBlock (wq, wk, wv, sdpa, wo,
then w2(silu(w1(x)) * w3(x)); bias-free, RMSNorm) checkpointed with torchtitan 9dec370's policy (_save_list with
"every second mm" recomputed), on CPU in bf16.  What stays alive after its forward is what the policy saved; it must
be engines/torchtitan.py `op_sac_rows`, byte for byte.

On CPU, sdpa runs `_scaled_dot_product_flash_attention_for_cpu` (output + fp32 logsumexp (b, heads, s), like the
CUDA flash kernel torchtitan's list names), so the test adds it to the list as the CPU stand-in."""
from __future__ import annotations

import gc
import weakref
from collections import defaultdict

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,  # noqa: E402
                                    create_selective_checkpoint_contexts)

B, S, H, HEADS, KV_HEADS, D, FFN = 2, 64, 128, 4, 2, 32, 352


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention_norm = nn.RMSNorm(H)
        self.ffn_norm = nn.RMSNorm(H)
        self.wq, self.wk = nn.Linear(H, HEADS * D, bias=False), nn.Linear(H, KV_HEADS * D, bias=False)
        self.wv, self.wo = nn.Linear(H, KV_HEADS * D, bias=False), nn.Linear(HEADS * D, H, bias=False)
        self.w1, self.w3 = nn.Linear(H, FFN, bias=False), nn.Linear(H, FFN, bias=False)
        self.w2 = nn.Linear(FFN, H, bias=False)

    def forward(self, x):
        a = self.attention_norm(x)
        q, k, v = self.wq(a), self.wk(a), self.wv(a)
        q = q.view(B, S, HEADS, D).transpose(1, 2)
        k = k.view(B, S, KV_HEADS, D).repeat_interleave(HEADS // KV_HEADS, dim=2).transpose(1, 2)
        v = v.view(B, S, KV_HEADS, D).repeat_interleave(HEADS // KV_HEADS, dim=2).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, S, HEADS * D)
        h = x + self.wo(o)
        f = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(f)) * self.w3(f))


SAVE = {torch.ops.aten.mm.default, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default}


def _policy():
    meta = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):  # torchtitan 9dec370 parallelize_llama.py _custom_policy
        mode = "recompute" if ctx.is_recompute else "forward"
        if func == torch.ops.aten.mm.default:
            meta[f"{mode}_mm_count"] += 1
        save = func in SAVE and not (func == torch.ops.aten.mm.default and meta[f"{mode}_mm_count"] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if save else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


class Live(TorchDispatchMode):
    """Storages created under it that are still alive (weakref on the storage, as memplan/measure/tracker.py)."""

    def __init__(self, existing: set[int]):
        super().__init__()
        self.live: dict[int, int] = {}
        self.existing = existing  # data pointers of storages made before (the weights: `t()` views them)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() and \
                    t.untyped_storage().data_ptr() not in self.existing:
                st = t.untyped_storage()
                key = id(st)
                if key not in self.live:
                    self.live[key] = st.nbytes()
                    weakref.finalize(st, self.live.pop, key, None)
        return out


def test_op_sac_rows_are_what_torchtitans_policy_saves():
    from memplan.engines.torchtitan import op_sac_rows
    from memplan.spec.model import FFN as FFNSpec
    from memplan.spec.model import Attention, Embeddings, Head, LayerGroup, LayerSpec, Model

    torch.manual_seed(0)
    block = Block().to(torch.bfloat16)
    x = torch.randn(B, S, H, dtype=torch.bfloat16, requires_grad=True)
    mode = Live({p.untyped_storage().data_ptr() for p in block.parameters()})
    with mode:
        y = checkpoint(block, x, use_reentrant=False, context_fn=_policy)
    gc.collect()
    saved = sum(mode.live.values()) - y.untyped_storage().nbytes()
    layer = LayerSpec(attention=Attention(heads=HEADS, kv_heads=KV_HEADS, head_dim=D),
                      ffn=FFNSpec(intermediate_size=FFN))
    model = Model(hidden_size=H, vocab_size=256, embeddings=Embeddings(), head=Head(),
                  groups=[LayerGroup(count=1, layer=layer)])
    rows = op_sac_rows(layer, model, B, S, 1, 2)
    expected = sum(n for _, n in rows) - B * S * H * 2  # the block input is the caller's tensor, not created here
    assert saved == expected, (saved, rows)
    y.float().sum().backward()  # and the checkpoint recomputes what it did not save
    assert x.grad is not None
