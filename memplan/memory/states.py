"""Model states per GPU: weights, gradients, master weights, optimizer states; ZeRO sharding and offload.

The default ("plain") accounting is the ZeRO paper's (engines/hf.py); each engine's own conventions (which buffers
exist, in which dtype, sharded over what) and their sources live in its module under memplan/engines/:
deepspeed.py (its published estimators, reproduced by `_deepspeed_states` below), megatron.py (the distributed
optimizer's main_grad buffer), fsdp.py (FSDP2's MixedPrecisionPolicy: the sharded parameter is the master copy,
the gathered parameters are in param_dtype), torchtitan.py.
"""
from __future__ import annotations

import math

import memplan.engines as engines
from memplan.engines import fsdp as fsdp_engine
from memplan.engines import megatron as megatron_engine
from memplan.errors import MemplanError
from memplan.memory.layout import LocalParameters, local_parameters
from memplan.memory.state_bytes import ModelStates, optimizer_state_bytes  # noqa: F401 - imported from here too
from memplan.results.memory import Component
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import DType, Recipe

LAYERS_IN_FLIGHT = fsdp_engine.LAYERS_IN_FLIGHT  # DeepSpeed's stage3_prefetch_bucket_size plays the same role
DEEPSPEED_CPU_BUFFER_FACTOR = engines.deepspeed.CPU_BUFFER_FACTOR
CONVENTIONS = {name: engines.get(name).convention for name in ("plain", "deepspeed", "megatron", "fsdp")}


