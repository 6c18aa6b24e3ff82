"""vLLM's per-release rules read from profiles/serving/vllm.json: the sampler path of the profile run's dummy
sampler and the non-torch memory vLLM's budget charges.  Each rule in the file cites vLLM's source at a release."""
from __future__ import annotations


from memplan.catalog import data_table
from memplan.errors import MemplanError


def _v(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.split(".")[:3]]
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


def table() -> dict:
    return data_table("serving", "vllm")  # profiles/serving/vllm.json


def supported() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    t = table()
    return _v(t["oldest"]), _v(t["newest"])


def _rule(version: tuple[int, ...]) -> dict:
    for r in table()["sampler_rules"]:
        if _v(r["from"]) <= tuple(version) <= _v(r["to"]):
            return r
    raise MemplanError(f"no sampler rule for vLLM {'.'.join(map(str, version))} in profiles/serving/vllm.json")


def sampler_path(version: tuple[int, ...], requests: int, v2_runner: bool, flashinfer: bool = False
                 ) -> tuple[str, int, str]:
    """(path, bytes per logit at the sampler's peak, source) of the profile run's dummy sampler."""
    t = table()
    if v2_runner:
        name = "v2_runner"
        src = t["sampler_paths"][name]["source"]
    else:
        r = _rule(version)
        name = r["path"]
        if flashinfer and "path_with_flashinfer" in r:
            name = r["path_with_flashinfer"]
        if name == "in_place" and requests < r.get("min_requests", 0):
            name = "sort"
        src = r["source"]
    return name, t["sampler_paths"][name]["bytes_per_logit"], src


def _era(values: dict[str, int], version: tuple[int, ...]) -> int | None:
    best = None
    for start, v in sorted(values.items(), key=lambda kv: _v(kv[0])):
        if _v(start) <= tuple(version):
            best = v
    return best


def non_torch(version: tuple[int, ...], gpus: int, generation: str) -> tuple[int, str]:
    """Non-torch memory after the profile run on one worker of a TP x PP group of `gpus` GPUs (before 0.27's
    cudaMemGetInfo-based accounting), and the rule's source."""
    nt = table()["non_torch"]
    base = _era(nt["tp1_bytes"], version) or 0
    if gpus <= 1:
        return base, nt["tp1_source"]
    nvlink = _era(nt["multi_gpu_nvlink_bytes"], version)
    if nvlink is not None and generation in ("hopper", "blackwell"):
        return nvlink, nt["multi_gpu_nvlink_source"]
    if tuple(version) <= _v(nt["nccl_before_snapshot_until"]):
        return base + nt["multi_gpu_pcie_extra_bytes"], nt["nccl_before_snapshot_source"]
    return base, nt["tp1_source"]
