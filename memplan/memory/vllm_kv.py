"""vLLM's KV cache manager: the spec of each layer, the KV cache groups, blocks, concurrency, and the startup
check that refuses a max-model-len the cache cannot hold.

Restated from vllm/v1/kv_cache_interface.py and vllm/v1/core/kv_cache_planning.py @0.33 (kv_cache_utils.py in
0.11; /work/research/vllm/vllm.md sec. 2):

- page_size_bytes (one layer, one block) = num_kv_heads x block_size x (head_size + head_size_v) x dtype bytes
  (AttentionSpec.unpadded_page_size_bytes; heads per TP rank), MLAAttentionSpec: head_size_v = 0 and one "head"
  of kv_lora_rank + qk_rope_head_dim; fp8 KV caches store uint8 (1 byte).
- max_memory_usage_bytes (one request at max_model_len): FullAttentionSpec / MLA cdiv(L, block) pages;
  SlidingWindowSpec (cdiv(min(W - 1 + T, L), block) + 1) pages (the window need not start on a block
  boundary); ChunkedLocalAttentionSpec cdiv(min(C + T, L), block) pages; T = the in-flight tokens
  (vllm_rules.VllmRules.in_flight_tokens).
- get_kv_cache_groups: one group if every layer has the same spec (or the same type with different page sizes);
  otherwise (uniform page size) layers are bucketed by spec, group_size = the smallest bucket (0.18+: the
  largest when < 1.5 x the smallest), each bucket split into cdiv(len, group_size) groups `layers[i::n]`, the
  last padded.
- bytes_per_block = max over groups of the sum of its layers' pages (_get_kv_cache_bytes_per_block): one block
  id holds block_size tokens for one layer slot of every group; num_blocks = available // bytes_per_block
  (get_kv_cache_config_from_groups), the minimum over workers (get_kv_cache_configs).
- max concurrency = num_blocks / sum over groups of cdiv(max_memory_usage_bytes, page_size_bytes)
  (get_max_concurrency_for_kv_cache_config).
- refusal (_check_enough_kv_cache_memory): available <= 0 -> "No available memory for the cache blocks";
  needed = bytes_per_block x blocks per request > available (0.33: minus one block, the null block) -> "To
  serve at least one request with the model's max seq len ... Based on the available memory, the estimated
  maximum model length is N" (estimate_max_model_len: a binary search over 1..max_model_len).
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.memory.kv_cache import elems_per_token, kind_of
from memplan.memory.vllm_rules import VllmRules
from memplan.results.inference import VllmKVGroup, VllmKVSpec
from memplan.spec.layout import Layout
from memplan.spec.model import Model

SPEC_NAMES = {"full": "FullAttentionSpec", "sliding": "SlidingWindowSpec", "chunked": "ChunkedLocalAttentionSpec",
              "mla": "MLAAttentionSpec"}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerKV:
    """One layer's KV cache spec as vLLM builds it (GPUModelRunner.get_kv_cache_spec / Attention.get_kv_cache_spec)."""

    kind: str
    window: int | None
    page: int
    block_size: int
    bytes_per_token: int

    @property
    def name(self) -> str:
        return SPEC_NAMES[self.kind]

    def blocks(self, max_model_len: int, in_flight: int) -> int:
        """Blocks one request at max_model_len needs in this layer (max_memory_usage_bytes / page)."""
        b = self.block_size
        if self.kind == "sliding":
            return _cdiv(min(self.window - 1 + in_flight, max_model_len), b) + 1
        if self.kind == "chunked":
            return _cdiv(min(self.window + in_flight, max_model_len), b)
        return _cdiv(max_model_len, b)

    @property
    def type_key(self) -> tuple:
        """Specs of one 'type' need the same token slots (UniformTypeKVCacheSpecs.is_uniform_type)."""
        return (self.kind == "mla" or self.kind == "full", self.kind if self.kind not in ("full", "mla") else "",
                self.window)


def layer_specs(model: Model, layout: Layout, kv_bytes: float, block_size: int, rules: VllmRules) -> list[LayerKV]:
    """One spec per layer of the model, in order.  Chunked-local layers are full attention where the version
    disables the hybrid manager for them (VllmRules.chunked_local_hybrid)."""
    out: list[LayerKV] = []
    for g in model.groups:
        a = g.layer.attention
        kind = kind_of(a)
        window = a.window if kind in ("sliding", "chunked") else None
        if kind == "chunked" and not rules.chunked_local_hybrid:
            kind, window = "full", None
        per_token = int(elems_per_token(a, layout.tp) * kv_bytes)
        spec = LayerKV(kind, window, block_size * per_token, block_size, per_token)
        out += [spec] * g.count
    return out


