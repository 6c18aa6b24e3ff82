"""The walk: one layer (or the embedding, or the head) for one micro-batch on one GPU, as the kernels it runs.

Every GEMM with its real M, N, K for the micro-batch and this rank's tensor/expert shard (`Linear.shard`, the one
TP split): forward Y = X W; backward as two GEMMs, the data gradient dX = dY W^T (M = tokens, N = in, K = out) and
the weight gradient dW = X^T dY (M = in, N = out, K = tokens; accumulated into fp32 when the engine does that
inside the GEMM).  Attention as its kernel does it: `eager` (the scores go through HBM: Q K^T as a batched GEMM,
softmax, dropout, P V; Megatron-LM 2021/2022 ran this, FlashAttention appeared after) or `flash` (one fused
kernel, causal half of the FLOPs, no s x s traffic; backward 2.5x the forward FLOPs, FlashAttention-2 sec. 3.2).
The memory-bound ops (norms, rotary, activations, dropout, residual adds, bias gradients, copies, the MoE token
permutation) with the bytes they read and write.  Collectives as they occur: Megatron TP (all-reduce after the
row-parallel layers, or with sequence parallelism all-gather before the column-parallel and reduce-scatter
after the row-parallel ones: Shoeybi et al. 2019 fig. 4, Korthikanti et al. 2022 sec. 4.2), the context-parallel
ring exchange of K and V (Liu et al. 2023, ring attention), the expert-parallel all-to-all (dispatch and combine).

Each op says what it may hide under (`under`: a tag of GEMMs in the same phase); perf/cost.py prices the ops.
Sizes follow the Megatron layout: activations [s/cp, b, h] per rank, sequence-sharded by tp under SP.
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.perf.flops import attention_keys
from memplan.spec.execution import ExecutionProfile
from memplan.spec.model import LayerSpec, Linear, Model


@dataclass(slots=True)
class Op:
    name: str
    kind: str                 # gemm | attention | flash | memory | comm
    category: str = ""        # gemm | attention | memory (what the time counts as); comm: tp | cp | ep
    M: float = 0.0
    N: float = 0.0
    K: float = 0.0
    batch: float = 1.0
    c_bytes: float | None = None
    c_read: bool = False
    nbytes: float = 0.0       # memory: bytes moved; comm: the tensor's full size
    flops: float = 0.0        # flash: FLOPs executed
    collective: str = ""      # comm: all_reduce | all_gather | reduce_scatter | all_to_all
    tag: str = ""             # gemm: a group name comms may hide under
    under: str = ""           # comm: the tag it hides under ("" = exposed)
    route: tuple = ()         # EP dispatch/combine under DeepEP: (top-k, routed experts): one copy per remote node

    @property
    def gemm_flops(self) -> float:
        return 2.0 * self.M * self.N * self.K * self.batch if self.kind in ("gemm", "attention") else self.flops


@dataclass(frozen=True)
class Context:
    """Everything about one micro-batch on one rank that changes the ops (a cache key)."""

    micro_batch: int
    seq: int
    tp: int = 1
    cp: int = 1
    ep: int = 1
    etp: int = 1
    sp: bool = False
    attention: str = "flash"    # eager | flash
    elem: float = 2.0           # bytes per activation element (16-bit)
    gemm_elem: float = 2.0      # bytes per GEMM input element (fp8: 1)
    tp_comm: str = "blocking"   # the execution profile's
    fused_wgrad: bool = False   # weight gradients accumulate into fp32 inside the GEMM
    frozen: bool = False        # LoRA: the base weights take no gradient (no weight-gradient GEMMs)
    ep_dispatch: str = "alltoall"  # the execution profile's MoE dispatcher
    ep_overlap: bool = False    # the MoE all-to-all runs under another micro-batch's compute

    @property
    def tokens(self) -> int:
        """Tokens of the micro-batch on this rank's context-parallel shard (GEMMs see all of them)."""
        return self.micro_batch * self.seq // self.cp

    @property
    def sharded_tokens(self) -> float:
        """Tokens a norm, dropout or residual sees: sharded over TP under sequence parallelism."""
        return self.tokens / self.tp if self.sp else self.tokens


