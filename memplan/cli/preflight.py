"""What `profile` and `bench` check before any work: the packages, the device, and a size this machine could hold.

A measurement takes minutes; failing after them (or in the middle of `import torch` with a traceback) for a
reason known at the start wastes them.  Each check is one line with the fix.  `check_outputs` asks
memplan.report.files whether every output can be written.
"""
from __future__ import annotations

import os
from pathlib import Path

from memplan.errors import MemplanError
# torch and transformers are imported in measure/ only (tests/test_import_graph.py): the checks live there
from memplan.measure.libraries import CUDA_BUILD_HINT, HF_HINT, TORCH_HINT, need_torch, need_transformers  # noqa: F401

# Refuse a step whose estimated peak is over this many times the memory it would run in: the estimate is
# within a few percent of measurements (docs/validation.md), so a factor of 2 is a certain failure -- on the
# CPU usually not a clean error but the kernel's OOM killer, which leaves no record.
SIZE_FACTOR = 2


def check_outputs(out: str | None, plot: str | None, snapshot: str | None, force: bool) -> None:
    """Every file the run will write can be written (and is not there yet, unless --force)."""
    from memplan.report.files import check_folder_writable, check_writable

    if out == "auto":
        from memplan.catalog import profiles_dir

        check_folder_writable(profiles_dir() / "runs", "--out")
    elif out:
        check_writable(out, force, "--out")
    if plot:
        check_writable(plot, force, "--plot")
    if snapshot:
        check_writable(snapshot, force, "--snapshot")
    given = [p for p in (out if out != "auto" else None, plot, snapshot) if p]
    if len({os.path.realpath(p) for p in given}) < len(given):
        raise MemplanError("--out, --plot and --snapshot name the same file; give each its own path")


def check_device(torch, device: str) -> None:
    """--device cuda needs a CUDA (or ROCm) build of torch and a visible device."""
    if device != "cuda":
        return
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise MemplanError(f"--device cuda: this torch ({torch.__version__}) is a CPU-only build; "
                           f"{CUDA_BUILD_HINT}; or use --device cpu or fake")
    if not torch.cuda.is_available():
        raise MemplanError(f"--device cuda: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA "
                           "device; check the driver (`nvidia-smi`) and CUDA_VISIBLE_DEVICES, or use --device cpu "
                           "or fake")


def host_memory_bytes() -> int | None:
    """Physical memory, or the cgroup's limit when a container has a lower one (None if unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (total or 2**62):
            total = int(text)
    return total


def device_memory_bytes(torch, device: str) -> tuple[int | None, str]:
    """(bytes, what they are) of the memory a step on `device` runs in; fake tensors need none."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(props.total_memory), f"the memory of {props.name}"
    if device == "cpu":
        return host_memory_bytes(), "this host's memory"
    return None, ""


# the profile's own upper bounds on an architecture (a config.json is not bounded by the flags' types); a fake
# step is limited by time alone: it builds every layer as Python objects
PROFILE_BOUNDS = {"n_layers": ("layers", 100_000), "hidden_size": ("hidden size", 2**20),
                  "vocab_size": ("vocabulary", 2**24), "ffn_hidden_size": ("MLP size", 2**24),
                  "n_heads": ("heads", 2**16)}


def check_profile_size(setup, device: str, estimated_peak: int | None, memory: tuple[int | None, str],
                       warn=None) -> None:
    """Refuse (one line, with the bound) a step no machine like this one could run."""
    from memplan.spec.units import format_bytes

    a = setup.model.architecture
    if a is not None:
        for field, (label, limit) in PROFILE_BOUNDS.items():
            value = getattr(a, field, None)
            if isinstance(value, int) and value > limit:
                raise MemplanError(f"profile: {label} {value:,} is above the bound {limit:,} a measured step can "
                                   "be built with (no machine could hold it); check the model")
    limit, what = memory
    if estimated_peak is None or not limit:
        return
    if estimated_peak > SIZE_FACTOR * limit:
        raise MemplanError(f"profile --device {device}: the estimated peak {format_bytes(estimated_peak)} is over "
                           f"{SIZE_FACTOR}x {what} ({format_bytes(limit)}), so the step cannot run here; use "
                           "--device fake (exact tensor bytes, no memory), or a smaller --micro-batch/--seq")
    if estimated_peak > limit and warn is not None:
        warn(f"the estimated peak {format_bytes(estimated_peak)} is above {what} ({format_bytes(limit)}): the step "
             "will probably run out of memory" + (" (the kernel's OOM killer may end it without a record)"
                                                  if device == "cpu" else ""))


def bench_bytes(dtypes: tuple[str, ...], n: int) -> int:
    """Memory the largest matmul of `memplan bench` holds: A, B and the output (fp8: e4m3 copies of A and B
    beside the bf16 ones, and a bf16 output) -- memplan.measure.bench.matmul_bench."""
    per_element = {"fp32": 12, "tf32": 12, "bf16": 6, "fp16": 6, "fp8": 8}
    return max((per_element[d] for d in dtypes), default=12) * n * n


def check_bench_size(dtypes: tuple[str, ...], n: int, memory: tuple[int | None, str], reserved: int = 0) -> None:
    """Refuse a matrix size whose operands do not fit, with the largest n that would."""
    from memplan.spec.units import format_bytes

    limit, what = memory
    need = bench_bytes(dtypes, n)
    if not limit or need + reserved <= limit:
        return
    per = bench_bytes(dtypes, 1)
    largest = int(((limit - reserved) / per) ** 0.5) if limit > reserved else 0
    raise MemplanError(f"bench --size {n}: the matrices need {format_bytes(need)} ({per} bytes x n^2), more than "
                       f"{what} ({format_bytes(limit)}); the largest n that fits is about {largest:,}")
