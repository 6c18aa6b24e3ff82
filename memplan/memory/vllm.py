"""vLLM's startup on each GPU, in its own order (vllm/v1/worker/gpu_worker.py and vllm/v1/engine/core.py;
/work/research/vllm/vllm.md sec. 1), and whether it starts.

1. Worker.init_device: the baseline snapshot; requested = total x gpu_memory_utilization, with total what the
   device reports (cudaMemGetInfo, the GPU profile's torch_total_memory_bytes); refused if the free memory
   at startup is below it ("Free memory on device ... is less than desired GPU memory utilization").
2. load_model: "Model loading took" = the resident weights (memory/quantized.py).
3. determine_available_memory: the profile run (memory/vllm_profile.py), then
       available = requested - weights - non-torch - peak activation [- CUDA-graph estimate]
   (0.9-0.26: weights + torch_peak_increase + non_torch_increase; >= 0.27: total_consumed +
   transient_peak_headroom; the CUDA-graph estimate from 0.20 where the version subtracts it).
4. EngineCore._initialize_kv_caches: get_kv_cache_configs (memory/vllm_kv.py): blocks per worker, the minimum
   over workers, the startup check; then the KV tensors are allocated and CUDA graphs captured.
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.errors import MemplanError
from memplan.memory.layout import stage_groups
from memplan.memory.overheads import overhead_table
from memplan.memory.quantized import model_dtype, stage_weights, weight_format
from memplan.memory.vllm_kv import KVPlan, plan
from memplan.memory.vllm_profile import cudagraph_bytes, non_torch_bytes, profile_peak
from memplan.memory.vllm_rules import GiB, VllmRules, flashinfer_installed, parse_version
from memplan.results.inference import ServedWeights, VllmPhase, VllmStage, VllmStartup
from memplan.spec.hardware import GPUSpec
from memplan.spec.inference import InferenceSetup

MIB = 1 << 20


def _gib(b: int) -> str:
    return f"{b / GiB:.2f}"


class Settings:
    """vLLM's settings for this setup and GPU: the user's, else the version's defaults."""

    def __init__(self, setup: InferenceSetup, gpu: GPUSpec | None) -> None:
        self.rules = rules = VllmRules(parse_version(setup.vllm_version), flashinfer_installed(setup.vllm_version))
        model = setup.model.arch
        fmt = weight_format(setup)
        rules.check_quantization(fmt.method if fmt else None)
        self.dtype = model_dtype(setup)
        self.kv_dtype = setup.kv_dtype or self.dtype
        mnbt, seqs = rules.batch_defaults(gpu, setup.vllm_entrypoint)
        self.max_num_batched_tokens = setup.max_num_batched_tokens or mnbt
        # 0.11 EngineArgs: max_num_seqs = min(default, max_num_batched_tokens) when unset
        self.max_num_seqs = setup.max_num_seqs or min(seqs, self.max_num_batched_tokens)
        self.max_model_len = setup.max_model_len or setup.context_tokens
        if setup.max_model_len and setup.context_tokens > setup.max_model_len and setup.context is not None:
            raise MemplanError(f"a request of {setup.context_tokens:,} tokens (--context / --prompt + --output) "
                               f"exceeds --max-model-len {setup.max_model_len:,}: vLLM rejects it; raise "
                               "--max-model-len or shorten the request")
        if setup.block_size is not None:
            rules.check_block_size(setup.block_size, model)
        self.block_size = setup.block_size or rules.default_block_size(model, gpu)
        self.utilization = setup.gpu_memory_utilization or rules.default_utilization
        self.eager = setup.enforce_eager
        if self.eager:
            self.piecewise, self.full = [], []
        else:
            self.piecewise, self.full = rules.capture_sizes(self.max_num_seqs, self.max_num_batched_tokens, gpu)

    def kv_plan(self, setup: InferenceSetup) -> KVPlan:
        return plan(setup.model.arch, setup.layout, self.kv_dtype.bytes, self.block_size, self.rules,
                    self.max_num_batched_tokens)


