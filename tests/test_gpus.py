"""GPU and interconnect profiles: they load, names resolve, and the peaks are the dense datasheet figures.

Expected values are the vendors' published numbers (each cited beside it), not read back from the JSON files.
"""
from __future__ import annotations

import pytest

import memplan.catalog as catalog
from memplan.errors import MemplanError

REQUIRED_GPUS = [
    "v100-16gb", "v100-32gb", "t4", "a10", "l4", "l40s", "a100-40gb", "a100-80gb", "a100-40gb-pcie",
    "a100-80gb-pcie", "h100-sxm", "h100-pcie", "h200", "b200", "rtx-3090", "rtx-4090", "mi250x", "mi300x",
]
REQUIRED_LINKS = [
    "nvlink2", "nvlink3", "nvlink4", "nvlink5", "pcie3", "pcie4", "pcie5", "infiniband-hdr", "infiniband-ndr",
    "infiniband-xdr", "roce-100g", "roce-200g", "roce-400g", "infinity-fabric", "ethernet-25g",
]


def test_every_required_profile_exists_and_loads():
    gpus = catalog.gpus()
    assert set(REQUIRED_GPUS) <= set(gpus)
    assert set(REQUIRED_LINKS) <= set(catalog.interconnects())
    for stem, gpu in gpus.items():
        assert gpu.name == stem, f"{stem}.json names itself {gpu.name!r}"
        assert gpu.sources, f"{stem} cites no source"
        assert gpu.peak_tflops, f"{stem} has no peaks"


@pytest.mark.parametrize("typed,stem", [
    ("a100-80gb", "a100-80gb"),
    ("A100 80GB", "a100-80gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"),  # torch.cuda.get_device_name() on an A100 80GB SXM4
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),  # torch.cuda.get_device_name() on an H100 SXM5
    ("H100 SXM5", "h100-sxm"),
    ("NVIDIA H200", "h200"),
    ("h100_pcie", "h100-pcie"),
    ("AMD Instinct MI300X", "mi300x"),
    ("GeForce RTX 4090", "rtx-4090"),
])
def test_names_resolve(typed, stem):
    assert catalog.get_gpu(typed).name == stem


def test_no_alias_names_two_gpus():
    owner: dict[str, str] = {}
    for stem, gpu in catalog.gpus().items():
        for name in [stem, *gpu.aliases]:
            key = catalog.normalize(name)
            assert owner.setdefault(key, stem) == stem, f"{name!r} names both {owner[key]} and {stem}"


def test_typo_gets_did_you_mean():
    with pytest.raises(MemplanError, match=r"did you mean 'a100-80gb'"):
        catalog.get_gpu("a100-80gbb")
    with pytest.raises(MemplanError, match=r"did you mean 'nvlink4'"):
        catalog.get_interconnect("nvlink44")


# Dense (no 2:4 sparsity) peaks, TFLOP/s, from the vendors' documents:
DENSE = [
    # Hopper whitepaper Table 3 (H100 SXM5): 989.4 bf16; the datasheet's 1,979 is "with sparsity".
    ("h100-sxm", "bf16", 989.4), ("h100-sxm", "fp8", 1978.9), ("h100-sxm", "tf32", 494.7),
    # Hopper whitepaper Table 3 (H100 PCIe): 756.5 bf16 (datasheet 1,513 with sparsity).
    ("h100-pcie", "bf16", 756.5),
    # A100 datasheet: bf16 312 | 624 with sparsity; tf32 156 | 312.
    ("a100-80gb", "bf16", 312.0), ("a100-40gb", "tf32", 156.0), ("a100-80gb-pcie", "fp16", 312.0),
    # V100 SXM2 datasheet: 125 TFLOPS tensor (fp16).
    ("v100-16gb", "fp16", 125.0),
    # H200 datasheet: 1,979 TFLOPS bf16 with sparsity -> 989.4 dense (same SXM5 compute as H100).
    ("h200", "bf16", 989.4),
    # HGX B200: 4.5 PFLOPS bf16 with sparsity -> 2250 dense.
    ("b200", "bf16", 2250.0),
    # AMD MI300X data sheet: 1307.4 fp16/bf16 dense (2614.9 with sparsity).
    ("mi300x", "bf16", 1307.4),
    # GA102 whitepaper: RTX 3090 fp16 with fp32 accumulate 71 (142 with fp16 accumulate).
    ("rtx-3090", "fp16", 71.0),
]


@pytest.mark.parametrize("stem,dtype,tflops", DENSE)
def test_dense_peaks_not_sparse(stem, dtype, tflops):
    assert catalog.get_gpu(stem).peak_tflops[dtype] == pytest.approx(tflops, abs=0.05)


def test_no_bf16_or_tf32_where_the_chip_lacks_it():
    # Volta (V100) and Turing (T4) tensor cores do fp16 only (V100/T4 datasheets).
    for stem in ("v100-16gb", "v100-32gb", "t4"):
        peaks = catalog.get_gpu(stem).peak_tflops
        assert "bf16" not in peaks and "tf32" not in peaks and "fp8" not in peaks
    # fp8 arrives with Ada/Hopper: not on Ampere.
    assert "fp8" not in catalog.get_gpu("a100-80gb").peak_tflops


def test_memory_as_the_driver_reports_it():
    MiB = 2**20
    assert catalog.get_gpu("a100-80gb").memory_bytes == 81920 * MiB  # nvidia-smi on A100-SXM4-80GB
    assert catalog.get_gpu("a100-40gb").memory_bytes == 40960 * MiB  # nvidia-smi on A100-SXM4-40GB
    assert catalog.get_gpu("h100-sxm").memory_bytes == 81559 * MiB  # nvidia-smi on H100 80GB HBM3
    assert catalog.get_gpu("h200").memory_bytes == 143771 * MiB  # nvidia-smi on H200 (141 GB marketed)


def test_every_gpus_interconnects_exist_and_scopes_match():
    links = catalog.interconnects()
    for stem, gpu in catalog.gpus().items():
        assert gpu.interconnect, f"{stem} has no intra-node interconnect"
        intra = catalog.get_interconnect(gpu.interconnect)
        assert intra.scope == "intra-node", stem
        if gpu.internode is not None:
            assert catalog.get_interconnect(gpu.internode).scope == "inter-node", stem
    for name, link in links.items():
        assert link.sources, f"{name} cites no source"


def test_link_bandwidths_are_unidirectional_per_gpu():
    bw = {name: link.bandwidth_gbps for name, link in catalog.interconnects().items()}
    # NVLink: 25 GB/s per link per direction x 6 / 12 / 18 links; NVLink5 doubles per-link rate (1.8 TB/s total).
    assert (bw["nvlink2"], bw["nvlink3"], bw["nvlink4"], bw["nvlink5"]) == (150, 300, 450, 900)
    # PCIe x16, 128b/130b: 8 / 16 / 32 GT/s.
    assert bw["pcie4"] == pytest.approx(16 * 16 * 128 / 130 / 8, rel=1e-3)
    # InfiniBand HDR 200 Gb/s, NDR 400 Gb/s.
    assert (bw["infiniband-hdr"], bw["infiniband-ndr"]) == (25, 50)


def test_generation_defaults_are_stated():
    for stem, gpu in catalog.gpus().items():
        assert 0 < gpu.default_mfu <= 0.6, stem
        assert "default_mfu" in gpu.notes, f"{stem} does not state where its default_mfu comes from"
        if gpu.price_per_hour is not None:
            assert "price_per_hour" in gpu.notes and any("price_per_hour" in s for s in gpu.sources), stem