def _gathered(local: LocalParameters, dtype: DType, dp: int, zero: int, fsdp: bool, notes: list[str],
              pad: bool = True) -> Component:
    """Unsharded parameters held at once (ZeRO-3 / FSDP), in the compute (weights) dtype.

    ZeRO-3: LAYERS_IN_FLIGHT layers. FSDP2 (`fully_shard` on each block, then the root): the root unit
    (embeddings, final norm, untied LM head) stays gathered from forward through backward, plus LAYERS_IN_FLIGHT
    blocks with reshard_after_forward=True (zero3) or every block with False (zero2); each gathered parameter is W
    padded shards (measured on gloo/fake by tests/test_distributed.py; on CPU there is no prefetch stream, so one
    block is in flight, not two).
    """
    if fsdp and local.layer_tensor_numels:
        def padded(numels) -> int:
            if not pad:  # expert parallelism: experts pad over the expert-DP ranks (see model_states)
                return sum(r * c * k for r, c, k in numels)
            return sum(-(-r // dp) * c * k for r, c, k in numels) * dp

        block = padded(local.layer_tensor_numels)  # the largest block
        root = padded(local.tensor_numels) - sum(g.count * padded(g.tensors_per_layer) for g in local.groups)
        blocks = min(LAYERS_IN_FLIGHT, local.layers)
        in_flight = sum(g.count * padded(g.tensors_per_layer) for g in local.groups) if zero == 2 else blocks * block
        what = (f"FSDP2 root unit ({root:,} params) + "
                + ("all blocks (reshard_after_forward=False)" if zero == 2 else f"{blocks} blocks in flight"))
        return Component(name="gathered parameters", category="gathered_parameters", dtype=dtype.value,
                         bytes=(root + in_flight) * dtype.bytes, location="gpu", note=what)
    per_layer = local.layer_params or local.largest_module_params
    if not per_layer:
        per_layer = local.params // 100
        notes.append("no architecture: a layer is taken as 1% of the parameters for ZeRO-3 gathering")
    layers = local.layers if (fsdp and zero == 2) else min(LAYERS_IN_FLIGHT, max(local.layers, 1))
    what = ("all layers stay gathered between forward and backward (FSDP reshard_after_forward=False)"
            if fsdp and zero == 2 else f"{layers} layer(s) in flight (computing + prefetched)")
    return Component(name="gathered parameters", category="gathered_parameters", dtype=dtype.value,
                     bytes=layers * per_layer * dtype.bytes, location="gpu", note=what)


def pipeline_notes(local: LocalParameters, p) -> list[str]:
    """Say which GPU the per-GPU figures describe when the model is split."""
    if p.pp == 1 and p.tp == 1:
        return []
    where = []
    if p.pp > 1:
        first, last = local.stage == 0, local.stage == p.pp - 1
        extra = " + embeddings" if first else (" + final norm and LM head" if last else "")
        which = "first" if first else ("last" if last else f"number {local.stage + 1}")
        where.append(f"the {which} of {p.pp} pipeline stages is the most loaded ({local.layers} layers{extra})")
    if p.tp > 1:
        where.append(f"tensor-parallel rank of {p.tp}")
    return [f"per-GPU figures are for the most loaded GPU: {', '.join(where)}; {local.params:,} parameters on it"]


def recipe_needs_fsdp(recipe: Recipe) -> bool:
    """fp32 stored weights with 16-bit compute and no autocast: only FSDP2's all-gather cast runs it."""
    return fsdp_engine.gathered_dtype(recipe) != recipe.weights and recipe.master_weights is None


def _ceil_div(x: float, n: int) -> int:
    return int(math.ceil(x / n))


def model_states(setup: TrainingSetup) -> ModelStates:
    if setup.lora is not None:
        from memplan.memory.lora import lora_states  # LoRA/QLoRA arithmetic lives in lora.py

        return lora_states(setup)
    p = setup.layout
    if setup.layout.engine == "deepspeed" and p.zero in (2, 3):
        return _deepspeed_states(setup)
    if setup.layout.engine == "fsdp" and p.zero == 1:
        raise MemplanError("--engine fsdp has no stage 1: use --zero 2 (reshard_after_forward=False) or 3")
    local = local_parameters(setup.model, p)
    recipe, opt, zero, engine = setup.recipe, setup.optimizer, p.zero, p.engine
    # ZeRO / the distributed optimizer shard over the data-parallel ranks that hold the same weights: dp x cp for
    # dense parameters (Megatron shards over the DP group with context parallel; DeepSpeed over data x sequence
    # parallel), the expert-data-parallel group for routed experts (Megatron-Core MoE: expert grads reduce over it)
    dp = p.dp * p.cp
    edp = p.edp
    n = local.params
    notes: list[str] = pipeline_notes(local, p)
    if "nvme" in (p.offload_optimizer, p.offload_params):
        notes.append("ZeRO-Infinity streams NVMe through pinned CPU buffers (DeepSpeed aio/swap buffers, sized by "
                     "its config): CPU RAM for them is not counted here")

    weights_dtype, grads_dtype, master_dtype = recipe.weights, recipe.gradients, recipe.master_weights
    extra_fp32_grads = False
    fsdp = engine == "fsdp" and zero >= 2
    if engine == "megatron":
        grads_dtype, extra_fp32_grads, note = megatron_engine.main_grads(recipe)
        if note:
            notes.append(note)
    if recipe_needs_fsdp(recipe) and not fsdp:
        raise MemplanError(f"--precision {recipe.name} is FSDP2's MixedPrecisionPolicy: add --engine fsdp --zero 3 "
                           "(or 2), or use amp-bf16 / bf16-mixed")
    if fsdp:
        # FSDP2: the sharded parameter is stored in the master dtype (or the weights dtype when there is none).
        weights_dtype = fsdp_engine.stored_dtype(recipe)
        grads_dtype = weights_dtype
        master_dtype = None

    def shard(stage: int) -> int:
        return dp if zero >= stage else 1

    expert_share = local.expert_params / n if n and edp != dp else 0.0

    def where(kind: str) -> str:
        if kind == "weights":
            return p.offload_params if p.offload_params != "none" else "gpu"
        if kind in ("master", "states", "fp32_grads"):
            return p.offload_optimizer if p.offload_optimizer != "none" else "gpu"
        return "gpu"

    comps: list[Component] = []

    def add(name, category, dtype_label, bpp, total_bytes, sharded_over, location, note=""):
        if expert_share and sharded_over > 1:
            # routed experts shard over their own (smaller) data-parallel group
            per_rank = _ceil_div(total_bytes * (1 - expert_share), sharded_over) + \
                _ceil_div(total_bytes * expert_share, edp)
            note = "; ".join(filter(None, [note, f"routed experts /{edp} (expert data parallel)"]))
        else:
            per_rank = _ceil_div(total_bytes, sharded_over)
        if location != "gpu":
            per_rank *= p.gpus_on_a_node  # host memory is counted per node: every local rank offloads its shard
        comps.append(Component(name=name, category=category, dtype=dtype_label, bytes_per_param=bpp,
                               sharded_over=sharded_over, bytes=per_rank, location=location, note=note))

    if fsdp:
        # FSDP2 stores every parameter sharded (reshard_after_forward only decides what stays gathered), each
        # cut along dim 0 and padded to ceil(d0/W) rows (memory/shard_layout.py); states cover the unpadded
        # piece, whose largest is rank 0's. Add the padding as a whole-model equivalent so `shard` divides it.
        # Routed experts shard over the expert-data-parallel ranks, not dp (fsdp.py); their rows pad over edp,
        # which the tensor list does not tell apart: with expert parallelism the count is taken unpadded.
        padded = sum(-(-r // dp) * c * k for r, c, k in local.tensor_numels) \
            if local.tensor_numels and not expert_share else 0
        n_sharded = padded * dp if padded else n
    else:
        n_sharded = n
    wb = weights_dtype.bytes
    add("weights", "weights", weights_dtype.value, wb, n_sharded * wb, dp if fsdp else shard(3), where("weights"),
        ("FSDP2 sharded parameters" + (" (dim-0 padded)" if padded else "")) if fsdp else ("sharded parameters (ZeRO-3)" if zero >= 3 else ""))
    gb = grads_dtype.bytes
    grad_loc = "gpu"
    if p.offload_optimizer != "none" and zero >= 2:
        grad_loc = p.offload_optimizer  # ZeRO-Offload: the gradient partition lives with the optimizer on CPU
    add("gradients", "gradients", grads_dtype.value, gb, n_sharded * gb, shard(2), grad_loc,
        f"partitioned (ZeRO-{min(zero, 3)})" if zero >= 2 else "")
    if extra_fp32_grads:
        add("main gradients (fp32)", "gradients", "fp32", 4, n * 4, shard(1), where("fp32_grads"),
            "megatron: fp32 copy of fp16 grads for the optimizer")
    if master_dtype is not None:
        mb = master_dtype.bytes
        add("master weights", "master_weights", master_dtype.value, mb, n * mb, shard(1), where("master"))
    sbytes, slabel, snote = optimizer_state_bytes(opt, recipe, local)
    if fsdp and n:
        sbytes = sbytes * n_sharded / n  # rank 0's unpadded chunks are ceil(d0/W) rows: the padded count
    if sbytes:
        add(f"optimizer states ({opt.name})", "optimizer_states", slabel, sbytes / n if n else 0, sbytes, shard(1),
            where("states"), snote)

    if zero >= 3 or fsdp:
        gathered = fsdp_engine.gathered_dtype(recipe) if fsdp else recipe.weights
        comps.append(_gathered(local, gathered, dp, zero, fsdp, notes, pad=not expert_share))
    return ModelStates(components=comps, local=local, convention=CONVENTIONS[engine], notes=notes)


def _deepspeed_states(setup: TrainingSetup) -> ModelStates:
    """Exactly DeepSpeed's published estimators (deepspeed 0.19.8, see module docstring), as components.

    DeepSpeed's functions take `total_params` and the GPU count; here total_params is the parameters of one
    TP/PP partition (DeepSpeed itself knows no TP/PP), total_gpus = the DP group size x nodes as DeepSpeed does.
    """
    p = setup.layout
    if "nvme" in (p.offload_optimizer, p.offload_params):
        raise MemplanError("--engine deepspeed reproduces DeepSpeed's estimators, which cover CPU offload only; "
                           "drop --engine (plain ZeRO-Infinity accounting) for NVMe offload")
    local = local_parameters(setup.model, p)
    n, g = local.params, p.dp
    nodes = p.nodes
    per_node = p.gpus_on_a_node
    f = DEEPSPEED_CPU_BUFFER_FACTOR
    comps: list[Component] = []
    notes = [f"deepspeed estimator: total_gpus={g}, num_nodes={nodes}, num_gpus_per_node={per_node}, "
             f"additional_buffer_factor={f}"]
    adam_like = setup.optimizer.states == 2 and setup.recipe.master_weights is not None
    if not adam_like:
        notes.append("DeepSpeed's estimator assumes mixed-precision Adam; its figures ignore the chosen "
                     f"optimizer ({setup.optimizer.name}) and recipe ({setup.recipe.name})")

    def gpu(name, category, dtype, bpp, nbytes, sharded, note=""):
        comps.append(Component(name=name, category=category, dtype=dtype, bytes_per_param=bpp, sharded_over=sharded,
                               bytes=int(nbytes), location="gpu", note=note))

    def host(name, location, nbytes, note):
        comps.append(Component(name=name, category="optimizer_states" if "optim" in name else "weights",
                               bytes=int(nbytes), location=location, note=note))

    offload_opt = p.offload_optimizer != "none"
    if p.zero == 2:
        if offload_opt:
            gpu("weights", "weights", "fp16/bf16", 2, 2 * n, 1)
            host("optimizer offload (fp32 params, grads, Adam states)", "cpu", n * max(4 * g, 16) * f,
                 "total_params x max(4 x total_gpus, 16) x 1.5")
        else:
            # int(18 * total_params / total_gpus) split into its documented parts (same total, see test)
            gpu("weights", "weights", "fp16/bf16", 2, 2 * n, 1)
            gpu("gradients (16-bit)", "gradients", "fp16/bf16", 2, 2 * n / g, g)
            gpu("gradients (fp32 partition)", "gradients", "fp32", 4, 4 * n / g, g)
            gpu("master weights", "master_weights", "fp32", 4, 4 * n / g, g)
            rest = int(2 * n + int(18 * n / g)) - sum(c.bytes for c in comps)
            gpu("optimizer states (Adam)", "optimizer_states", "fp32", 8, rest, g)
            host("model load (fp32 copy per process)", "cpu", n * 4 * per_node * f,
                 "total_params x 4 x num_gpus_per_node x 1.5")
    else:
        llp = local.largest_module_params or 0
        if not llp:
            raise MemplanError("--engine deepspeed with --zero 3 needs the largest layer's size: give an architecture "
                               "(a profile name or config.json), not a bare parameter count")
        gpu("largest layer (16-bit params + grads)", "weights", "fp16/bf16", None, 4 * llp, 1,
            f"4 x largest_layer_params ({llp:,})")
        offload_params = p.offload_params != "none"
        if offload_opt and offload_params:
            host("params + optimizer offload", p.offload_params if p.offload_params == "nvme" else "cpu",
                 n * 18 / nodes * f, "total_params x 18 / num_nodes x 1.5 (zero_init)")
        elif offload_opt:
            gpu("weights (16-bit partition)", "weights", "fp16/bf16", 2, int(2 * n / g), g)
            host("optimizer offload (fp32 params, grads, Adam states)", p.offload_optimizer, n * 16 / nodes * f,
                 "total_params x 16 / num_nodes x 1.5 (zero_init)")
        else:
            total = int(18 * n / g)
            gpu("weights (16-bit partition)", "weights", "fp16/bf16", 2, 2 * n / g, g)
            gpu("gradients (fp32 partition)", "gradients", "fp32", 4, 4 * n / g, g)
            gpu("master weights", "master_weights", "fp32", 4, 4 * n / g, g)
            rest = total - sum(c.bytes for c in comps[1:])
            gpu("optimizer states (Adam)", "optimizer_states", "fp32", 8, rest, g)
            host("largest layer staging (zero_init)", "cpu", llp * 4 * per_node * f,
                 "largest_layer_params x 4 x num_gpus_per_node x 1.5")
    return ModelStates(components=comps, local=local, convention=CONVENTIONS["deepspeed"], notes=notes)