def kv_groups(specs: list[LayerKV], rules: VllmRules) -> tuple[list[list[int]], int, bool]:
    """(layer indices of each KV cache group, padding slots, whether pages were uniform)."""
    n = len(specs)
    if len(set(specs)) == 1 or len({s.type_key for s in specs}) == 1:
        return [list(range(n))], 0, len({s.page for s in specs}) == 1
    buckets: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        buckets.setdefault((s.kind, s.window, s.page), []).append(i)
    sizes = [len(v) for v in buckets.values()]
    group_size = min(sizes)
    if rules.group_size_uses_max and max(sizes) < 1.5 * min(sizes):
        group_size = max(sizes)
    groups: list[list[int]] = []
    padding = 0
    for layers in buckets.values():
        count = _cdiv(len(layers), group_size)
        padding += count * group_size - len(layers)
        groups += [layers[i::count] for i in range(count)]
    return groups, padding, len({s.page for s in specs}) == 1


@dataclass(frozen=True)
class KVPlan:
    """The global grouping and what one request needs."""

    specs: list[LayerKV]
    groups: list[list[int]]
    padding: int
    uniform_pages: bool
    in_flight: int

    def group_spec(self, g: list[int]) -> LayerKV:
        return self.specs[g[0]]

    def blocks_per_request(self, max_model_len: int) -> int:
        return sum(self.group_spec(g).blocks(max_model_len, self.in_flight) for g in self.groups)

    def bytes_per_block(self, layers: range) -> int:
        """One block across the widest group's layers on a worker holding `layers`."""
        here = set(layers)
        return max(sum(self.specs[i].page for i in g if i in here) for g in self.groups)

    def needed(self, max_model_len: int, layers: range) -> int:
        """Bytes one request of max_model_len needs on the worker (0.33 _max_memory_usage_bytes_from_groups)."""
        return self.bytes_per_block(layers) * self.blocks_per_request(max_model_len)

    def largest_len(self, available: int, layers: range, upper: int) -> int:
        """estimate_max_model_len: the largest max_model_len in 1..upper whose request fits (0 if none)."""
        if self.needed(1, layers) > available:
            return 0
        lo, hi = 1, upper
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.needed(mid, layers) <= available:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def concurrency(self, num_blocks: int, max_model_len: int) -> float:
        return num_blocks / self.blocks_per_request(max_model_len)

    def tokens_logged(self, num_blocks: int, max_model_len: int, rules: VllmRules) -> int:
        if rules.tokens_from_concurrency:
            return int(self.concurrency(num_blocks, max_model_len) * max_model_len)
        return num_blocks // len(self.groups) * min(self.group_spec(g).block_size for g in self.groups)

    def describe_specs(self, max_model_len: int, layers: range) -> list[VllmKVSpec]:
        here = set(layers)
        out: dict[tuple, VllmKVSpec] = {}
        for i, s in enumerate(self.specs):
            if i not in here:
                continue
            key = (s.kind, s.window, s.page)
            blocks = s.blocks(max_model_len, self.in_flight)
            if key in out:
                v = out[key]
                out[key] = v.model_copy(update={"layers": v.layers + 1,
                                                "max_memory_usage_bytes": v.max_memory_usage_bytes + blocks * s.page})
            else:
                out[key] = VllmKVSpec(spec=s.name, kind=s.kind, layers=1, window=s.window, page_size_bytes=s.page,
                                      bytes_per_token_per_layer=s.bytes_per_token, blocks_per_request=blocks,
                                      max_memory_usage_bytes=blocks * s.page)
        return list(out.values())

    def describe_groups(self) -> list[VllmKVGroup]:
        size = max(len(g) for g in self.groups)
        return [VllmKVGroup(spec=self.group_spec(g).name + (f"({self.group_spec(g).window})"
                                                            if self.group_spec(g).window else ""),
                            layers=len(g), padding=size - len(g)) for g in self.groups]


def plan(model: Model, layout: Layout, kv_bytes: float, block_size: int, rules: VllmRules,
         max_num_batched_tokens: int) -> KVPlan:
    specs = layer_specs(model, layout, kv_bytes, block_size, rules)
    groups, padding, uniform = kv_groups(specs, rules)
    return KVPlan(specs, groups, padding, uniform, rules.in_flight_tokens(max_num_batched_tokens, layout.pp, model))
