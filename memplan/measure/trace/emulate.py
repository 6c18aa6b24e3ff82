"""What a CUDA step keeps where PyTorch's CPU kernels keep something else, emulated on the CPU (fake tensors).

- dropout: CUDA runs the fused `native_dropout` (aten/src/ATen/native/Dropout.cpp `is_fused_kernel_acceptable`:
  cuda inputs), whose backward keeps a 1-byte bool mask; the CPU runs `input * noise`, keeping the scaled noise in
  the input dtype.  Emulated: F.dropout / torch.dropout -> torch.native_dropout.
- layer norm: CUDA's native_layer_norm returns fp32 mean and rstd for 16-bit inputs (layer_norm_kernel.cu,
  `acc_type`), the CPU kernel the input dtype.  Emulated below autograd (CudaDispatch), so the saved stats are fp32.
- scaled_dot_product_attention: CUDA picks flash (16-bit, no mask, equal head dims <= 256), else memory-efficient
  (head dims aligned to 8 (16-bit) or 4 (fp32); takes a mask), else the math path (aten/src/ATen/native/
  transformers/cuda/sdp_utils.cpp select_sdp_backend).  Flash keeps q, k, v, the output (b, s, heads, d memory)
  and the fp32 log-sum-exp (b*heads*s), plus the philox seed and offset with dropout; efficient the same plus the
  mask it was given, converted to the query dtype (a bool mask becomes a float one: attention.cpp
  convert_boolean_attn_mask).  Their backwards allocate dq, dk, dv, an fp32 softmax_d (b*heads*s), and flash an
  fp32 dq accumulator (flash_api.cpp mha_bwd) and, for GQA, dk/dv expanded to all heads; efficient an fp32
  workspace for 16-bit outputs.  The math path upcasts 16-bit inputs to fp32 (torch >= 2.5) and keeps the
  s x s softmax and dropout tensors, as on the CPU but with CUDA's bool dropout mask.  cuDNN attention (preferred
  on sm90/sm100 with cuDNN >= 9.15) keeps the same tensors as flash.
- autocast: CUDA's op lists (aten/src/ATen/autocast_mode.cpp: lower_precision_fp, fp32, fp32_set_opt_dtype,
  promote) differ from the CPU's (exp, log, pow, rsqrt, softmax, log_softmax, sum, cumsum, layer_norm run in fp32
  on CUDA, in the input dtype on the CPU); emulated by a TorchFunctionMode that casts as CUDA autocast does (with
  its cache of 16-bit weight copies, alive until the autocast region ends) and runs each op with the CPU's
  autocast off.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

HALF = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------
# below autograd: layer-norm statistics
# ---------------------------------------------------------------------------------------------------------
class CudaDispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.native_layer_norm.default:
            out, mean, rstd = func(*args, **kwargs)
            if mean.dtype in HALF:
                mean, rstd = mean.float(), rstd.float()
            return out, mean, rstd
        if func is torch.ops.aten.native_layer_norm_backward.default:
            args = list(args)
            x = args[1]
            args[3], args[4] = args[3].to(x.dtype), args[4].to(x.dtype)
            return func(*args, **kwargs)
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# sdpa
# ---------------------------------------------------------------------------------------------------------
def cuda_backend(q, k, v, mask, causal: bool, gqa: bool = False) -> str:
    """sdp_utils.cpp select_sdp_backend for an sm80+ GPU: flash, efficient or math."""
    dq, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    if k.shape[1] != q.shape[1] and not gqa:
        return "math"  # heads broadcast (Falcon's multi-query key): the fused kernels need equal heads or GQA
    half = q.dtype in HALF
    if half and mask is None and dq == dk == dv and dq <= 256 and not (causal and q.shape[-2] != k.shape[-2]):
        return "flash"
    align = 8 if half else 4
    if dq == dk and dq % align == 0 and dv % align == 0:
        return "efficient"
    return "math"


class _FusedSdpa(torch.autograd.Function):
    """Flash / memory-efficient attention as CUDA keeps it: what is saved and what backward allocates."""

    @staticmethod
    def forward(ctx, q, k, v, mask, dropout_p, backend, rec):
        b, a, s, _ = q.shape
        dv = v.shape[-1]
        with _tags(rec, "sdpa"):
            out = q.new_empty((b, s, a, dv)).transpose(1, 2)  # (b, s, heads, d) memory, as both kernels return
        with _tags(rec, "sdpa", "core"):
            lse = q.new_empty((b, a, s), dtype=torch.float32)
            seeds = [q.new_empty((), dtype=torch.int64) for _ in range(2)] if dropout_p > 0 else []
        kept_mask = None
        if mask is not None:
            with _tags(rec, "sdpa", "core"):
                kept_mask = mask.to(q.dtype) if mask.dtype != q.dtype else mask
        ctx.backend = backend
        ctx.has_mask = kept_mask is not None
        ctx.n_seeds = len(seeds)
        ctx.rec = rec
        tensors = [q, k, v, out, lse] + ([kept_mask] if kept_mask is not None else []) + seeds
        ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors[:5]
        b, a, s, d = q.shape
        g, dv = k.shape[1], v.shape[-1]
        rec = ctx.rec
        with _tags(rec, "sdpa backward"):
            softmax_d = q.new_empty((b, a, s), dtype=torch.float32)
            if ctx.backend == "flash":
                dq_accum = q.new_empty((b, s, a, d), dtype=torch.float32)
                if g != a:  # flash_api.cpp mha_bwd: dk/dv expanded to every query head, then summed
                    dk_exp, dv_exp = q.new_empty((b, s, a, d)), q.new_empty((b, s, a, dv))
                dq = q.new_empty((b, s, a, d)).transpose(1, 2)
                dk = q.new_empty((b, s, g, d)).transpose(1, 2)
                dvv = q.new_empty((b, s, g, dv)).transpose(1, 2)
                del dq_accum
                if g != a:
                    del dk_exp, dv_exp
            else:
                workspace = q.new_empty((b, s, a, d), dtype=torch.float32) if q.dtype in HALF else None
                dq = q.new_empty((b, s, a, d)).transpose(1, 2)
                dk = q.new_empty((b, s, g, d)).transpose(1, 2)
                dvv = q.new_empty((b, s, g, dv)).transpose(1, 2)
                del workspace
            del softmax_d
        return dq, dk, dvv, None, None, None, None


def math_sdpa(q, k, v, mask, dropout_p: float, causal: bool, scale, gqa: bool, dropout) -> torch.Tensor:
    """aten _scaled_dot_product_attention_math written out: 16-bit inputs upcast to fp32, q and k each scaled by
    sqrt(scale), the mask added, softmax, dropout, then @ v; the output cast back."""
    dtype = q.dtype
    if dtype in HALF:
        q, k, v = q.float(), k.float(), v.float()
    if gqa and k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    sf = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    q = q * sf
    attn = q @ (k.transpose(-2, -1) * sf)
    if causal:
        L, S = q.shape[-2], k.shape[-2]
        mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=attn.dtype, device=mask.device).masked_fill(
                mask.logical_not(), float("-inf"))
        attn = attn + mask
    attn = torch.softmax(attn, -1)
    if dropout_p > 0:
        attn = dropout(attn, dropout_p)
    out = attn @ v
    return out.to(dtype)


class _tags:
    def __init__(self, rec, *tags: str) -> None:
        self.rec, self.tags = rec, tags

    def __enter__(self):
        if self.rec is not None:
            self.rec.tags = list(self.tags) + self.rec.tags
        return self

    def __exit__(self, *exc):
        if self.rec is not None:
            self.rec.tags = self.rec.tags[len(self.tags):]


# ---------------------------------------------------------------------------------------------------------
# CUDA autocast
# ---------------------------------------------------------------------------------------------------------
T = torch.Tensor
LOWER = {F.linear, torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.mm, T.mm, torch.bmm, T.bmm,
         torch.baddbmm, T.baddbmm, torch.addmm, T.addmm, torch.einsum, torch.addmv, T.addmv, torch.mv, T.mv,
         torch.addbmm, T.addbmm, torch.addr, T.addr, F.conv1d, F.conv2d}
FP32 = {torch.exp, T.exp, torch.log, T.log, torch.pow, T.pow, T.__pow__, T.__rpow__, torch.rsqrt, T.rsqrt,
        torch.reciprocal, T.reciprocal, F.layer_norm, torch.layer_norm, F.group_norm, F.softplus, torch.logsumexp,
        T.logsumexp, torch.log1p, T.log1p, torch.expm1, T.expm1, torch.log2, T.log2, torch.log10, T.log10,
        torch.acos, torch.asin, torch.cosh, torch.sinh, torch.tan, torch.erfinv, F.mse_loss, F.nll_loss, F.kl_div,
        F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy_with_logits, torch.cdist, torch.dist,
        F.cosine_similarity}
SET_OPT = {F.softmax, torch.softmax, T.softmax, F.log_softmax, torch.log_softmax, T.log_softmax, torch.sum, T.sum,
           torch.cumsum, T.cumsum, torch.prod, T.prod, torch.cumprod, T.cumprod}
PROMOTE = {torch.addcdiv, T.addcdiv, torch.addcmul, T.addcmul, torch.atan2, torch.cross, torch.dot, T.dot,
           torch.tensordot, T.index_put, T.scatter_add, torch.scatter_add}
DROPOUT = {F.dropout, torch.dropout, T.dropout if hasattr(T, "dropout") else F.dropout}


class CudaKernels(TorchFunctionMode):
    """Dropout, sdpa and (when `autocast`) the CUDA autocast policy, above autograd."""

    def __init__(self, rec=None, autocast: bool = False) -> None:
        super().__init__()
        self.rec = rec
        self.autocast = autocast
        self.cache: dict[int, torch.Tensor] = {}

    def end_autocast(self) -> None:
        """CUDA autocast drops its weight-copy cache when the outermost autocast region exits."""
        self.cache.clear()

    @contextlib.contextmanager
    def recompute(self):
        """The emulation again, for a checkpointed layer's forward recomputed inside backward (which runs without
        torch-function modes); its autocast region ends with it."""
        with self:
            try:
                yield
            finally:
                self.end_autocast()

    def _active(self) -> bool:
        return self.autocast and torch.is_autocast_enabled("cpu")

    def _lower(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dtype in (torch.bfloat16, torch.float64):
            return x
        if x.dtype != torch.float32:
            return x
        cacheable = x.is_leaf and x.requires_grad
        if cacheable and id(x) in self.cache:
            return self.cache[id(x)]
        y = x.to(torch.bfloat16)
        if cacheable:
            self.cache[id(x)] = y
        return y

    @staticmethod
    def _fp32(x):
        if isinstance(x, torch.Tensor) and x.dtype in HALF:
            return x.float()
        return x

    def _map(self, fn, args, kwargs):
        return tuple(_map_tensors(fn, a) for a in args), {k: _map_tensors(fn, v) for k, v in kwargs.items()}

    def _dropout(self, x, p: float, training: bool = True, inplace: bool = False):
        if not training or p == 0:
            return x
        with _tags(self.rec, "dropout"):
            return torch.native_dropout(x, p, True)[0]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in DROPOUT:
            names = ("input", "p", "training", "inplace")
            bound = dict(zip(names, args))
            bound.update({("training" if k == "train" else k): v for k, v in kwargs.items()})
            return self._dropout(bound["input"], bound.get("p", 0.5), bound.get("training", True))
        if func is F.scaled_dot_product_attention:
            return self._sdpa(*args, **kwargs)
        if self._active():
            if func in LOWER:
                args, kwargs = self._map(self._lower, args, kwargs)
                return _no_cpu_autocast(func, args, kwargs)
            if func in FP32:
                args, kwargs = self._map(self._fp32, args, kwargs)
                return _no_cpu_autocast(func, args, kwargs)
            if func in SET_OPT:
                x = args[0] if args else kwargs.get("input")
                if isinstance(x, torch.Tensor) and x.dtype in HALF and kwargs.get("dtype") is None:
                    kwargs = {**kwargs, "dtype": torch.float32}
                return _no_cpu_autocast(func, args, kwargs)
            if func in PROMOTE:
                widest = torch.float32 if any(isinstance(a, torch.Tensor) and a.dtype == torch.float32
                                              for a in args) else None
                if widest is not None:
                    args, kwargs = self._map(self._fp32, args, kwargs)
                return _no_cpu_autocast(func, args, kwargs)
            if func is F.cross_entropy:
                x, target = args[0], args[1]
                rest = {k: v for k, v in kwargs.items() if k in ("ignore_index", "reduction", "weight")}
                logp = F.log_softmax(x, -1, dtype=torch.float32) if x.dtype in HALF else F.log_softmax(x, -1)
                return _no_cpu_autocast(F.nll_loss, (logp, target), rest)
        return func(*args, **kwargs)

    def _sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
              enable_gqa=False):
        if self._active():
            query, key, value = (self._lower(t) for t in (query, key, value))
            if attn_mask is not None and attn_mask.is_floating_point():
                attn_mask = self._lower(attn_mask)
        backend = cuda_backend(query, key, value, attn_mask, is_causal, enable_gqa)
        with torch.autocast("cpu", enabled=False):
            if backend == "math":
                with _tags(self.rec, "sdpa math"):
                    return math_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                                     lambda x, p: self._dropout(x, p))
            return _FusedSdpa.apply(query, key, value, attn_mask, float(dropout_p), backend, self.rec)


def _map_tensors(fn, x):
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_map_tensors(fn, y) for y in x)
    return x


def _no_cpu_autocast(func, args, kwargs):
    with torch.autocast("cpu", enabled=False):
        return func(*args, **kwargs)