def total_memory(gpu: GPUSpec) -> tuple[int, str]:
    if gpu.torch_total_memory_bytes:
        return gpu.torch_total_memory_bytes, f"{gpu.name} profile: torch-reported total"
    return gpu.memory_bytes, (f"{gpu.name} profile has no torch-reported total: its {gpu.memory_bytes / GiB:.2f} "
                              "GiB used; vLLM sees less (an 80 GB A100 reports 79.25 GiB)")


MEASURED_KEYS = ("weights", "peak_activation", "non_torch", "cudagraph")


@dataclass
class StageCosts:
    """What one GPU of a pipeline stage holds besides the KV cache."""

    weights: ServedWeights
    peak: int
    peak_source: str
    non_torch: int
    cudagraph: int
    layers: range


def _context_used(gpu: GPUSpec) -> int:
    """The CUDA context on an empty GPU: the GPU profile's measured context_bytes, else the generation's
    assumption (profiles/overheads/cuda.json)."""
    t = overhead_table()
    gen = t["generations"].get(gpu.generation, t["generations"]["default"])
    return gpu.context_bytes or gen["context_mib"] * MIB


def stage_costs(setup: InferenceSetup, s: Settings, generation: str = "",
                measured: dict[str, int] | None = None, gpu: GPUSpec | None = None) -> list[StageCosts]:
    """Per pipeline stage: weights, the profile run's peak, non-torch memory and CUDA graphs (measured figures,
    when given, replace the models)."""
    measured = measured or {}
    unknown = set(measured) - set(MEASURED_KEYS)
    if unknown:
        raise MemplanError(f"measured figures {sorted(unknown)}: known are {', '.join(MEASURED_KEYS)}")
    model, layout, rules = setup.model.arch, setup.layout, s.rules
    bounds = layout.stage_bounds(model.n_layers)
    out = []
    for i, groups in enumerate(stage_groups(model, layout)):
        glist = [g for _, g in groups]
        last = i == layout.pp - 1
        w = stage_weights(setup, i, groups, "vllm", generation, rules.version)
        peak, what = profile_peak(glist, model, layout, last, s.max_num_batched_tokens, s.max_num_seqs, s.dtype,
                                  rules)
        nt = non_torch_bytes(rules, layout, model, s.max_num_seqs, last, generation,
                             _context_used(gpu) if gpu is not None else 0)
        cg = cudagraph_bytes(rules, glist, len(s.piecewise), len(s.full)) if not s.eager else 0
        if measured:
            w = w.model_copy(update={"total": measured.get("weights", w.total)})
            peak = measured.get("peak_activation", peak)
            nt = measured.get("non_torch", nt)
            cg = measured.get("cudagraph", cg)
            what = "measured" if "peak_activation" in measured else what
        out.append(StageCosts(w, peak, what, nt, cg, range(*bounds[i])))
    return out


