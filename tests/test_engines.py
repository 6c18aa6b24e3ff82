"""Engine conventions reproduced from their own documentation and code.

- Megatron-LM docs (docs/source/api-guide/dist_optimizer.md, "Data flow" table): bytes per parameter
  without / with the distributed optimizer over d data-parallel ranks:
    fp16 params, fp16 grads: 20 / 4 + 16/d;   bf16 params, fp32 grads: 18 / 6 + 12/d;   fp32: 16 / 8 + 8/d.
- DeepSpeed 0.19.8 deepspeed/runtime/zero/stage_1_and_2.py `estimate_zero2_model_states_mem_needs` and
  stage3.py `estimate_zero3_model_states_mem_needs` (formulas restated below, independently of memplan's code).
"""
from __future__ import annotations

from fractions import Fraction

import pytest

from memplan.catalog import get_model_profile
from memplan.spec.tensors import largest_module_params
from tests.helpers import cli_json

N = 7_000_000_000


@pytest.mark.parametrize("precision,grads,plain,fixed,sharded", [
    ("fp16-mixed", None, 20, 4, 16),
    ("bf16-mixed", None, 18, 6, 12),
    ("fp32", None, 16, 8, 8),
])
@pytest.mark.parametrize("d", [1, 8, 64])
def test_megatron_distributed_optimizer_table(capsys, precision, grads, plain, fixed, sharded, d):
    non_dist = cli_json(capsys, "estimate", "7B", "--engine", "megatron", "--precision", precision, "--gpus", d)
    dist = cli_json(capsys, "estimate", "7B", "--engine", "megatron", "--precision", precision, "--gpus", d,
                    "--zero", "1")
    assert Fraction(non_dist["per_gpu"]["model_states"], N) == plain
    assert Fraction(dist["per_gpu"]["model_states"], N) == fixed + Fraction(sharded, d)


def test_lecture_and_megatron_accountings_by_override(capsys):
    # 18 B/param: bf16 weights with fp32 gradients (Megatron); 20: fp32 training with an fp32 master copy (lecture).
    eighteen = cli_json(capsys, "estimate", "7B", "--grads-dtype", "fp32")
    twenty = cli_json(capsys, "estimate", "7B", "--precision", "fp32", "--master-dtype", "fp32")
    assert eighteen["per_gpu"]["model_states"] == 18 * N
    assert twenty["per_gpu"]["model_states"] == 20 * N


def deepspeed_zero2(total_params, num_gpus_per_node, num_nodes, cpu_offload, additional_buffer_factor=1.5):
    # deepspeed/runtime/zero/stage_1_and_2.py (0.19.8), restated
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def deepspeed_zero3(total_params, largest_layer_params, num_gpus_per_node, num_nodes, cpu_offload,
                    cpu_offload_params, additional_buffer_factor=1.5):
    # deepspeed/runtime/zero/stage3.py (0.19.8), restated with zero_init=True (its default)
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            cpu_mem = total_params * 18 * gpus_factor * additional_buffer_factor
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            cpu_mem = total_params * 16 * gpus_factor * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def _gpu_model_state_bytes(out):
    g = out["per_gpu"]
    return g["model_states"] + g["gathered_parameters"]


@pytest.mark.parametrize("gpus,per_node", [(1, 1), (8, 8), (64, 8)])
@pytest.mark.parametrize("offload", [False, True])
def test_deepspeed_zero2(capsys, gpus, per_node, offload):
    args = ["estimate", "llama-2-7b", "--engine", "deepspeed", "--zero", "2", "--gpus", gpus, "--gpus-per-node",
            per_node]
    if offload:
        args += ["--offload-optimizer", "cpu"]
    out = cli_json(capsys, *args)
    n = out["parameters"]
    cpu, gpu = deepspeed_zero2(n, per_node, gpus // per_node, offload)
    assert _gpu_model_state_bytes(out) == gpu
    assert out["cpu"]["total"] == cpu


@pytest.mark.parametrize("gpus,per_node", [(1, 1), (8, 8), (64, 8)])
@pytest.mark.parametrize("offload_opt,offload_params", [(False, False), (True, False), (True, True)])
def test_deepspeed_zero3(capsys, gpus, per_node, offload_opt, offload_params):
    args = ["estimate", "llama-2-7b", "--engine", "deepspeed", "--zero", "3", "--gpus", gpus, "--gpus-per-node",
            per_node]
    if offload_opt:
        args += ["--offload-optimizer", "cpu"]
    if offload_params:
        args += ["--offload-params", "cpu"]
    out = cli_json(capsys, *args)
    n = out["parameters"]
    llp = largest_module_params(get_model_profile("llama-2-7b").architecture)
    assert llp == 32000 * 4096  # embed_tokens / lm_head: the largest single module of Llama-2-7B
    cpu, gpu = deepspeed_zero3(n, llp, per_node, gpus // per_node, offload_opt, offload_params)
    assert _gpu_model_state_bytes(out) == gpu
    assert out["cpu"]["total"] + out["nvme"]["total"] == cpu
