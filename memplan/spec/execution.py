"""How an engine executes a training step: which communication overlaps what, how gradients accumulate, which
elementwise kernels are fused.  Data in profiles/execution/*.json, each read from the engine's code at a version
(the file names the commit or release and the functions).

The same model and layout run differently on Megatron-LM of 2021 (every tensor-parallel all-reduce blocking,
gradients accumulated by autograd in fp16, data-parallel all-reduce after the backward) and of 2022 (the backward
all-reduce of column-parallel layers hidden under the weight-gradient GEMM, gradients accumulated in fp32 inside
the GEMM); a published run is reproduced with the profile of the code that produced it.  `Layout.engine` picks a
default profile (`default_for`); `memplan time --execution NAME` picks another.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memplan.spec.efficiency import Scale


class Supports(BaseModel):
    """What the engine version can run: the planner searches only these (a 2021 Megatron has no sequence
    parallelism, no selective recompute, no distributed optimizer, no uneven stages)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence_parallel: bool = True
    recompute: list[Literal["none", "selective", "full"]] = ["none", "selective", "full"]
    zero: list[int] = [0, 1, 2, 3]
    offload: bool = True
    context_parallel: bool = True
    expert_parallel: bool = True
    interleaving: bool = True
    uneven_stages: bool = True
    source: str = ""


class ExecutionProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aliases: list[str] = []
    description: str
    default_for: list[str] = Field([], description="Layout.engine values that use this profile by default")
    tp_comm: Literal["blocking", "async-backward", "overlapped"] = Field(
        description="blocking: every tensor-parallel collective on the critical path; async-backward: the backward "
                    "collective of column-parallel layers runs under the weight-gradient GEMM (sequence "
                    "parallelism's re-gather under the data-gradient GEMM); overlapped: every TP collective is "
                    "chunked against its neighbouring GEMM (Transformer Engine userbuffers, --tp-comm-overlap)")
    grad_accumulation: Literal["in-gemm-fp32", "autograd"] = Field(
        description="in-gemm-fp32: the weight-gradient GEMM accumulates into an fp32 main_grad (reads and writes C "
                    "in fp32); autograd: AccumulateGrad adds each micro-batch's gradient to param.grad")
    accumulate_bytes_per_param: float = Field(0.0, ge=0, description="autograd accumulation, per parameter and "
                                                                       "extra micro-batch (read old, read new, write)")
    dp_overlap: Literal["backward", "none"] = Field(
        description="backward: gradient buckets reduce while the last micro-batch's backward runs (the last bucket "
                    "exposed); none: the reduction starts after the backward")
    dp_bucket_bytes: float = Field(25e6, gt=0, description="gradient bucket size (torch DDP bucket_cap_mb=25)")
    dp_copy_bytes_per_param: float = Field(0.0, ge=0, description="extra copies around the reduction (flatten / "
                                                                    "unflatten of un-bucketed gradients)")
    dp_reduce_dtype: Literal["gradients", "fp32"] = Field("gradients", description="what the DP collective moves")
    param_gather_overlap: bool = Field(False, description="ZeRO-1/2's post-step parameter all-gather overlaps the "
                                                          "next forward (Megatron-Core --overlap-param-gather)")
    zero3_prefetch: bool = Field(True, description="ZeRO-3/FSDP gather the next layer while this one computes")
    p2p: Literal["scatter-gather", "plain"] = Field(
        "plain", description="scatter-gather: each TP rank sends 1/tp of a pipeline activation over its own NIC and "
                             "an NVLink all-gather rebuilds it (Narayanan et al. 2021 sec. 4.1)")
    optimizer_bytes_per_param: Scale = Field(description="HBM bytes the optimizer step moves per parameter")
    loss_bytes_per_logit: Scale = Field(description="HBM bytes the loss forward + backward moves per logit")
    fused_bias_activation: bool = True
    fused_bias_dropout_add: bool = True
    fused_softmax: bool = Field(True, description="scale, causal mask and softmax in one kernel (Megatron's "
                                                  "scaled_upper_triang_masked_softmax); else separate passes")
    separate_qkv_bias_add: bool = Field(False, description="the QKV bias is added by its own kernel")
    context_copy: bool = Field(True, description="attention output permuted to [s, b, h] by a copy kernel")
    ep_dispatch: Literal["alltoall", "deepep"] = Field(
        "alltoall", description="MoE token dispatch: alltoall sends every (token, expert) copy to its rank "
        "(Megatron-Core's alltoall dispatcher); deepep sends a token once to each remote node its experts sit on "
        "and forwards it over NVLink there (DeepEP normal kernels, Megatron-Core's flex dispatcher)")
    ep_overlap: Literal["none", "paired-micro-batches"] = Field(
        "none", description="none: the MoE all-to-all is on the critical path; paired-micro-batches: it runs while "
        "another micro-batch computes (DualPipe; Megatron-Core's --overlap-moe-expert-parallel-comm)")
    supports: Supports = Field(default_factory=Supports)
    sources: list[str] = []
    notes: str = ""