def vllm_startup(setup: InferenceSetup, gpu: GPUSpec, context: int | None = None,
                 max_model_len: int | None = None, measured: dict[str, int] | None = None) -> VllmStartup:
    """vLLM's startup on `gpu` for this setup (max_model_len overrides the setup's, for the searches).

    `measured`: figures read from a real startup log (bytes; keys weights, peak_activation (the transient peak,
    without the CUDA-graph estimate), non_torch, cudagraph) replace memplan's models of them, so the KV blocks and
    concurrency follow from vLLM's own numbers."""
    s = Settings(setup, gpu)
    if max_model_len is not None:
        s.max_model_len = max_model_len
    model, layout, rules = setup.model.arch, setup.layout, s.rules
    total, total_source = total_memory(gpu)
    requested = rules.requested(total, s.utilization)
    kv = s.kv_plan(setup)
    bounds = layout.stage_bounds(model.n_layers)
    stages: list[VllmStage] = []
    notes: list[str] = [f"vLLM {rules.label} accounting; {total_source}"]
    cg_subtracted = rules.cudagraph_subtracted(model) and not s.eager
    per_stage = []
    for i, c in enumerate(stage_costs(setup, s, gpu.generation, measured, gpu)):
        available = requested - c.weights.total - c.non_torch - c.peak - (c.cudagraph if cg_subtracted else 0)
        bpb = kv.bytes_per_block(c.layers)
        blocks = max(available, 0) // bpb
        # vLLM logs a negative "Available KV cache memory" before refusing; a byte count here is never negative:
        # what is missing is its own figure
        stages.append(VllmStage(stage=i, weights=c.weights.total, peak_activation=c.peak, non_torch=c.non_torch,
                                cudagraph=c.cudagraph, kv_cache_available=max(available, 0),
                                kv_cache_shortfall=max(-available, 0), bytes_per_block=bpb, num_gpu_blocks=blocks))
        per_stage.append((c.weights, c.peak_source, c.layers))
    worst = min(range(len(stages)), key=lambda k: stages[k].num_gpu_blocks)
    st = stages[worst]
    w, what, layers = per_stage[worst]
    num_blocks = min(x.num_gpu_blocks for x in stages)
    conc = kv.concurrency(num_blocks, s.max_model_len)
    peak_logged = st.peak_activation + (st.cudagraph if cg_subtracted and rules.consumed_accounting else 0)
    refusal, fixes, est_len = _check(setup, s, kv, stages, bounds, gpu, total, requested)
    phases = _phases(setup, s, stages, gpu, total, requested, cg_subtracted)
    failed = next((ph.phase for ph in phases if not ph.fits), None)
    if refusal is None and failed is not None:
        ph = next(p for p in phases if p.phase == failed)
        refusal = (f"CUDA out of memory in {failed}: {_gib(ph.needed)} GiB needed on the device, "
                   f"{_gib(ph.limit)} GiB there ({ph.note})")
        fixes = ([f"a lower --gpu-memory-utilization (now {s.utilization}): the KV cache then leaves room for the "
                  "graphs", "--enforce-eager (no CUDA graphs)", "a lower --max-num-seqs (fewer capture sizes)"]
                 if failed == "graph capture" else _fixes(setup, s, gpu, short=ph.needed - ph.limit, weights=True))
    elif refusal is not None and failed is None:
        failed = "init" if refusal.startswith("Free memory") else "kv"
    kv_per_token = sum(kv.specs[i].bytes_per_token for i in layers)
    notes.append(f"peak activation: {what} (max_num_batched_tokens {s.max_num_batched_tokens:,}, max_num_seqs "
                 f"{s.max_num_seqs})")
    if cg_subtracted:
        notes.append(f"CUDA graphs: {len(s.piecewise)} capture sizes"
                     + (f" + {len(s.full)} FULL decode graphs" if s.full else "")
                     + " estimated and subtracted from the KV budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS)")
    elif not s.eager:
        notes.append(f"CUDA graphs ({len(s.piecewise)} sizes) are captured after the KV cache, from the "
                     f"{1 - s.utilization:.0%} left outside gpu_memory_utilization: not in the KV budget")
    if kv.padding:
        notes.append(f"hybrid KV groups padded with {kv.padding} empty layer slot(s)")
    if s.max_model_len > model.max_positions:
        notes.append(f"max-model-len {s.max_model_len:,} exceeds the model's {model.max_positions:,} positions: vLLM "
                     "refuses it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 (and the model needs RoPE scaling)")
    if not kv.uniform_pages and len(kv.groups) > 1:
        notes.append("layer kinds with different page sizes: vLLM 0.33 packs their groups block-outermost; "
                     "approximated by the widest group")
    if not rules.chunked_local_hybrid and any(g.layer.attention.window_kind == "chunked" for g in model.groups):
        notes.append(f"chunked-local layers cached as full attention in vLLM {rules.label} (the hybrid KV cache "
                     "manager is disabled for them before 0.14)")
    return VllmStartup(
        version=rules.label, gpu=gpu.name, total_memory=total, total_memory_source=total_source,
        gpu_memory_utilization=s.utilization, requested=requested, weights=st.weights,
        peak_activation=peak_logged, profile_peak=st.peak_activation, peak_activation_source=what,
        non_torch=st.non_torch,
        cudagraph=st.cudagraph, cudagraph_in_budget=cg_subtracted, kv_cache_available=st.kv_cache_available,
        kv_cache_shortfall=st.kv_cache_shortfall,
        kv_bytes_per_token=kv_per_token, block_size=s.block_size, bytes_per_block=st.bytes_per_block,
        num_gpu_blocks=num_blocks, kv_cache_pool=num_blocks * st.bytes_per_block,
        gpu_kv_cache_tokens=kv.tokens_logged(num_blocks, s.max_model_len, rules),
        max_concurrency=conc,
        concurrency_at_context=kv.concurrency(num_blocks, min(context, s.max_model_len)) if context else None,
        max_model_len=s.max_model_len, max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens,
        cudagraph_capture_sizes=len(s.piecewise), full_cudagraphs=len(s.full), starts=refusal is None,
        refusal=refusal, fixes=fixes, estimated_max_model_len=est_len, failed_phase=failed, phases=phases,
        layer_kinds=kv.describe_specs(s.max_model_len, layers), groups=kv.describe_groups(),
        stages=stages if layout.pp > 1 else [], notes=notes)


