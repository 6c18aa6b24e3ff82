"""Reading a user's measurements into the time model: a `memplan bench --system` record (results/system.py)
replaces the efficiency profile's curves, and a `memplan profile --device cuda` record gives a measured step.

What a record changes, and why the profile's in-training factors stay: the curves in profiles/efficiency/ are
microbenchmarks (NVIDIA's cuBLAS sweep, MAMF) and the profile's `gemm_scale` / `memory_scale` say how much slower
kernels run inside a training step than in such a benchmark (calibrated on published runs).  A record is a
microbenchmark too, on the user's GPU: its GEMM times are used for the exact shapes it timed (divided by the
in-training factor), its median ratio to the curve rescales the curve for other shapes, its copy bandwidths
replace the memory curve, its SDPA timings the flash-attention efficiencies, its collective bus bandwidths the
intra-node link efficiency.
"""
from __future__ import annotations

import math
import statistics

from memplan.errors import MemplanError
from memplan.results.system import SYSTEM_KIND, SystemRecord
from memplan.spec.hardware import GPUSpec


def load_system(path: str, gpu: GPUSpec) -> SystemRecord:
    """A validated `memplan bench --system` record; one line for anything else."""
    from pydantic import ValidationError

    from memplan.field_errors import field_error_line
    from memplan.userfiles import describe, read_user_json

    where = describe(path, "--system")
    data = read_user_json(path, "--system", expected="a memplan bench --system record (a JSON object)")
    kind = data.get("kind")
    if kind != SYSTEM_KIND:
        hint = {"memplan.bench": "a `memplan bench` matmul record; make one with `memplan bench --system ...`",
                "memplan.profile": "a `memplan profile` record; pass it as --measured"}.get(kind, "")
        raise MemplanError(f"{where} is not a memplan bench --system record (kind {kind!r}, expected "
                           f"{SYSTEM_KIND!r})" + (f": it is {hint}" if hint else ""))
    try:
        rec = SystemRecord.model_validate(data)
    except ValidationError as exc:
        raise MemplanError(field_error_line(exc, where)) from None
    if rec.device != "cuda":
        raise MemplanError(f"{where} was measured on the {rec.device} ({rec.device_name}), not a GPU: its figures "
                           "cannot stand for a GPU's")
    if rec.gpu_profile and rec.gpu_profile != gpu.name:
        raise MemplanError(f"{where} was measured on {rec.gpu_profile} ({rec.device_name}), not {gpu.name}: pass "
                           f"--gpu {rec.gpu_profile} or measure this GPU")
    return rec


def apply_system(kernels, rec: SystemRecord) -> None:
    """Replace the profile's kernel curves by the record's measurements (see the module docstring)."""
    note = f"memplan bench --system record of {rec.device_name} ({rec.created_utc}, torch {rec.torch_version})"
    gemms = [g for g in rec.gemms if g.dtype == kernels.dtype.value]
    if gemms:
        base_scale = kernels.gemm_scale
        ratios = []
        for g in gemms:
            flops = 2.0 * g.M * g.N * g.K * g.batch
            curve = flops / (kernels.peak * kernels.gemm_curve((flops / 2) ** (1 / 3)))
            ratios.append(curve / g.seconds)
            kernels.measured_gemms[(g.M, g.N, g.K, g.batch)] = g.seconds / (base_scale / kernels.kernel_scale)
        fit = statistics.median(ratios)
        kernels.gemm_scale = base_scale * fit
        kernels.sources["gemm"] = f"{note}: {len(gemms)} GEMM shapes timed; other shapes: the profile's curve x " \
                                  f"{fit:.3f} (the median measured/curve ratio)"
        kernels.sources["gemm_scale"] = f"the profile's in-training factor x the record's fit {fit:.3f}"
        kernels.sources["system"] = note
    if rec.bandwidth:
        pts = sorted((b.bytes, min(1.5, b.gbps * 1e9 / kernels.hbm)) for b in rec.bandwidth)
        xs, ys = [float(x) for x, _ in pts], [float(y) for _, y in pts]
        kernels.mem_curve.xs, kernels.mem_curve.ys = xs, ys
        kernels.mem_curve.logx = [math.log(x) for x in xs]
        kernels.mem_curve.step = True
        kernels.sources["memory"] = f"{note}: device copies of {len(pts)} sizes (read + write)"
    att = [a for a in rec.attention if a.dtype == kernels.dtype.value]
    if att:
        kernels.flash_fwd = statistics.median(a.forward_efficiency for a in att)
        kernels.flash_bwd = statistics.median(a.backward_efficiency for a in att)
        kernels.sources["flash_forward"] = f"{note}: scaled_dot_product_attention over {len(att)} shapes"
        kernels.sources["flash_backward"] = kernels.sources["flash_forward"]


def apply_network(net, rec: SystemRecord) -> None:
    for c in rec.collectives:
        if c.scope == "intra-node":
            net.measured[(c.collective, c.ranks)] = c.busbw_gbps * 1e9
    if rec.collectives:
        net.sources["intra"] = (f"memplan bench --system record of {rec.device_name}: "
                                f"{len(rec.collectives)} collective measurements (bus bandwidth)")


def measured_step(path: str) -> tuple[float, float | None]:
    """(achieved TFLOP/s, step seconds) of a `memplan profile --device cuda` record (ProfileRecord or the
    MeasuredStep inside it), its fields validated by results/records.py."""
    from memplan.results.records import load_timing

    step = load_timing(path, "--measured")
    if step.oom:
        raise MemplanError(f"--measured file {path}: the measured step ran out of memory, so it has no timing; "
                           "use a run that completed")
    cuda = step.cuda
    if cuda is not None and cuda.achieved_tflops:
        return float(cuda.achieved_tflops), cuda.step_seconds
    if cuda is not None and cuda.flops_per_step and cuda.step_seconds:
        return cuda.flops_per_step / cuda.step_seconds / 1e12, cuda.step_seconds
    raise MemplanError(f"--measured file {path} holds no timing (cuda.achieved_tflops); measure with "
                       "`memplan profile --device cuda`")
