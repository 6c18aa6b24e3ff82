"""What vLLM measures at startup and memplan can only model: the profile run's peak activation, non-torch memory,
and the CUDA graphs' memory.  Each is a formula over the shapes vLLM uses, with the constants fitted to published
startup logs (/work/research/vllm/startup_logs.json), named and cited here.

The profile run (GPUModelRunner.profile_run @0.11 and @0.33, V1 and V2 runners alike): one dummy forward of
max_num_batched_tokens tokens spread over num_reqs = min(max_num_seqs, tokens) requests, with no KV cache
(attention kernels are skipped), then on the last pipeline stage `_dummy_sampler_run` on the num_reqs last
positions: logits [num_reqs, vocab] in the model dtype (gathered over TP: LogitsProcessor all-gathers the
vocab-parallel logits), an fp32 copy (Sampler: `logits.to(torch.float32)` / `torch.empty_like(logits,
dtype=float32).copy_(logits)`), and the top-k/top-p, penalty and logprob work over it.  The torch peak of that
run above what was allocated before it is the "peak activation".
"""
from __future__ import annotations

from memplan.memory.vllm_rules import GiB, VllmRules
from memplan.serving.vllm_releases import non_torch as release_non_torch
from memplan.serving.vllm_releases import sampler_path
from memplan.spec.layout import Layout
from memplan.spec.model import LayerGroup, LayerSpec, Model
from memplan.spec.training import DType

# Bytes per logit element at the sampler's peak on the sort path (kept for callers; the per-release rule is
# profiles/serving/vllm.json "sampler_paths", read through serving/vllm_releases.sampler_path), the fp32 copy
# and its workspaces included: fitted to two vLLM 0.10.2 logs with 256 dummy requests and Qwen3's 151,936-token
# vocabulary whose forward peak is far smaller (max_num_batched_tokens 2048): "torch peak memory increase: 1.40GiB" (Qwen3-8B-FP8, code-index file
# 34681159919) and "1.4 GiB for peak activation" (Qwen3-235B-A22B-FP8 TP8, file 38962983769):
# (1.40 GiB - 2048 x 4096 x 2 B of hidden states) / (256 x 151,936) = 38.2.  The vLLM 0.31 A100 log (file
# 70682754770: 1.44 GiB incl. a 0.23 GiB graph capture, Llama 3.1's 128,256 vocabulary) gives 38-39 too; the
# 0.26 RTX 4080 log (file 57428438798: 1.04 GiB) gives 28.7: the spread of this constant.  No 0.33 log was
# found; the tensors 0.33's V2 sampler visibly allocates (model-dtype logits, their fp32 copy, a log-softmax for
# the warm-up's logprobs) explain ~10 B, so the fitted figure may overstate 0.33's peak (at 1024 sequences and a
# 128k vocabulary: ~3 GiB).
SAMPLER_BYTES_PER_LOGIT = 38
# Non-torch memory after the profile run (CUDA context growth from lazily loaded kernels, library workspaces),
# as vLLM <= 0.26 logs it: 0.07 GiB (H100, 0.10.2, file 34680831065), 0.02 GiB (24 GB card, 0.10.2, file
# 34681159919), 0.06 GiB (RTX 4080, 0.26, file 57428438798): their median.
NON_TORCH_BYTES = int(0.06 * GiB)
# <= 0.10 counts NCCL's buffers there too: 0.21 GiB at TP8 on L40S (0.10.2, file 38962983769), 0.15 above the rest
NCCL_NON_TORCH_BYTES = int(0.15 * GiB)
# >= 0.27 logs "consumed memory (weights + non-torch)" through cudaMemGetInfo: 15.26 GiB consumed for 15.0 GiB of
# weights (Llama-3.1-8B, A100 80GB, vLLM 0.31, file 70682754770): 0.26 GiB, of which the V2 sampler's penalty
# state (below) is 0.126 GiB; the remaining 0.13 GiB is the non-torch (and allocator) part.
CONSUMED_EXTRA_BYTES = int(0.13 * GiB)
# CUDA-graph memory per (capture size x graph piece): vLLM captures one graph per capture size for each of
# layers + 1 piecewise pieces (and one FULL graph per decode size, counted alike).  0.31: 0.23 GiB for
# 51 + 35 sizes and 33 pieces (Llama-3.1-8B, A100, file 70682754770: "0.23 GiB for CUDAGraph memory"); 0.10.2
# (PIECEWISE only): 0.67 GiB for 67 x 33 (Mistral 7B, H100, file 34680831065) and 0.68 GiB for 67 x 37 (Qwen3-8B,
# file 34681159919); an MoE layer (more kernels per piece) 1.85x a dense one (Qwen3-235B TP8: 3.45 GiB for 67 x 95,
# file 38962983769).  Other logs (granite-4.0-micro 0.72 GiB at 0.11, Qwen2.5-7B 0.48 GiB at 0.26) put the
# per-piece figure at 185-214 KB instead of 87: +-0.3 GiB on a 7-8B model.
CUDAGRAPH_BYTES_PER_PIECE = {(0, 11): int(0.23 * GiB / (86 * 33)), (0, 0): int(0.675 * GiB / (67 * 35))}
MOE_GRAPH_FACTOR = 1.85
# V2 model runner's PenaltiesState (vllm/v1/worker/gpu/sample/penalties.py @0.33): output_bin_counts
# [max_num_seqs, vocab] int32 and prompt_bin_mask [max_num_seqs, cdiv(vocab, 32)] int32, allocated at init
SAMPLER_STATE_BYTES_PER_LOGIT = 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def forward_bytes_per_token(layer: LayerSpec, hidden: int, layout: Layout) -> tuple[float, float]:
    """(attention stage, FFN stage) elements alive per token in one of vLLM's decoder layers, in the model dtype.

    vLLM's fused layers keep: the residual and the normed input (2h, fused add-RMSNorm works in place);
    attention: qkv_proj's output (q + 2 kv)/tp and the attention output q/tp (allocated even when the profile
    skips the kernel); MLA: q, the kv_b_proj expansion and the latent; dense FFN: gate_up_proj's output 2f/tp and
    the activation's f/tp (SiluAndMul); fused MoE (fused_moe.py): router logits, the intermediate caches
    [T, k, 2I/tp], [T k, I/tp], [T, k, h] and the output h, plus a shared expert as a dense FFN."""
    a, f = layer.attention, layer.ffn
    tp = layout.tp
    if a.mla:
        nope = a.head_dim - a.qk_rope_head_dim
        attn = 2 * hidden + (a.heads * a.head_dim + a.heads * (nope + a.value_dim)) / tp \
            + (a.kv_lora_rank or 0) + a.qk_rope_head_dim + a.heads * a.value_dim / tp
    else:
        attn = 2 * hidden + (a.q_size + 2 * a.kv_size) / tp + a.q_size / tp
    if f.moe:
        i = f.intermediate_size / (1 if layout.ep > 1 else tp)
        ffn = 3 * hidden + f.experts + f.top_k * (3 * i + hidden)
        if f.shared_intermediate_size:
            ffn += 3 * f.shared_intermediate_size / tp
    else:
        ffn = 2 * hidden + (3 if f.gated else 2) * f.intermediate_size / tp
    return attn, ffn