def _initial_free(gpu: GPUSpec, total: int, setup: InferenceSetup, rules: VllmRules) -> int:
    """Free memory at the baseline snapshot on an otherwise empty GPU: the CUDA context (the generation's
    assumption in profiles/overheads/cuda.json, or the GPU profile's measured context_bytes) and, from 0.11,
    NCCL's communicators, which are initialised before it.  Published: 0.41 GiB used on an A100 (0.31), 0.53 on an
    H100 (0.10.2), 0.49 on an L40S at TP8 (0.10.2)."""
    t = overhead_table()
    used = _context_used(gpu)
    p = setup.layout
    if not rules.nccl_in_non_torch and p.tp * p.pp > 1:
        used += t["nccl_mib_per_communicator"] * MIB
    return total - used


def _phases(setup: InferenceSetup, s: Settings, stages: list[VllmStage], gpu: GPUSpec, total: int,
            requested: int, cg_subtracted: bool) -> list[VllmPhase]:
    """The device memory each startup phase needs on the most loaded GPU, in vLLM's order (gpu_worker.py
    Worker.init_device / load_model / determine_available_memory, then EngineCore._initialize_kv_caches:
    the KV tensors, then GPUModelRunner.capture_model).  `free` is what the process can have: the total less the
    CUDA context (and NCCL from 0.11) present before the baseline snapshot.

    - load: the weights must fit in `free` (an OOM while loading);
    - profile: weights + non-torch + the profile run's peak must fit in `free`;
    - kv: the budget check (memory/vllm.py _check) - reported there;
    - graph capture: from 0.20 the graphs' estimate comes out of the budget (it fits by construction);
      up to 0.19 (and on 0.24-0.27's V2 runner) graphs are captured after the KV cache is allocated, out of what
      gpu_memory_utilization left: free - (requested - peak), the profile run's transient peak having been
      released (torch.cuda.empty_cache after the profile).  A capture that does not fit there fails with an OOM
      after the KV check passed."""
    free = _initial_free(gpu, total, setup, s.rules)
    st = max(stages, key=lambda x: x.weights + x.non_torch + x.peak_activation)
    out = [VllmPhase(phase="load", needed=st.weights, limit=free, fits=st.weights <= free,
                     note="the weights in the served format")]
    prof = st.weights + st.non_torch + st.peak_activation
    out.append(VllmPhase(phase="profile", needed=prof, limit=free, fits=prof <= free,
                         note="weights + non-torch + the profile run's peak"))
    kv_ok = all(x.kv_cache_available > 0 for x in stages)
    worst_kv = min(stages, key=lambda x: x.kv_cache_available - x.kv_cache_shortfall)
    out.append(VllmPhase(phase="kv", needed=requested - worst_kv.kv_cache_available + worst_kv.kv_cache_shortfall,
                         limit=requested, fits=kv_ok, note="weights + peak + non-torch (+ graphs) within the budget"))
    if not s.eager and not cg_subtracted:
        worst = max(stages, key=lambda x: x.cudagraph - x.peak_activation)
        used = requested - worst.peak_activation
        need = used + worst.cudagraph
        out.append(VllmPhase(phase="graph capture", needed=need, limit=free, fits=need <= free,
                             note=f"{_gib(worst.cudagraph)} GiB of CUDA graphs captured after the KV cache, out of "
                                  f"the {_gib(free - used)} GiB gpu_memory_utilization {s.utilization} left"))
    return out


