"""Collectives: seconds for a payload over a group of GPUs, by where the group sits on the machine.

Ring algorithms (NCCL, Patarasuk & Yuan 2009): per GPU an all-reduce moves 2(n-1)/n of the tensor, a
reduce-scatter, all-gather or all-to-all (n-1)/n, a point-to-point send all of it.  The bandwidth is the link's
per-GPU rate times the collective efficiency measured for it (NCCL bus bandwidth / wire rate, from the GPU's
efficiency profile):
  - a group inside one node runs over the intra-node link (NVLink, PCIe);
  - a group spanning nodes is limited by the network: NCCL opens a ring per NIC, so a group with g ranks on each
    node drives g NICs at once and the node-to-node traffic splits over them (bandwidth g x NIC x efficiency,
    at most the intra-node rate);
  - an all-to-all (MoE expert-parallel dispatch/combine) is not a ring: each GPU sends (n-1)/n of its tensor
    directly to every peer, the part for peers on its own node over NVLink and the part for other nodes out
    through its own NIC only (DGX/HGX H100 has one 400 Gb/s ConnectX-7 per GPU, docs.nvidia.com/dgx/dgxh100-user-
    guide; NCCL's alltoall is p2p send/recv to every peer, and DeepEP's normal kernels on H800 + one CX7 per GPU
    reach ~43-58 GB/s per GPU over RDMA, ~the one NIC's ~50 GB/s: github:deepseek-ai/DeepEP README,
    'Normal kernels with NVLink and RDMA forwarding').  The two parts run concurrently, the slower sets the time:
        t = max((per_node - 1)/n x bytes / NVLink busbw,  (n - per_node)/n x bytes / (one NIC x efficiency));
  - each call pays the link's latency once (NCCL's small-message cost at torch level is tens of microseconds).
Ranks are ordered as Megatron-LM's default (TP fastest, then CP, then DP, then PP: megatron/core/parallel_state.py),
so a group's ranks per node follow from the sizes of the faster dimensions (`ranks_per_node`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from memplan.errors import MemplanError
from memplan.spec.efficiency import EfficiencyProfile
from memplan.spec.hardware import GPUSpec, InterconnectSpec

FACTORS = {"all_reduce": lambda n: 2.0 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
           "reduce_scatter": lambda n: (n - 1) / n, "all_to_all": lambda n: (n - 1) / n, "send": lambda n: 1.0}


@dataclass(slots=True)
class Item:
    """One communication line of the output (per GPU of the busiest stage, per step)."""

    name: str
    parallelism: str
    group: int
    link: str
    busbw: float
    bytes_sent: float
    seconds: float
    exposed: float
    hidden_under: str = ""


@dataclass(frozen=True)
class Links:
    intra: InterconnectSpec
    inter: InterconnectSpec
    host: InterconnectSpec


def resolve_links(gpu: GPUSpec, interconnect: str | None = None, internode: str | None = None,
                  host_link: str | None = None) -> Links:
    """The GPU profile's links unless overridden (--interconnect, --internode)."""
    from memplan.catalog import get_interconnect

    intra_name = interconnect or gpu.interconnect
    if intra_name is None:
        raise MemplanError(f"GPU profile {gpu.name} names no interconnect; pass --interconnect NAME")
    inter_name = internode or gpu.internode or intra_name
    host_name = host_link or gpu.host_link or ("pcie4" if not intra_name.startswith("pcie") else intra_name)
    return Links(get_interconnect(intra_name), get_interconnect(inter_name), get_interconnect(host_name))


def all_reduce_bytes(nbytes: float, n: int) -> float:
    """Bytes each GPU sends in a ring all-reduce of a tensor of `nbytes`."""
    return 2.0 * (n - 1) / n * nbytes if n > 1 else 0.0


def shard_collective_bytes(nbytes: float, n: int) -> float:
    """Reduce-scatter or all-gather of a tensor whose full size is `nbytes`."""
    return (n - 1) / n * nbytes if n > 1 else 0.0


def seconds(nbytes: float, link: InterconnectSpec, ring_steps: int = 0, calls: float = 1.0) -> float:
    """Bytes over the link at its wire rate (GB/s decimal) plus its latency per ring step (the serving roofline)."""
    return nbytes / (link.bandwidth_gbps * 1e9) + calls * ring_steps * link.latency_us * 1e-6