def forward_peak(groups: list[LayerGroup], model: Model, layout: Layout, tokens: int, dtype: DType) -> int:
    per_token = max(max(forward_bytes_per_token(g.layer, model.hidden_size, layout)) for g in groups)
    return int(tokens * per_token * dtype.bytes)


def sampler_peak(model: Model, tokens: int, requests: int, dtype: DType,
                 bytes_per_logit: float = SAMPLER_BYTES_PER_LOGIT) -> int:
    """Hidden states of the dummy batch kept alive + the sampler over [requests, vocab] logits."""
    return int(tokens * model.hidden_size * dtype.bytes + requests * model.vocab_size * bytes_per_logit)


def profile_peak(groups: list[LayerGroup], model: Model, layout: Layout, last_stage: bool, tokens: int,
                 max_num_seqs: int, dtype: DType, rules: VllmRules | None = None,
                 flashinfer: bool = False) -> tuple[int, str]:
    """The profile run's transient peak on one GPU of a stage, and which pass sets it.  The sampler's bytes per
    logit follow the release's sampler path (profiles/serving/vllm.json sampler_rules)."""
    fwd = forward_peak(groups, model, layout, tokens, dtype)
    if not last_stage:
        return fwd, f"forward of {tokens:,} tokens"
    requests = min(max_num_seqs, tokens)
    if rules is None:
        path, per = "sort", SAMPLER_BYTES_PER_LOGIT
    else:
        path, per, _ = sampler_path(rules.version, requests, rules.v2_runner(model), flashinfer or rules.flashinfer)
    smp = sampler_peak(model, tokens, requests, dtype, per)
    if smp >= fwd:
        return smp, f"sampler over {requests} x {model.vocab_size:,} logits ({path.replace('_', '-')} top-k/top-p, " \
                    f"{per} B per logit)"
    return fwd, f"forward of {tokens:,} tokens"


def non_torch_bytes(rules: VllmRules, layout: Layout, model: Model, max_num_seqs: int, last_stage: bool,
                    generation: str = "", context: int = 0) -> int:
    """What vLLM charges beside the weights and the peak: non-torch memory (per release and TP/PP group, from
    profiles/serving/vllm.json), from 0.27 (cudaMemGetInfo-based 'consumed') the V2 runner's persistent sampler
    state too, and on 0.8.5 the CUDA context (`context`), which that release's budget counts."""
    if rules.consumed_accounting:
        # cudaMemGetInfo sees NCCL's lazily allocated NVLink buffers too (profiles/serving/vllm.json non_torch)
        gpus = layout.tp * layout.pp
        extra = CONSUMED_EXTRA_BYTES + (release_non_torch(rules.version, gpus, generation)[0]
                                        - release_non_torch(rules.version, 1, generation)[0] if gpus > 1 else 0)
        if rules.v2_runner(model) and last_stage:
            extra += max_num_seqs * (model.vocab_size + _cdiv(model.vocab_size, 32)) * SAMPLER_STATE_BYTES_PER_LOGIT
        return extra
    nt, _ = release_non_torch(rules.version, layout.tp * layout.pp, generation)
    return nt + (context if rules.context_in_budget else 0)


def cudagraph_bytes(rules: VllmRules, groups: list[LayerGroup], piecewise: int, full: int) -> int:
    """Capture sizes x graph pieces (layers + 1) x the per-piece figure of the version's era; MoE layers count
    MOE_GRAPH_FACTOR times."""
    per = CUDAGRAPH_BYTES_PER_PIECE[(0, 11)] if rules.at_least(0, 11) else CUDAGRAPH_BYTES_PER_PIECE[(0, 0)]
    pieces = 1 + sum(g.count * (MOE_GRAPH_FACTOR if g.layer.ffn.moe else 1.0) for g in groups)
    return int((piecewise + full) * pieces * per)