def _check(setup: InferenceSetup, s: Settings, kv: KVPlan, stages: list[VllmStage], bounds, gpu: GPUSpec,
           total: int, requested: int) -> tuple[str | None, list[str], int | None]:
    """vLLM's start-up refusals in the order it meets them, each with what to change."""
    rules = s.rules
    free = _initial_free(gpu, total, setup, rules)
    if free < requested and rules.checks_free_memory:
        largest = free / total
        return (f"Free memory on device ({_gib(free)}/{_gib(total)} GiB) on startup is less than desired GPU memory "
                f"utilization ({s.utilization}, {_gib(requested)} GiB)",
                [f"--gpu-memory-utilization {int(largest * 100) / 100:.2f} or lower (the CUDA context "
                 + ("and NCCL take" if setup.layout.tp * setup.layout.pp > 1 else "takes")
                 + f" {_gib(total - free)} GiB before vLLM's snapshot)"], None)
    for st in stages:
        if st.kv_cache_available <= 0:
            return ("No available memory for the cache blocks (weights + activation peak + non-torch"
                    + (" + CUDA graphs" if rules.cudagraph_subtracted(setup.model.arch) and not s.eager else "")
                    + f" exceed the {_gib(requested)} GiB that gpu_memory_utilization {s.utilization} allows)",
                    _fixes(setup, s, gpu, short=st.kv_cache_shortfall, weights=True), None)
    for st, b in zip(stages, bounds):
        layers = range(*b)
        reserve = st.bytes_per_block if rules.null_block_reserved else 0
        usable = st.kv_cache_available - reserve
        needed = kv.needed(s.max_model_len, layers)
        if needed > usable:
            est = kv.largest_len(usable, layers, s.max_model_len)
            msg = (f"To serve at least one request with the model's max seq len ({s.max_model_len}), "
                   f"{_gib(needed)} GiB KV cache is needed, which is larger than the available KV cache memory "
                   f"({_gib(st.kv_cache_available)} GiB)")
            if est:
                msg += f"; based on the available memory, the estimated maximum model length is {est}"
            fixes = ([f"--max-model-len {est} (the largest that starts)"] if est else [])
            fixes += _fixes(setup, s, gpu, short=needed - usable, weights=False)
            return msg, fixes, est
    return None, [], None


def _fixes(setup: InferenceSetup, s: Settings, gpu: GPUSpec, short: int, weights: bool) -> list[str]:
    out = []
    if s.utilization < 0.95:
        out.append(f"a higher --gpu-memory-utilization (now {s.utilization}; {_gib(short)} GiB short)")
    p = setup.layout
    out.append(f"--tp {p.tp * 2} (weights and KV heads split over twice the GPUs)")
    if not weights and (setup.kv_dtype is None or setup.kv_dtype.bytes > 1):
        out.append("--kv-cache-dtype fp8 (half the KV bytes per token)")
    if weights:
        out.append("a quantised checkpoint (--quantization fp8, or an AWQ/GPTQ model)")
        if s.max_num_seqs > 64:
            out.append(f"a lower --max-num-seqs (now {s.max_num_seqs}: the sampler's profile peak grows with it)")
    out.append("a GPU with more memory")
    return out


def capacity(setup: InferenceSetup, gpu: GPUSpec, available: int, stage: int = 0) -> tuple[int, int, float]:
    """(num_gpu_blocks, 'GPU KV cache size' tokens, max concurrency) vLLM derives from `available` KV bytes on
    one worker of `stage`: the KV cache manager's half of the startup, for an available figure read from a log."""
    s = Settings(setup, gpu)
    kv = s.kv_plan(setup)
    layers = range(*setup.layout.stage_bounds(setup.model.arch.n_layers)[stage])
    blocks = max(available, 0) // kv.bytes_per_block(layers)
    return blocks, kv.tokens_logged(blocks, s.max_model_len, s.rules), kv.concurrency(blocks, s.max_model_len)