def make_context(L, seq: int, attention: str, ex: ExecutionProfile, elem: float = 2.0,
                 gemm_elem: float = 2.0, frozen: bool = False) -> Context:
    """The walk's context for a Layout's micro-batch on one rank."""
    return Context(micro_batch=L.micro_batch, seq=seq, tp=L.tp, cp=L.cp, ep=L.ep, etp=L.expert_tp,
                   sp=L.sequence_parallel, attention=attention, elem=elem, gemm_elem=gemm_elem, tp_comm=ex.tp_comm,
                   fused_wgrad=ex.grad_accumulation == "in-gemm-fp32", frozen=frozen, ep_dispatch=ex.ep_dispatch,
                   ep_overlap=ex.ep_overlap != "none")


@dataclass(frozen=True)
class Phases:
    fwd: list[Op]
    bwd: list[Op]
    recompute: list[Op]


def _gemm(name: str, M: float, N: float, K: float, ctx: Context, tag: str = "", batch: float = 1,
          c_bytes: float | None = None, c_read: bool = False) -> Op:
    return Op(name, "gemm", "gemm", M=M, N=N, K=K, batch=batch, c_bytes=c_bytes, c_read=c_read, tag=tag)


def _mem(name: str, nbytes: float, category: str = "memory") -> Op:
    return Op(name, "memory", category, nbytes=nbytes)


# `under` of a collective that may hide under the whole phase's compute (another micro-batch's, running alongside)
PHASE = "@phase"


def _comm(name: str, collective: str, nbytes: float, group: str, under: str = "", route: tuple = ()) -> Op:
    return Op(name, "comm", group, collective=collective, nbytes=nbytes, under=under, route=route)


def _shard(lin: Linear, ctx: Context) -> tuple[int, int, int]:
    """(rows = out features, cols = in features, experts) of this linear on this rank."""
    if lin.split == "replicated":
        return lin.out_features, lin.in_features, lin.count
    sh = lin.shard(ctx.tp, ctx.ep, ctx.etp)
    return sh.rows, sh.cols, sh.count


