"""torchtitan's published, measured peaks against memplan's estimate of the same runs (issue 21).

Source: github:pytorch/torchtitan benchmarks/llama3_h100_202412_torchtitan.md (read at b5bcd76): Llama 3.1 on
Grand Teton H100s with 96 GB HBM2e, torch 1963fc8, torchtitan 9dec370 (2024-12-26).  "Memory(GiB)" is torchtitan's
logged peak (`max_reserved`), "stable across the whole training process".  The runs' settings are that commit's
train_configs/llama3_{8b,70b,405b}.toml (seq_len 8192, mixed_precision_param bfloat16, selective_ac_option 'op')
with each table's changes.  memplan reads them as FSDP2's MixedPrecisionPolicy (`fsdp-bf16`) and op-level SAC
(`selective-op`), engines/fsdp.py and engines/torchtitan.py.

Compared: memplan's peak_allocated + its allocator reserve (what max_reserved counts; the CUDA context is outside
it).  Nothing is calibrated on these rows.  memplan models eager bf16 kernels: the torch.compile and Float8 rows
(compile frees intermediates, Float8 adds fp8 weight copies and amax state) are compared all the same, marked.

Errors at the time of writing (estimate / measured - 1): T1 -12.0%, T3 -8.2%, T2 -12.4..-13.0%, T4 -29.2%.  Before
issue 21 (amp-bf16 read for FSDP2's policy, Megatron-selective for op SAC) T1 was +120% (181.5 GiB) and T4 +20%.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from memplan import api

GiB = 2**30
H100_96GB = 94.5 * GiB  # HBM2e 96 GB parts (benchmarks file, "Hardware"); about what torch reports usable


@dataclass(frozen=True)
class TitanRun:
    name: str
    table: str
    measured_gib: float
    model: str
    compiled_float8: bool
    kw: dict = field(default_factory=dict)


RUNS = [
    TitanRun("8B FSDP 8, local batch 2, op SAC", "Table 1 (FSDP)", 82.4, "llama-3.1-8b", False,
             dict(gpus=8, micro_batch=2, seq=8192, recompute="selective-op")),
    TitanRun("8B FSDP 128, local batch 2, op SAC", "Table 3 (FSDP)", 67.0, "llama-3.1-8b", False,
             dict(gpus=128, micro_batch=2, seq=8192, recompute="selective-op")),
    TitanRun("8B FSDP 8 CP 1, seq 32768, full AC", "Table 2", 83.9, "llama-3.1-8b", True,
             dict(gpus=8, micro_batch=1, seq=32768, recompute="full")),
    TitanRun("8B FSDP 4 CP 2, seq 65536, full AC", "Table 2", 84.2, "llama-3.1-8b", True,
             dict(gpus=8, cp=2, micro_batch=1, seq=65536, recompute="full")),
    TitanRun("8B FSDP 2 CP 4, seq 131072, full AC", "Table 2", 84.0, "llama-3.1-8b", True,
             dict(gpus=8, cp=4, micro_batch=1, seq=131072, recompute="full")),
    TitanRun("8B FSDP 1 CP 8, seq 262144, full AC", "Table 2", 84.5, "llama-3.1-8b", True,
             dict(gpus=8, cp=8, micro_batch=1, seq=262144, recompute="full")),
    TitanRun("70B FSDP 32 TP 8, local batch 16, full AC", "Table 4 (2D)", 71.9, "llama-3.1-70b", True,
             dict(gpus=256, tp=8, sequence_parallel=True, micro_batch=16, seq=8192, recompute="full")),
]
IDS = [r.name for r in RUNS]


def reserved_estimate(run: TitanRun) -> tuple[float, object]:
    est = api.estimate(run.model, engine="fsdp", zero=3, precision="fsdp-bf16", **run.kw)
    reserve = sum(c.bytes for c in est.components if c.name.startswith("allocator reserve"))
    return (est.per_gpu.peak_allocated + reserve) / GiB, est


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    out = {}
    for run in RUNS:
        gib, _ = reserved_estimate(run)
        out[run.name] = gib / run.measured_gib - 1
    print("\ntorchtitan published peak vs memplan (max_reserved, GiB):")
    for run in RUNS:
        print(f"  {run.table:16s} {run.name:45s} measured {run.measured_gib:5.1f}  error {100 * out[run.name]:+6.1f}%"
              + ("  (compile+float8)" if run.compiled_float8 else ""))
    return out


@pytest.mark.parametrize("run", RUNS, ids=IDS)
def test_every_published_layout_fits(run):
    _, est = reserved_estimate(run)
    assert est.per_gpu.required < H100_96GB, run.name


def test_the_conventions_are_named():
    _, est = reserved_estimate(RUNS[0])
    assert "FSDP2" in est.convention and est.setup.recipe.name == "fsdp-bf16"
    assert any("op-level SAC" in c.name for c in est.components)


@pytest.mark.parametrize("run", [r for r in RUNS if not r.compiled_float8], ids=lambda r: r.name)
def test_eager_bf16_runs_within_15_percent(errors, run):
    """The rows whose kernels memplan models (eager, bf16): within 15% today, under in both."""
    assert abs(errors[run.name]) < 0.15


@pytest.mark.parametrize("run", [r for r in RUNS if r.compiled_float8], ids=lambda r: r.name)
def test_compiled_float8_runs_within_35_percent(errors, run):
    assert abs(errors[run.name]) < 0.35


@pytest.mark.xfail(strict=True, reason="issue 21's target (±5% of max_reserved) is not met: memplan is 8-13% under "
                                       "on the 8B rows and 29% under on the 70B 2D row (FSDP2's unsharded bf16 "
                                       "gradients and fp32 reduce-scatter buffers, the root unit's LM-head "
                                       "gradient held through backward, Float8 copies are not counted)")
def test_torchtitan_peaks_within_5_percent(errors):
    assert all(abs(e) <= 0.05 for e in errors.values())
