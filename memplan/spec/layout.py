"""How a training step is laid out over GPUs: ONE frozen object that estimate, time, plan and profile all take.

The parallel degrees (data, tensor, pipeline, context, expert), the pipeline schedule (virtual stages, uneven
stages), sequence parallelism, ZeRO stage and offload, and the step's shape (micro-batch, gradient accumulation,
recomputation).  Only combinations some engine runs are accepted; each refusal says what to change.

Rank order (Megatron-LM's default `tp-cp-ep-dp-pp`, megatron/core/parallel_state.py): TP fastest, then CP, then
DP, then PP.  World = tp x cp x dp x pp.  Expert parallelism re-slices the same ranks (Megatron-Core MoE,
parallel_state.initialize_model_parallel): world = etp x ep x edp x pp, so ep x etp must divide tp x cp x dp.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memplan.errors import MemplanError

Offload = Literal["none", "cpu", "nvme"]
Engine = Literal["plain", "deepspeed", "megatron", "fsdp"]
Recompute = Literal["none", "selective", "full", "selective-op"]
RECOMPUTE_MODES: tuple[str, ...] = ("none", "selective", "full")

# Bounds that keep every search finite and refuse what no machine could run (each message names its bound).
MAX_GPUS = 1 << 20  # a million GPUs: beyond every cluster built so far
MAX_DEGREE = 1 << 16
MAX_MICRO_BATCH = 1 << 24  # the CLI batch bound (cli/types.py BOUNDS["batch"])
MAX_GRAD_ACCUM = 1 << 24


class Layout(BaseModel):
    """GPU count, parallel degrees and the step's shape.  dp = gpus / (tp x pp x cp)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: int = Field(1, gt=0, le=MAX_GPUS, description="Total GPUs.")
    gpus_per_node: int = Field(8, gt=0, le=1024, description="GPUs per node (TP stays inside one).")
    tp: int = Field(1, gt=0, le=MAX_DEGREE, description="Tensor-parallel size (Megatron).")
    pp: int = Field(1, gt=0, le=MAX_DEGREE, description="Pipeline-parallel size.")
    cp: int = Field(1, gt=0, le=MAX_DEGREE, description="Context-parallel size (sequence split, ring attention).")
    ep: int = Field(1, gt=0, le=MAX_DEGREE, description="Expert-parallel size (routed experts sharded over it).")
    etp: int | None = Field(None, gt=0, le=MAX_DEGREE,
                            description="Expert-tensor-parallel size (default: tp, as Megatron-Core).")
    sequence_parallel: bool = Field(False, description="Megatron sequence parallelism (needs tp > 1).")
    virtual_stages: int = Field(1, gt=0, le=MAX_DEGREE,
                                description="Interleaved 1F1B: model chunks per pipeline rank.")
    first_stage_layers: int | None = Field(None, ge=0, description="Uneven pipeline: layers on the first stage "
                                           "(Megatron --decoder-first-pipeline-num-layers).")
    last_stage_layers: int | None = Field(None, ge=0, description="Uneven pipeline: layers on the last stage "
                                          "(Megatron --decoder-last-pipeline-num-layers).")
    zero: int = Field(0, ge=0, le=3, description="ZeRO stage 0-3.")
    offload_optimizer: Offload = Field("none", description="ZeRO-Offload / ZeRO-Infinity optimizer offload.")
    offload_params: Offload = Field("none", description="Parameter offload (needs ZeRO-3).")
    engine: Engine = Field("plain", description="Accounting convention of a real engine.")
    micro_batch: int = Field(1, gt=0, le=MAX_MICRO_BATCH, description="Sequences per GPU per micro-step.")
    grad_accum: int = Field(1, gt=0, le=MAX_GRAD_ACCUM, description="Micro-batches per optimizer step.")
    recompute: Recompute = Field("none", description="Activation recomputation: none, selective (Megatron: "
                                 "attention core), full, selective-op (torchtitan op-level SAC: every other mm "
                                 "and attention saved).")
    recompute_every: int = Field(1, gt=0, le=MAX_DEGREE, description="With --recompute full: checkpoint every Nth "
                                 "layer only, the others keep all their activations (torchtitan "
                                 "selective_ac_option N).")

    @model_validator(mode="after")
    def _check(self) -> "Layout":
        model_ranks = self.tp * self.pp * self.cp
        if self.gpus % model_ranks:
            raise MemplanError(
                f"--gpus {self.gpus} is not divisible by tp*pp*cp = {self.tp}*{self.pp}*{self.cp} = {model_ranks}; "
                "choose a GPU count that is a multiple of it")
        if self.tp > self.gpus_per_node:
            raise MemplanError(f"--tp {self.tp} exceeds --gpus-per-node {self.gpus_per_node}: keep TP within a node")
        expert_ranks = self.ep * self.expert_tp
        if (self.gpus // self.pp) % expert_ranks:
            raise MemplanError(f"--ep {self.ep} x expert TP {self.expert_tp} must divide the {self.gpus // self.pp} "
                               "GPUs of a pipeline stage (Megatron-Core: world = etp x ep x edp x pp)")
        if self.offload_params != "none" and self.zero != 3:
            raise MemplanError("--offload-params needs --zero 3 (DeepSpeed offloads parameters only in ZeRO stage 3)")
        if self.offload_optimizer != "none" and self.zero == 0:
            raise MemplanError("--offload-optimizer needs --zero 1, 2 or 3 (ZeRO-Offload works on the partitioned "
                               "optimizer)")
        if self.offload_optimizer == "nvme" and self.zero != 3:
            raise MemplanError("--offload-optimizer nvme needs --zero 3 (ZeRO-Infinity)")
        if self.engine == "megatron" and (self.zero > 1 or self.offload_optimizer != "none"):
            raise MemplanError("--engine megatron supports --zero 0 or 1 (the distributed optimizer), no offload")
        if self.engine == "fsdp" and self.offload_optimizer == "nvme":
            raise MemplanError("--engine fsdp cannot offload to NVMe (FSDP's CPUOffloadPolicy is CPU only)")
        if self.recompute_every > 1 and self.recompute != "full":
            raise MemplanError("--recompute-every needs --recompute full (it checkpoints every Nth layer)")
        if self.sequence_parallel and self.tp == 1:
            raise MemplanError("--sequence-parallel needs --tp > 1 (it shards along the TP group)")
        if self.virtual_stages > 1 and self.pp == 1:
            raise MemplanError("--virtual-stages needs --pp > 1 (interleaving splits each pipeline rank's layers)")
        if (self.first_stage_layers is not None or self.last_stage_layers is not None) and self.pp == 1:
            raise MemplanError("--first-stage-layers/--last-stage-layers need --pp > 1")
        if self.pp > 1 and self.zero > 1 and self.engine != "fsdp":
            # DeepSpeed's PipelineEngine asserts zero stage < 2; Megatron's distributed optimizer is stage 1
            raise MemplanError("--pp > 1 works with --zero 0 or 1 (DeepSpeed's pipeline engine and Megatron's "
                               "distributed optimizer); drop --zero to 1")
        return self

    def replace(self, **changes) -> "Layout":
        """A validated copy with `changes` (model_copy would skip the checks).  A derived value out of a bound (a
        hint doubling the GPUs past MAX_GPUS, a search's micro-batch past MAX_MICRO_BATCH) is one MemplanError
        naming the fields changed, never pydantic's ValidationError."""
        from pydantic import ValidationError

        try:
            return Layout.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            from memplan.field_errors import field_error_line

            given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in changes.items())
            line = field_error_line(exc).replace("field ", "--", 1).replace("_", "-")
            raise MemplanError(f"{line} (derived: {given})") from None

    # ---- derived sizes ---------------------------------------------------------------------------------------
    @property
    def dp(self) -> int:
        return self.gpus // (self.tp * self.pp * self.cp)

    @property
    def expert_tp(self) -> int:
        return self.tp if self.etp is None else self.etp

    @property
    def edp(self) -> int:
        """Expert data-parallel size: the ranks holding the same experts (their states shard over it with ZeRO)."""
        return self.gpus // (self.pp * self.ep * self.expert_tp)

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    @property
    def gpus_on_a_node(self) -> int:
        return min(self.gpus, self.gpus_per_node)

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step (context parallelism splits sequences, it adds none)."""
        return self.micro_batch * self.grad_accum * self.dp

    def stage_layers(self, n_layers: int) -> list[int]:
        """Transformer layers on each pipeline stage.

        Uneven: the first/last stage counts given, the rest split evenly over the middle stages (Megatron-LM
        `--decoder-first/last-pipeline-num-layers` require the middle to divide evenly).  Otherwise an even split;
        when the layers do not divide, the first and last stages (which also hold the embeddings and the LM head)
        take the shortfall, as Megatron's `--account-for-embedding/loss-in-pipeline-split` intend."""
        pp = self.pp
        if pp > n_layers:
            raise MemplanError(f"--pp {pp} exceeds the model's {n_layers} layers")
        first, last = self.first_stage_layers, self.last_stage_layers
        if pp == 1:
            return [n_layers]
        if first is not None or last is not None:
            middle = pp - (first is not None) - (last is not None)
            rest = n_layers - (first or 0) - (last or 0)
            if rest < 0 or (middle == 0 and rest) or (middle and rest % middle):
                raise MemplanError(f"uneven pipeline: {n_layers} layers minus first/last stage layers must split "
                                   f"evenly over the other {middle} stage(s)")
            each = rest // middle if middle else 0
            out = [each] * pp
            if first is not None:
                out[0] = first
            if last is not None:
                out[-1] = last
            return out
        base, extra = divmod(n_layers, pp)
        if not extra:
            return [base] * pp
        # ceil(n / pp) per stage, one layer fewer on pp - extra stages taken from the ends inwards: first, last,
        # second, second-to-last, ...
        out = [base + 1] * pp
        ends = [i for k in range(pp) for i in ((k // 2) if k % 2 == 0 else (pp - 1 - k // 2),)]
        for i in ends[:pp - extra]:
            out[i] -= 1
        return out

    def stage_bounds(self, n_layers: int) -> list[tuple[int, int]]:
        """[start, stop) layer indices of each stage."""
        out, pos = [], 0
        for n in self.stage_layers(n_layers):
            out.append((pos, pos + n))
            pos += n
        return out