def ranks_per_node(size: int, stride: int, gpus_per_node: int) -> int:
    """Ranks of a group (`size` ranks, `stride` apart in rank order) that share a node."""
    if size <= 1:
        return 1
    if stride >= gpus_per_node:
        return 1
    return max(1, min(size, gpus_per_node // stride))


@dataclass(frozen=True)
class Path:
    """Where a group's traffic goes: the link it is limited by, its bus bandwidth (B/s) and latency per call."""

    link: str
    busbw: float
    latency: float
    scope: str


class Network:
    """Collective timings for one machine: the GPU's links and their measured collective efficiencies."""

    def __init__(self, links: Links, profile: EfficiencyProfile, gpus_per_node: int, system=None):
        self.links, self.gpus_per_node = links, gpus_per_node
        intra = profile.links.get(links.intra.name, profile.intra_node)
        inter = profile.links.get(links.inter.name, profile.inter_node)
        self.intra_eff, self.inter_eff = intra.efficiency, inter.efficiency
        self.intra_busbw = links.intra.bandwidth_gbps * 1e9 * intra.efficiency
        self.nic = links.inter.bandwidth_gbps * 1e9 * inter.efficiency
        lat = intra.latency_us if intra.latency_us is not None else links.intra.latency_us
        self.intra_latency = lat * 1e-6
        lat = inter.latency_us if inter.latency_us is not None else links.inter.latency_us
        self.inter_latency = lat * 1e-6
        self.host_bw = links.host.bandwidth_gbps * 1e9
        self.sources = {"intra": intra.source, "inter": inter.source}
        self.measured: dict[tuple[str, int], float] = {}  # (collective, group size) -> busbw, from --system
        if system is not None:
            from memplan.perf.system import apply_network

            apply_network(self, system)
        self._memo: dict[tuple, Path] = {}

    def path(self, size: int, per_node: int) -> Path:
        key = (size, per_node)
        p = self._memo.get(key)
        if p is None:
            if size <= per_node:
                p = Path(self.links.intra.name, self.intra_busbw, self.intra_latency, "intra-node")
            else:
                bw = min(self.intra_busbw, per_node * self.nic)
                p = Path(self.links.inter.name, bw, self.inter_latency, "inter-node")
            self._memo[key] = p
        return p

    def collective(self, kind: str, nbytes: float, size: int, per_node: int, calls: float = 1.0) -> float:
        """Seconds for `calls` collectives moving `nbytes` (the full tensor) in total over `size` ranks."""
        if size <= 1 or nbytes <= 0:
            return 0.0
        p = self.path(size, per_node)
        if kind == "all_to_all" and p.scope == "inter-node":
            return calls * p.latency + self.all_to_all_spread(nbytes, size, per_node)
        busbw = p.busbw
        if p.scope == "intra-node":
            busbw = self.measured.get((kind, size), busbw)
        return calls * p.latency + FACTORS[kind](size) * nbytes / busbw

    def all_to_all_spread(self, nbytes: float, size: int, per_node: int) -> float:
        """Bandwidth part of an all-to-all over nodes: peers on this node over NVLink, the rest through this GPU's
        own NIC (not the node's aggregate), concurrently."""
        intra = (per_node - 1) / size * nbytes / self.intra_busbw
        inter = (size - per_node) / size * nbytes / self.nic
        return max(intra, inter)

    def node_deduplicated_all_to_all(self, nbytes: float, size: int, per_node: int, top_k: int,
                                     experts: int) -> float:
        """DeepEP's normal dispatch/combine (github:deepseek-ai/DeepEP README, 'asymmetric-domain bandwidth
        forwarding'): a token crosses the network once per remote node that holds one of its top-k experts, to the
        GPU of the same local index there, which forwards it over NVLink to the experts' GPUs.  `nbytes` counts
        every (token, expert) copy, as the plain all-to-all sends them.  Under uniform routing a node holding
        E/N of the E experts is missed with probability C(E - E/N, k) / C(E, k); the NVLink side carries the
        copies for the other GPUs of a node ((g-1)/g of them), both sides at once."""
        if size <= per_node:
            return self.collective("all_to_all", nbytes, size, per_node) - self.intra_latency
        nodes = size // per_node
        on_node = experts / nodes
        miss = 1.0
        for i in range(top_k):
            miss *= max(0.0, (experts - on_node - i)) / (experts - i)
        per_copy = nbytes / top_k
        inter = (nodes - 1) * (1.0 - miss) * per_copy / self.nic
        intra = (per_node - 1) / per_node * nbytes / self.intra_busbw
        return max(intra, inter)

    def all_to_all_busbw(self, size: int, per_node: int) -> float:
        """The effective bus bandwidth of an all-to-all (the (n-1)/n factor's bandwidth), for the output."""
        if size <= per_node:
            return self.path(size, per_node).busbw
        return FACTORS["all_to_all"](size) / self.all_to_all_spread(1.0, size, per_node)

    def send(self, nbytes: float, across_nodes: bool) -> float:
        """One point-to-point send between pipeline stages."""
        if nbytes <= 0:
            return 0.0
        if across_nodes:
            return self.inter_latency + nbytes / self.nic
        return self.intra_latency + nbytes / self.intra_busbw

    def host_copy(self, nbytes: float) -> float:
        return nbytes / self.host_bw if nbytes > 0 else 0.0

    def calls_for(self, nbytes: float, bucket: float) -> float:
        return max(1.0, math.ceil(nbytes / bucket)) if nbytes > 0 else 0.0
