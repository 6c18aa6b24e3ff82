"""Bytes of the pieces an RL step adds to the training and serving floors, each read from TRL 1.16.0's code.

The LM head (trl/kernels/chunked_logprob.py ChunkedLogProbFunction, trl/trainer/utils.py add_fused_lm_head):
TRL never allocates the [B x T x V] logits.  The backbone's last hidden states are gathered for the scored
positions (`hidden_states[mask]` on a Triton device: only labels != -100, i.e. the completion tokens; without
Triton, e.g. on CPU, `reshape(-1, H)` of every position), then projected through the head in tiles of
TOKEN_CHUNK_SIZE = 4096 tokens x _CHUNKED_LOGPROB_CHUNK_SIZE = 32768 vocabulary entries into one reused
`mm_buf` in the compute dtype (allocated [min(N, 4096) x 32768] even for a smaller vocabulary); a Triton kernel
folds each tile into seven fp32 per-token statistics.  Autograd
keeps the gathered hidden states, the targets and two fp32 per-token vectors.  Backward recomputes each tile and
accumulates `grad_hidden` [N x H] and (when the head trains) `grad_weight` [V x H] in fp32, then casts both to the
parameters' dtype.  Without Triton, the fold runs as torch ops on fp32 copies of the whole tile: forward keeps 3
fp32 tiles alive at once, backward 7.25 (counted from `_forward_tile` / `_backward_tile`).

The no-grad scoring forward (reference model, old log-probs): transformers' forward without a cache, peak = the
largest layer's workspace (memory/hf_serving.py prefill_workspace_bytes, the serving floor) + the fused head.
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.spec.setup import TrainingSetup

TOKEN_CHUNK = 4096  # trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE @ v1.16.0
VOCAB_CHUNK = 32768  # trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE @ v1.16.0
# fp32 tiles alive at once in the torch fold (measured on the functions themselves with the storage tracker):
CPU_FORWARD_TILES = 3.0  # _forward_tile: the float copy, z * scale, z * inv_t (then z, z - m, exp; z, e, e * z)
CPU_TOP1_TILES = 0.25  # DPO's is_top1 and mean_logits: the bool mask beside the 3 tiles (measured 3.25)
CPU_BACKWARD_TILES = 7.25  # _backward_tile, log-prob gradient only (8.25 with an entropy gradient)


@dataclass
class HeadBytes:
    saved: int  # kept by autograd from the head's forward to its backward
    forward: int  # transient during the head's forward
    backward: int  # transient during the head's backward (grad buffers + tiles)
    outputs: int  # per-token outputs (log-probs, entropy, ...) of the batch
    note: str


def _dtypes(setup: TrainingSetup) -> tuple[float, float]:
    """(hidden/weight bytes, compute bytes): the head runs under autocast in the compute dtype."""
    r = setup.recipe
    return r.weights.bytes, r.compute.bytes


def fused_head(setup: TrainingSetup, tokens: int, positions: int, train: bool, kernels: str,
               n_outputs: int = 2, top1: bool = False) -> HeadBytes:
    """The fused LM head of one forward over `positions` (batch x (T - 1)) of which `tokens` are scored."""
    m = setup.model.arch
    H, V = m.hidden_size, m.vocab_size
    wb, cb = _dtypes(setup)
    cpu = kernels == "cpu"
    N = positions if cpu else tokens  # without Triton every position is scored (utils.py `compact`)
    n = min(N, TOKEN_CHUNK)
    vc = min(V, VOCAB_CHUNK)
    tile = n * VOCAB_CHUNK * cb  # mm_buf is allocated at the full chunk width, whatever the vocabulary
    casts = (n * H * cb if wb != cb else 0) + (vc * H * cb if wb != cb else 0)
    vectors = 7 * 4 * N
    hidden = N * H * wb  # hidden_states[mask] (or the reshape's copy): saved for backward
    fold_fwd = (CPU_FORWARD_TILES + (CPU_TOP1_TILES if top1 else 0)) * n * vc * 4 if cpu else 0
    forward = tile + casts + vectors + fold_fwd + (0 if train else hidden)
    saved = hidden + N * 8 + 2 * 4 * N if train else 0
    head_trains = train and setup.lora is None
    backward = 0
    if train:
        fold_bwd = CPU_BACKWARD_TILES * n * vc * 4 if cpu else 0
        grads32 = N * H * 4 + (V * H * 4 if head_trains else 0)
        # .to(dtype) of an fp32 accumulator into fp32 parameters returns the same tensor: no copy
        cast_back = 0 if wb == 4 else N * H * wb + (V * H * wb if head_trains else 0)
        # the loop (tile, its fold, the fp32 accumulators) and the return (the casts back) do not overlap
        backward = tile + grads32 + max(casts + fold_bwd, cast_back)
    outputs = n_outputs * positions * 4 + positions * 8
    note = (f"{N:,} scored positions x {V:,} vocab in tiles of {n:,} x {vc:,}"
            + (" (CPU: no Triton, every position, fp32 tile copies)" if cpu else " (GPU: Triton fold, completion "
               "tokens only)") + ("; fp32 grad_weight of the head" if head_trains else ""))
    return HeadBytes(saved=int(saved), forward=int(forward), backward=int(backward), outputs=int(outputs), note=note)


def vocab_parts(setup: TrainingSetup, kernels: str) -> dict[str, int]:
    """The part of each head/loss activation figure that grows with the vocabulary (the logits, their fp32 copy,
    the log-softmax): the activation rows evaluated at the model's vocabulary minus at a vocabulary of 2.  The
    fused head replaces exactly these."""
    from memplan.families.profiles import with_overrides
    from memplan.memory.activations import activations

    small_model = with_overrides(setup.model, {"vocab": 2})
    small = setup.model_copy(update={"model": small_model})
    big, little = activations(setup, kernels), activations(small, kernels)
    return {k: max(getattr(big, k) - getattr(little, k), 0)
            for k in ("head", "forward_only", "loss_forward", "loss_backward")}


def scoring_workspace(setup: TrainingSetup, batch: int, seq: int) -> int:
    """Peak of a no-grad, cache-free forward of `batch` sequences of `seq` tokens through the backbone (the serving
    floor's prefill workspace without its last-position logits)."""
    import math

    from memplan.memory.hf_serving import prefill_workspace_bytes
    from memplan.memory.quantized import model_dtype
    from memplan.spec.inference import InferenceSetup

    s = InferenceSetup(model=setup.model, layout=setup.layout.replace(zero=0, offload_optimizer="none",
                                                                      offload_params="none"),
                       engine="hf", batch=batch, prompt=seq, output=0, attention=setup.workload.attention,
                       weights_dtype=setup.recipe.compute)
    m = setup.model.arch
    cb = model_dtype(s).bytes
    logits = batch * math.ceil(m.vocab_size / setup.layout.tp) * (cb + 4)
    residual = 2 * batch * seq * m.hidden_size * setup.recipe.weights.bytes  # the residual stream (fp32 under autocast)
    return max(prefill_workspace_bytes(s) - logits, 0) + residual


def autocast_weight_copies(setup: TrainingSetup) -> int:
    """Bytes of the compute-dtype copies torch.autocast caches during one forward of fp32 weights: accelerate wraps the
    model's forward in autocast (bf16=True), and autocast caches the cast of every leaf weight that requires grad
    until the forward returns (aten/src/ATen/autocast_mode.cpp cached_cast), so a no-grad forward (generate's
    steps) holds a bf16 copy of every trainable linear weight at its end.  A frozen (LoRA/QLoRA) base is not cached
    (cast one op at a time, inside the workspace): 0.  Measured: 8.0 MiB extra for a 7.2M-parameter tiny Qwen2's
    generate under autocast against the same generate without it.  Not added to the scoring passes, where the
    measured runs show no such excess over the workspace bound."""
    r = setup.recipe
    if not r.autocast or r.weights.bytes <= r.compute.bytes:
        return 0
    m = setup.model.arch
    embed = m.vocab_size * m.hidden_size
    if setup.lora is not None:
        return 0
    linears = setup.model.parameters.total - (0 if m.head.tied else embed)
    return int(linears * r.compute.bytes / (setup.layout.tp * setup.layout.pp))
