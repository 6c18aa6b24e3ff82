"""The serving estimate: memory per GPU, what fits (or whether vLLM starts), and a roofline for decode and prefill.

JSON field names are a public interface: `per_gpu.{weights, kv_cache, activations, overheads, total, required}`,
`fits`, `max_batch`, `max_context`, `roofline.{decode_tokens_per_second_per_gpu, decode_tokens_per_second,
time_to_first_token_seconds, ...}`, and for `--engine vllm` `vllm.{weights, peak_activation, non_torch,
cudagraph, kv_cache_available, kv_bytes_per_token, num_gpu_blocks, max_concurrency, starts}` (bytes as
integers).  Add fields; never rename.
"""
from __future__ import annotations

from pydantic import BaseModel, Field

from memplan.results.memory import Component
from memplan.results.views import InferenceView
from memplan.spec.inference import InferenceSetup


class KVLayerKind(BaseModel):
    """Layers of one pipeline stage whose caches store the same thing (memory/kv_cache.py)."""

    kind: str = Field(description="full, sliding, chunked or mla")
    layers: int
    window: int | None = Field(None, description="sliding window or chunk size in tokens")
    kv_heads: int = Field(description="KV heads on one TP rank (MLA: 1 latent)")
    head_dim: int = Field(description="key width per head (MLA: kv_lora_rank + qk_rope_head_dim)")
    v_head_dim: int = Field(description="value width per head (MLA: 0, the latent serves both)")
    elems_per_token_per_layer: int
    bytes_per_token_per_layer: int
    bytes_per_token: int = Field(description="all layers of this kind on this GPU")
    dtype: str
    sinks: bool = False
    note: str = ""


class ServedWeights(BaseModel):
    """Weights on one GPU in the served format (memory/quantized.py)."""

    total: int
    quantized: int = Field(0, description="the quantised modules with their scales, zeros, g_idx")
    unquantized: int = Field(0, description="16-bit tensors: embeddings, LM head, norms, biases, routers, ignored")
    buffers: int = Field(0, description="vLLM: rotary cos/sin caches and MLA's absorbed W_UK/W_UV")
    experts: int = Field(0, description="bytes in routed experts (a decode step reads only the touched ones)")
    format: str
    quantized_dtype: str | None = Field(None, description="fp8, int8, int4, nf4, fp4 or mxfp4")
    dtype: str = Field(description="dtype of the unquantised tensors")
    kernel: str | None = None
    stage: int = 0


class VllmKVSpec(BaseModel):
    """One layer kind as vLLM's KV cache manager sees it (vllm/v1/kv_cache_interface.py)."""

    spec: str = Field(description="FullAttentionSpec, SlidingWindowSpec, ChunkedLocalAttentionSpec, MLAAttentionSpec")
    kind: str
    layers: int
    window: int | None = None
    page_size_bytes: int = Field(description="one layer, one block")
    bytes_per_token_per_layer: int
    blocks_per_request: int = Field(description="blocks one request at max-model-len needs, per layer")
    max_memory_usage_bytes: int = Field(description="one request at max-model-len, all layers of this kind")


class VllmKVGroup(BaseModel):
    spec: str
    layers: int
    padding: int = Field(0, description="empty layer slots (groups are padded to the same size)")


class VllmStage(BaseModel):
    stage: int
    weights: int
    peak_activation: int
    non_torch: int
    cudagraph: int
    kv_cache_available: int
    kv_cache_shortfall: int = 0
    bytes_per_block: int
    num_gpu_blocks: int


class VllmPhase(BaseModel):
    """One phase of vLLM's startup on the most loaded GPU: the device memory it needs at its peak against what the
    process can have (the GPU's total less what was on it before vLLM's baseline snapshot)."""

    phase: str = Field(description="init, load, profile, kv or graph capture")
    needed: int = Field(description="bytes on the device at the phase's peak")
    limit: int = Field(description="what the phase may use: the device's free memory, or the budget")
    fits: bool
    note: str = ""


class VllmStartup(BaseModel):
    """What vLLM computes at startup on one GPU (memory/vllm.py), bytes as integers."""

    version: str
    gpu: str
    total_memory: int = Field(description="what the device reports to torch (cudaMemGetInfo total)")
    total_memory_source: str
    gpu_memory_utilization: float
    requested: int = Field(description="total_memory x gpu_memory_utilization")
    weights: int = Field(description="'Model loading took': resident weights after process_weights_after_loading")
    peak_activation: int = Field(description="as vLLM logs it: the profile run's transient peak (+ the CUDA-graph "
                                             "estimate from 0.27, where it is subtracted)")
    profile_peak: int = Field(0, description="the profile run's transient torch peak alone")
    peak_activation_source: str = Field("", description="which pass of the profile run sets the peak")
    non_torch: int = Field(description="memory outside torch's allocator after the profile run (and, from 0.27, "
                                       "persistent runner buffers)")
    cudagraph: int = Field(description="CUDA-graph memory of the capture")
    cudagraph_in_budget: bool = Field(description="whether this version subtracts it from the KV budget")
    kv_cache_available: int = Field(description="'Available KV cache memory' (0 when nothing is left)")
    kv_cache_shortfall: int = Field(0, description="bytes by which weights + peak + non-torch (+ CUDA graphs) exceed "
                                                   "the budget: vLLM logs them as a negative 'Available KV cache "
                                                   "memory' and refuses to start")
    kv_bytes_per_token: int = Field(description="all layers on this GPU, one token (before windows cap it)")
    block_size: int
    bytes_per_block: int = Field(description="one block across the layers of the widest KV cache group")
    num_gpu_blocks: int
    kv_cache_pool: int = Field(0, description="the KV tensors vLLM allocates: num_gpu_blocks x bytes_per_block")
    gpu_kv_cache_tokens: int = Field(description="'GPU KV cache size: N tokens' as this version logs it")
    max_concurrency: float = Field(description="requests of max-model-len tokens the blocks hold at once")
    concurrency_at_context: float | None = Field(None, description="requests of the given context")
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    cudagraph_capture_sizes: int = 0
    full_cudagraphs: int = 0
    starts: bool
    refusal: str | None = Field(None, description="why vLLM refuses to start, in its words (paraphrased)")
    fixes: list[str] = Field(default_factory=list, description="what to change so it starts")
    estimated_max_model_len: int | None = Field(None, description="the largest max-model-len that starts")
    failed_phase: str | None = Field(None, description="the startup phase that fails: init (free-memory check), "
                                                       "load, profile, kv (the KV cache check) or graph capture")
    phases: list[VllmPhase] = Field(default_factory=list, description="each startup phase: what it needs on the "
                                                                      "GPU and whether it fits")
    layer_kinds: list[VllmKVSpec] = []
    groups: list[VllmKVGroup] = []
    stages: list[VllmStage] = []
    notes: list[str] = []