class LayerWalk:
    """The ops of one transformer layer for one micro-batch on one rank."""

    def __init__(self, model: Model, layer: LayerSpec, ctx: Context, ex: ExecutionProfile):
        self.m, self.L, self.ctx, self.ex = model, layer, ctx, ex
        self.h = model.hidden_size
        self.lins = model.linears(layer)

    # ---- attention -----------------------------------------------------------------------------------------
    def _core_forward(self) -> list[Op]:
        a, ctx, E = self.L.attention, self.ctx, self.ctx.elem
        heads = max(1, a.heads // ctx.tp)
        kv_heads = max(1, a.kv_heads // ctx.tp) if a.kv_heads >= ctx.tp else 1
        sq = ctx.seq // ctx.cp            # queries on this rank
        sk = ctx.seq                      # keys (all of them, passed around the ring under CP)
        b = ctx.micro_batch
        dqk, dv = a.head_dim, a.value_dim
        if ctx.attention == "flash":
            keys = attention_keys(self.L, ctx.seq, causal=True)
            flops = 2.0 * b * heads * sq * keys * (dqk + dv)
            return [Op("flash attention", "flash", "attention", flops=flops)]
        ops = []
        if kv_heads < heads:  # eager GQA: repeat_kv copies K and V to every query head
            ops.append(_mem("repeat K/V to the query heads", b * sk * (heads - kv_heads) * (dqk + dv) * 2 * E,
                            "attention"))
        batch = b * heads
        ss = batch * sq * sk
        ops.append(Op("scores Q K^T", "attention", "attention", M=sq, N=sk, K=dqk, batch=batch))
        if a.softcap:
            ops.append(_mem("score soft-capping (divide, tanh, multiply)", 3 * ss * 2 * E, "attention"))
        if self.ex.fused_softmax:
            # Megatron's scaled_upper_triang_masked_softmax: reads the lower triangle, writes the full rows
            ops.append(_mem("fused scale-mask-softmax", ss * (E / 2 + E) if a.causal else ss * 2 * E, "attention"))
        else:
            # eager: add the mask (read, write), softmax in fp32 (read 16-bit, write fp32), cast back
            ops.append(_mem("mask add, softmax (fp32), cast", ss * (3 * E + (E + 4) + (4 + E)), "attention"))
        if a.dropout > 0:
            ops.append(_mem("attention dropout (read, write, uint8 mask)", ss * (2 * E + 1), "attention"))
        ops.append(Op("context P V", "attention", "attention", M=sq, N=dv, K=sk, batch=batch))
        return ops

    def _core_backward(self) -> list[Op]:
        a, ctx, E = self.L.attention, self.ctx, self.ctx.elem
        heads = max(1, a.heads // ctx.tp)
        sq, sk, b = ctx.seq // ctx.cp, ctx.seq, ctx.micro_batch
        dqk, dv = a.head_dim, a.value_dim
        if ctx.attention == "flash":
            keys = attention_keys(self.L, ctx.seq, causal=True)
            flops = 2.5 * 2.0 * b * heads * sq * keys * (dqk + dv)  # FA2: 5 matmuls incl. recomputing P
            return [Op("flash attention backward", "flash", "attention", flops=flops)]
        batch = b * heads
        ss = batch * sq * sk
        ops = [Op("dP = dO V^T", "attention", "attention", M=sq, N=sk, K=dv, batch=batch),
               Op("dV = P^T dO", "attention", "attention", M=sk, N=dv, K=sq, batch=batch)]
        if a.dropout > 0:
            ops.append(_mem("attention dropout backward", ss * (2 * E + 1), "attention"))
        if self.ex.fused_softmax:
            ops.append(_mem("softmax backward (fused)", ss * (E / 2 + E / 2 + E) if a.causal else ss * 3 * E,
                            "attention"))
        else:
            ops.append(_mem("softmax backward (fp32)", ss * (E + 4 + 4 + E), "attention"))
        if a.softcap:
            ops.append(_mem("soft-capping backward", 2 * ss * 3 * E, "attention"))
        ops += [Op("dQ = dS K", "attention", "attention", M=sq, N=dqk, K=sk, batch=batch),
                Op("dK = dS^T Q", "attention", "attention", M=sk, N=dqk, K=sq, batch=batch)]
        return ops

    def _cp_exchange(self, backward: bool) -> list[Op]:
        """Ring attention: each rank passes its K and V shard around the ring (cp-1 steps), under the core
        (the backward also returns dK, dV)."""
        ctx = self.ctx
        if ctx.cp <= 1:
            return []
        a = self.L.attention
        kv_heads = max(1, a.kv_heads // ctx.tp) if a.kv_heads >= ctx.tp else 1
        kv = ctx.micro_batch * ctx.seq * kv_heads * (a.head_dim + a.value_dim) * ctx.elem  # all K/V of the seq
        return [_comm("CP ring K/V exchange" + (" + dK/dV" if backward else ""), "all_gather",
                      kv * (2 if backward else 1), "cp", under="core")]

    # ---- helpers -------------------------------------------------------------------------------------------
    def _tp_in(self, name: str, tag: str) -> list[Op]:
        """Before a column-parallel block: SP all-gathers the sequence-sharded input (forward)."""
        ctx = self.ctx
        if ctx.tp <= 1 or not ctx.sp:
            return []
        under = tag if ctx.tp_comm == "overlapped" else ""
        return [_comm(f"{name} all-gather (SP)", "all_gather", ctx.tokens * self.h * ctx.elem, "tp", under)]

    def _tp_out(self, name: str, tag: str) -> list[Op]:
        """After a row-parallel block: all-reduce, or reduce-scatter under SP (forward)."""
        ctx = self.ctx
        if ctx.tp <= 1:
            return []
        size = ctx.tokens * self.h * ctx.elem
        if ctx.sp:
            under = tag if ctx.tp_comm == "overlapped" else ""
            return [_comm(f"{name} reduce-scatter (SP)", "reduce_scatter", size, "tp", under)]
        return [_comm(f"{name} all-reduce", "all_reduce", size, "tp")]

    def _residual(self, name: str) -> list[Op]:
        ctx, E, h = self.ctx, self.ctx.elem, self.h
        Tn = ctx.sharded_tokens
        if self.L.dropout > 0:
            if self.ex.fused_bias_dropout_add:
                return [_mem(f"{name} bias-dropout-add (x, residual in; out, mask)", Tn * h * (3 * E + 1))]
            return [_mem(f"{name} dropout", Tn * h * (2 * E + 1)), _mem(f"{name} residual add", Tn * h * 3 * E)]
        return [_mem(f"{name} residual add", Tn * h * 3 * E)]

    def _norm(self, name: str, width: float | None = None, tokens: float | None = None) -> Op:
        t = self.ctx.sharded_tokens if tokens is None else tokens
        return _mem(f"{name} (read x, write y)", t * (width or self.h) * 2 * self.ctx.elem)

    def _linears(self, roles: set[str], routed: bool | None = None, shared: bool | None = None) -> list[Linear]:
        out = []
        for lin in self.lins:
            if lin.role not in roles:
                continue
            if routed is not None and lin.routed != routed:
                continue
            if shared is not None and lin.shared != shared:
                continue
            out.append(lin)
        return out

    # ---- the blocks ------------------------------------------------------------------------------------------
    def attention_forward(self) -> list[Op]:
        a, ctx, E, T = self.L.attention, self.ctx, self.ctx.elem, self.ctx.tokens
        ops: list[Op] = [self._norm("attention norm")] if self.L.norm_place != "post" else []
        ops += self._tp_in("attention input", "attn_in")
        in_lins = [x for x in self.lins if x.is_attention and x.role != "o"]
        out_q = out_k = 0
        for lin in in_lins:
            rows, cols, _ = _shard(lin, ctx)
            ops.append(_gemm(f"{lin.name} ({lin.role})", T, rows, cols, ctx, tag="attn_in"))
            if lin.bias and self.ex.separate_qkv_bias_add and lin.split != "replicated":
                ops.append(_mem(f"{lin.name} bias add", T * rows * 2 * E))
            if lin.role in ("q", "q_b"):
                out_q += rows
            elif lin.role in ("k",):
                out_k += rows
            elif lin.role == "qkv":
                heads = a.heads // ctx.tp if a.heads >= ctx.tp else 1
                out_q += heads * a.head_dim
                out_k += rows - heads * a.head_dim - (rows - heads * a.head_dim) // 2
        if a.mla:
            if a.q_lora_rank:
                ops.append(self._norm("q_a_layernorm", a.q_lora_rank, T))
            ops.append(self._norm("kv_a_layernorm", a.kv_lora_rank, T))
            out_k = (a.heads // ctx.tp) * a.qk_rope_head_dim
        if a.qk_norm != "none":
            ops.append(_mem("q/k norm", T * (out_q + out_k) * 2 * E))
        if a.position == "rotary":
            frac = a.qk_rope_head_dim / a.head_dim if a.mla else a.rotary_fraction
            ops.append(_mem("rotary embedding on q and k", T * (out_q + out_k) * frac * 2 * E))
        core = self._core_forward()
        for op in core:
            op.tag = op.tag or "core"
        ops += core + self._cp_exchange(False)
        heads = a.heads // ctx.tp if a.heads >= ctx.tp else 1
        if self.ex.context_copy:
            ops.append(_mem("context permute/contiguous copy", T * heads * a.value_dim * 2 * E))
        for lin in self._linears({"o"}):
            rows, cols, _ = _shard(lin, ctx)
            ops.append(_gemm(f"{lin.name} (o)", T, rows, cols, ctx, tag="attn_out"))
        ops += self._tp_out("attention output", "attn_out")
        ops += self._residual("attention")
        if self.L.norm_place in ("post", "sandwich", "sublayer-post"):
            ops.append(self._norm("attention post-norm"))
        return ops

    def ffn_forward(self) -> list[Op]:
        f, ctx, E, T = self.L.ffn, self.ctx, self.ctx.elem, self.ctx.tokens
        ops: list[Op] = [self._norm("FFN norm")] if self.L.norm_place not in ("post", "shared") else []
        ops += self._tp_in("FFN input", "ffn_in")
        if f.moe:
            ops += self._moe_forward()
        else:
            ops += self._mlp_forward(self._linears({"gate", "up", "gate_up", "down"}), T, "ffn")
        ops += self._tp_out("FFN output", "ffn_out")
        ops += self._residual("FFN")
        if self.L.norm_place in ("post", "sandwich", "sublayer-post"):
            ops.append(self._norm("FFN post-norm"))
        return ops

    def _activation_bytes(self, tokens: float, width: float, backward: bool) -> float:
        E, f = self.ctx.elem, self.L.ffn
        if backward:
            if f.gated:  # act(gate) * up: read gate, up, dy; write dgate, dup
                return tokens * width * 5 * E
            return tokens * width * (4 * E if self.ex.fused_bias_activation else 3 * E)
        if f.gated:
            return tokens * width * (3 * E if self.ex.fused_bias_activation else 5 * E)
        return tokens * width * 2 * E

    def _mlp_forward(self, lins: list[Linear], tokens: float, tag: str, batch: float = 1) -> list[Op]:
        ops, width = [], 0.0
        for lin in lins:
            rows, cols, _ = _shard(lin, self.ctx)
            if lin.role == "down":
                ops.append(Op("activation", "memory", "memory", nbytes=self._activation_bytes(tokens * batch, width,
                                                                                             False)))
                ops.append(_gemm(f"{lin.name} (down)", tokens, rows, cols, self.ctx, tag=f"{tag}_out", batch=batch))
            else:
                ops.append(_gemm(f"{lin.name} ({lin.role})", tokens, rows, cols, self.ctx, tag=f"{tag}_in",
                                 batch=batch))
                width = rows if lin.role != "gate_up" else rows / 2
        return ops

    def _expert_tokens(self) -> tuple[float, float]:
        """(tokens per local expert GEMM, local experts) under balanced routing: a stage's expert work spreads
        evenly over its ranks; each expert's matrices are split over the expert-TP group."""
        f, ctx = self.L.ffn, self.ctx
        local = max(1, -(-f.experts // ctx.ep))
        per_token = f.experts if f.dispatch == "all" else f.top_k
        slots = ctx.tokens * per_token * ctx.etp / ctx.tp
        return slots / local, local

    def _moe_forward(self) -> list[Op]:
        f, ctx, E, h = self.L.ffn, self.ctx, self.ctx.elem, self.h
        Tn = ctx.sharded_tokens
        ops: list[Op] = []
        for lin in self._linears({"router"}):
            ops.append(_gemm(f"{lin.name} (router)", Tn, lin.out_features, lin.in_features, ctx, tag="router"))
        ops.append(_mem("router softmax / top-k", Tn * f.experts * 4 * 2))
        per_expert, local = self._expert_tokens()
        slots = per_expert * local
        ops.append(_mem("token permutation to expert order", slots * h * 2 * E))
        # each rank sends the expert copies of the tokens it owns (its sequence shard under SP): k per token
        sent = ctx.tokens / ctx.tp * (f.experts if f.dispatch == "all" else f.top_k) * h * E
        route = (f.top_k, f.experts) if ctx.ep_dispatch == "deepep" and f.dispatch != "all" else ()
        under = PHASE if ctx.ep_overlap else ""
        if ctx.ep > 1:
            ops.append(_comm("EP all-to-all dispatch", "all_to_all", sent, "ep", under, route=route))
        ops += self._mlp_forward(self._linears({"gate", "up", "gate_up", "down"}, routed=True), per_expert, "expert",
                                 batch=local)
        if ctx.ep > 1:
            ops.append(_comm("EP all-to-all combine", "all_to_all", sent, "ep", under, route=route))
        ops.append(_mem("un-permute and weight by router score", slots * h * 3 * E))
        shared = self._linears({"gate", "up", "gate_up", "down"}, routed=False, shared=True)
        if shared:
            ops += self._mlp_forward(shared, ctx.tokens, "shared")
        for lin in self._linears({"shared_gate"}):
            ops.append(_gemm(f"{lin.name} (shared gate)", Tn, 1, lin.in_features, ctx))
        return ops

    # ---- backward ----------------------------------------------------------------------------------------------
    def backward(self, fwd: list[Op]) -> list[Op]:
        """Every forward GEMM as a data-gradient and a weight-gradient GEMM; the memory-bound ops' backward;
        TP collectives of the backward (hidden under the weight-gradient GEMMs when the engine does that)."""
        ctx, E, h = self.ctx, self.ctx.elem, self.h
        Tn = ctx.sharded_tokens
        ops: list[Op] = []
        for op in fwd:
            if op.kind != "gemm":
                continue
            is_router = op.tag == "router"
            ops.append(_gemm(f"{op.name} dgrad", op.M, op.K, op.N, ctx, tag=f"{op.tag}_dgrad", batch=op.batch))
            if ctx.frozen:
                continue  # adapters' own GEMMs are rank-r: left out
            wgrad_c = 4.0 if ctx.fused_wgrad and not is_router else None
            ops.append(_gemm(f"{op.name} wgrad", op.K, op.N, op.M, ctx, tag=f"{op.tag}_wgrad", batch=op.batch,
                             c_bytes=wgrad_c, c_read=bool(ctx.fused_wgrad and not is_router)))
        ops += self._core_backward()
        for op in ops:
            if op.category == "attention" and not op.tag:
                op.tag = "core"
        ops += self._cp_exchange(True)
        if ctx.tp > 1:
            size = ctx.tokens * h * E
            for block in ("attn", "ffn"):
                # column-parallel input gradient: all-reduce (reduce-scatter under SP); async under the wgrad
                hide = ctx.tp_comm in ("async-backward", "overlapped")
                if ctx.sp:
                    ops.append(_comm(f"{block} input re-gather (SP)", "all_gather", size, "tp",
                                     f"{block}_in_dgrad" if hide else ""))
                    ops.append(_comm(f"{block} input-grad reduce-scatter (SP)", "reduce_scatter", size, "tp",
                                     f"{block}_in_wgrad" if hide else ""))
                    # row-parallel output gradient all-gather (g's backward)
                    ops.append(_comm(f"{block} output-grad all-gather (SP)", "all_gather", size, "tp",
                                     f"{block}_out_dgrad" if ctx.tp_comm == "overlapped" else ""))
                else:
                    ops.append(_comm(f"{block} input-grad all-reduce", "all_reduce", size, "tp",
                                     f"{block}_in_wgrad" if hide else ""))
        # memory-bound backward
        norms = self.L.norms
        ops.append(_mem("norm backward (x, dy in; dx out; weight grads)", norms * Tn * h * 5 * E))
        drop = 2 if self.L.dropout > 0 else 0
        if drop:
            ops.append(_mem("residual dropout backward", drop * Tn * h * (2 * E + 1)))
        ops.append(_mem("residual-gradient sums", 2 * Tn * h * 3 * E))
        row_bias = [x for x in self.lins if x.split == "row" and x.bias and not x.routed]
        if row_bias:
            ops.append(_mem("row-parallel bias gradients", len(row_bias) * Tn * h * E))
        a, f = self.L.attention, self.L.ffn
        for op in fwd:
            if op.name == "activation":
                width = op.nbytes / (2 * E if not f.gated else (3 * E if self.ex.fused_bias_activation else 5 * E))
                ops.append(_mem("activation backward", self._activation_bytes(1, width, True)))
        col_bias = sum(_shard(x, ctx)[0] for x in self.lins if x.is_attention and x.split == "column" and x.bias)
        if col_bias:
            ops.append(_mem("QKV bias gradient", ctx.tokens * col_bias * E))
        heads = a.heads // ctx.tp if a.heads >= ctx.tp else 1
        if self.ex.context_copy:
            ops.append(_mem("context permute backward", ctx.tokens * heads * a.value_dim * 2 * E))
        for op in fwd:
            if op.name.startswith(("rotary", "q/k norm", "q_a_layernorm", "kv_a_layernorm", "router softmax")):
                ops.append(_mem(op.name + " backward", op.nbytes * 1.5))
            elif op.name.startswith(("token permutation", "un-permute")):
                ops.append(_mem(op.name + " backward", op.nbytes))
            elif op.kind == "comm" and op.category == "ep":
                ops.append(_comm(op.name + " (backward)", "all_to_all", op.nbytes, "ep", op.under, route=op.route))
        return ops

    def phases(self, recompute: str) -> Phases:
        fwd = self.attention_forward() + self.ffn_forward()
        bwd = self.backward(fwd)
        if self.ctx.gemm_elem < 2.0:
            fwd, bwd = fwd + fp8_casts(fwd, "forward"), bwd + fp8_casts(bwd, "backward")
        if recompute == "full":
            rec = [Op(o.name, o.kind, o.category, o.M, o.N, o.K, o.batch, o.c_bytes, o.c_read, o.nbytes, o.flops,
                      o.collective, o.tag, o.under, o.route) for o in fwd]
        elif recompute == "selective":
            # Korthikanti et al. 2022 sec. 4.2: only the attention core (scores, softmax, dropout, P V) again
            rec = [o for o in fwd if o.category == "attention"]
        elif recompute == "selective-op":
            # torchtitan's op-level SAC (engines/torchtitan.py): attention and the odd-numbered mms are saved, the
            # even-numbered mms, the memory-bound ops and the all-gathers run again (reduce-scatters are saved)
            rec, mms = [], 0
            for o in fwd:
                if o.kind == "gemm":
                    mms += 1
                    if mms % 2 == 0:
                        rec.append(o)
                elif o.kind == "memory" or (o.kind == "comm" and o.collective == "all_gather"):
                    rec.append(o)
        else:
            rec = []
        return Phases(fwd, bwd, rec)


# FP8 as Transformer Engine runs it (transformer_engine/pytorch/module/{linear,layernorm_linear,layernorm_mlp}.py):
# each FP8 linear needs its input quantized in the forward and its output gradient in the backward, as a row-wise
# FP8 copy for this GEMM and a column-wise (transposed) one for the weight-gradient GEMM; per-tensor current scaling
# (NeMo / Megatron-Bridge "fp8cs") first reads the tensor for its amax.  Forward: the row-wise cast is fused into
# the kernel that produces the input (LayerNormLinear / LayerNormMLP's norm and activation), leaving the amax read
# (2 bytes per element) and the transposed copy (1) = 3 bytes; backward: the incoming BF16 gradient is read for its
# amax, read again and written twice (cast-transpose) = 2 + 2 + 1 + 1 = 6 bytes.  The amax all-reduce over TP is a
# few bytes (latency, left out); weights are cast once per step (`is_first_microbatch`), left out; the router
# and the attention core stay BF16 unless FP8 attention is named.
FP8_CAST_BYTES_FORWARD = 2.0 + 1.0
FP8_CAST_BYTES_BACKWARD = 2.0 + 2.0 + 1.0 + 1.0


def fp8_casts(ops: list[Op], phase: str) -> list[Op]:
    """Memory-bound quantize ops for the FP8 GEMMs of a phase: the forward GEMMs' inputs (M x K), the backward
    data-gradient GEMMs' incoming gradients (M x K of the dgrad: the forward's M x N)."""
    out: list[Op] = []
    each = FP8_CAST_BYTES_FORWARD if phase == "forward" else FP8_CAST_BYTES_BACKWARD
    for op in ops:
        if op.kind != "gemm" or op.tag.startswith("router"):
            continue
        if phase == "forward" or op.name.endswith("dgrad"):
            out.append(Op(f"FP8 amax + cast-transpose ({op.name})", "memory", "memory",
                          nbytes=op.M * op.K * op.batch * each))
    return out


# ---- embeddings and the head --------------------------------------------------------------------------------
def embedding_phases(m: Model, ctx: Context) -> Phases:
    """First stage: word (+ position) lookup, vocab-parallel masking and all-reduce, dropout; backward writes a
    dense V/tp x h gradient (zero, scatter-add)."""
    E, h, T, t, V = ctx.elem, m.hidden_size, ctx.tokens, ctx.tp, m.vocab_size
    fwd = [_mem("word embedding gather" + (" + out-of-shard zeroing" if t > 1 else ""),
                T * h * 2 * E * (2 if t > 1 else 1))]
    if m.embeddings.learned_positions:
        fwd += [_mem("position embedding gather", T * h * 2 * E), _mem("embeddings add", T * h * 3 * E)]
    if m.embeddings.scale:
        fwd.append(_mem("embedding scale by sqrt(h)", T * h * 2 * E))
    if m.embeddings.norm:
        fwd.append(_mem("embedding norm", T * h * 2 * E))
    if m.embeddings.dropout > 0:
        fwd.append(_mem("embedding dropout", T * h * (3 * E + 1)))
    if t > 1:
        fwd.append(_comm("vocab-parallel embedding all-reduce", "all_reduce", T * h * E, "tp"))
    bwd = []
    if m.embeddings.dropout > 0:
        bwd.append(_mem("embedding dropout backward", T * h * (2 * E + 1)))
    bwd += [_mem("embedding gradient zero", V / t * h * E), _mem("embedding gradient scatter-add", T * h * 2 * E)]
    return Phases(fwd, bwd, [])


def head_phases(m: Model, ctx: Context, ex: ExecutionProfile) -> Phases:
    """Last stage: final norm, the logits GEMM (vocab-parallel), the loss on [tokens, V/tp] logits, their
    backward; TP: the logits input's gradient all-reduce and the loss's three small all-reduces (max, target
    logit, sum of exponentials: megatron/mpu/cross_entropy.py)."""
    if not m.head.lm_head:
        return Phases([], [], [])
    E, h, T, t, V = ctx.elem, m.hidden_size, ctx.tokens, ctx.tp, m.vocab_size
    Vt = -(-V // t)
    Tn = ctx.sharded_tokens
    fwd: list[Op] = []
    if m.head.final_norm:
        fwd.append(_mem("final norm", Tn * h * 2 * E))
    if t > 1 and ctx.sp:
        fwd.append(_comm("LM head input all-gather (SP)", "all_gather", T * h * E, "tp"))
    logits = _gemm("LM head logits", T, Vt, h, ctx, tag="head")
    fwd.append(logits)
    if m.head.softcap:
        fwd.append(_mem("logit soft-capping", 3 * T * Vt * 2 * E))
    fwd.append(_mem("loss (forward + backward)", T * Vt * ex.loss_bytes_per_logit.value))
    if t > 1:
        fwd += [_comm(f"loss all-reduce ({what})", "all_reduce", T * 4, "tp") for what in ("max", "target", "sum")]
    bwd = [_gemm("LM head dgrad", T, h, Vt, ctx, tag="head_dgrad")]
    if not ctx.frozen:
        bwd.append(_gemm("LM head wgrad", h, Vt, T, ctx, tag="head_wgrad", c_bytes=4.0 if ctx.fused_wgrad else None,
                         c_read=ctx.fused_wgrad))
    if m.head.softcap:
        bwd.append(_mem("logit soft-capping backward", 2 * T * Vt * 3 * E))
    if m.head.final_norm:
        bwd.append(_mem("final norm backward", Tn * h * 5 * E))
    if t > 1:
        bwd.append(_comm("LM head input-grad " + ("reduce-scatter (SP)" if ctx.sp else "all-reduce"),
                         "reduce_scatter" if ctx.sp else "all_reduce", T * h * E, "tp"))
    return Phases(fwd, bwd, [])