class SglangStartup(BaseModel):
    """What SGLang computes at startup on one GPU (memory/sglang.py), bytes as integers."""

    version: str
    gpu: str
    total_memory: int = Field(description="the device's total as torch reports it")
    gpu_memory_mib: int = Field(description="nvidia-smi's total (MiB): what server_args' defaults read")
    pre_load_free: int = Field(description="free memory after the distributed init, before the weights "
                                           "(min_per_gpu_memory)")
    mem_fraction_static: float = Field(description="(weights + KV pool) / pre_load_free")
    reserved_mib: float = Field(0.0, description="server_args' reserved_mem behind the default fraction")
    weights: int
    kv_pool: int = Field(description="max_total_num_tokens x cell_size")
    cell_size: int = Field(description="KV bytes per token over this rank's layers")
    max_total_num_tokens: int
    max_running_requests: int
    context_len: int
    page_size: int = 1
    chunked_prefill_size: int
    cuda_graph_max_bs: int
    cuda_graph_batch_sizes: int = 0
    piecewise_cuda_graph_tokens: int = 0
    reserve: int = Field(description="pre_load_free x (1 - mem_fraction_static): activations, graphs, sampler")
    activation_estimate: int = Field(0, description="memplan's estimate of a chunked prefill's activations")
    cudagraph_estimate: int = Field(0, description="server_args' allowance for the decode CUDA graphs")
    starts: bool
    failed_phase: str | None = None
    refusal: str | None = None
    fixes: list[str] = []
    phases: list[VllmPhase] = []
    notes: list[str] = []


class InferencePerGPU(BaseModel):
    weights: int = Field(0, description="stored weights incl. quantisation scales, this GPU's TP/PP shard")
    kv_cache: int = Field(0, description="keys and values of every sequence at full context (vllm: in whole "
                                         "blocks); vLLM's whole pool is vllm.kv_cache_pool")
    activations: int = Field(0, description="hf: prefill workspace at its peak; vllm: the profile run's peak")
    overheads: int = Field(0, description="CUDA context and library workspaces (vllm: non-torch + CUDA graphs)")
    required: int = Field(0, description="weights + kv_cache + activations + overheads")
    total: int = Field(0, description="equals `required`")


class Roofline(BaseModel):
    """Upper bounds from peak bandwidth and peak FLOP/s (Williams et al. 2009, the roofline model)."""

    gpu: str
    memory_bandwidth_gbps: float
    peak_tflops: float
    compute_dtype: str
    batch: int = Field(1, description="sequences decoded together")
    decode_bytes_per_step: int = Field(description="bytes one GPU reads per decode step: weights + KV cache")
    decode_kv_bytes_per_step: int = 0
    decode_flops_per_step: float = Field(description="FLOPs one GPU does per decode step")
    decode_step_seconds: float = Field(description="one new token for every sequence in the batch")
    decode_bound: str = Field(description="memory or compute")
    decode_comm_seconds: float = Field(0.0, description="tensor-parallel all-reduces in one decode step")
    prefill_comm_seconds: float = Field(0.0, description="tensor-parallel all-reduces in the prefill")
    decode_tokens_per_second: float = Field(description="all replicas together")
    decode_tokens_per_second_per_gpu: float
    decode_tokens_per_second_per_sequence: float
    prefill_flops: float = Field(description="FLOPs of one prefill of the whole batch's prompts, per GPU")
    prefill_passes: int = 1
    prefill_seconds: float
    prefill_bound: str
    prefill_tokens_per_second_per_gpu: float
    time_to_first_token_seconds: float = Field(
        description="the prefill of the batch's prompts: its last logits give the first token")
    notes: list[str] = []


class InferenceEstimate(InferenceView, BaseModel):
    model: str
    parameters: int
    setup: InferenceSetup
    engine: str = "hf"
    components: list[Component]
    per_gpu: InferencePerGPU
    weights: ServedWeights | None = None
    kv_bytes_per_token: int = Field(description="KV cache bytes per token of one sequence, this GPU's share")
    kv_tokens: int = Field(description="tokens cached per sequence at the context (the largest over layer kinds)")
    kv_layers: list[KVLayerKind] = Field(default_factory=list, description="the layer kinds of the most loaded "
                                                                          "stage")
    context: int = 0
    prompt: int = 0
    output: int = 0
    batch: int = 1
    gpu: str | None = None
    gpu_memory: int | None = None
    fits: bool | None = None
    headroom: int | None = None
    max_batch: int | None = None
    max_context: int | None = None
    vllm: VllmStartup | None = None
    sglang: SglangStartup | None = None
    roofline: Roofline | None = None
    notes: list[str] = []
