"""The estimate-vs-measurement cases: each a training setup, the device the runner measures it on, and the model
source.  tests/test_validation.py asserts every case; `python -m tests.validation_cases` prints the tables
published in docs/validation.md (estimate, measured, error), from a fresh measurement.

Two suites:
- CASES: the hand-picked setups (recipes, optimizers and their implementations, eager/sdpa, recompute, vocabularies,
  7B-13B at 4k tokens traced under FakeTensorMode);
- FAMILY_CASES: every built-in family (memplan/families/), twice: a real CPU step of a small config (sizes shrunk
  to a few dozen, one period of the layer pattern: every layer kind) and a FakeTensorMode step at full width with a
  few layers.  Each is also measured with PyTorch's own MemTracker (torch.distributed._tools.mem_tracker) on the
  same step, optimizer implementation matched.
The estimate is asked for PyTorch's CPU kernels (`kernels="cpu"`), which is what both devices execute; the
optimizer implementation is the one the runner is told to use.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from memplan.catalog import resolve_model
from memplan.families.registry import find_family
from memplan.spec.layout import Layout
from memplan.spec.model import ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import Workload, get_optimizer, get_recipe

TOLERANCE_PERCENT = 5.0  # CASES: every case within +-5% of the measured peak
FAMILY_TOLERANCE_PERCENT = 2.0  # FAMILY_CASES: the issue's +-2%


@dataclass(frozen=True)
class Case:
    label: str
    model: str | ModelSpec
    recipe: str
    optimizer: str = "adamw"
    impl: str = "for-loop"
    micro_batch: int = 1
    seq: int = 128
    attention: str = "sdpa"
    recompute: str = "none"
    device: str = "cpu"
    source: str = "hf"
    slow: bool = False
    tolerance: float = TOLERANCE_PERCENT
    notes: tuple[str, ...] = field(default=())

    def setup(self) -> TrainingSetup:
        model = self.model if isinstance(self.model, ModelSpec) else resolve_model(self.model)
        return TrainingSetup(model=model, recipe=get_recipe(self.recipe), optimizer=get_optimizer(self.optimizer),
                             layout=Layout(micro_batch=self.micro_batch, recompute=self.recompute),
                             workload=Workload(seq=self.seq, attention=self.attention, optimizer_impl=self.impl))


def read_config(config: dict, path: str = "config"):
    """The config's Model: its family's reader, else (olmo3, smollm3, apertus: no family file) transformers'
    module tree, as the trace and the built-in profiles read them (measure/trace/probe.py read_model)."""
    from memplan.measure.trace.probe import read_model

    return read_model(config, path)


def apply_overrides(config: dict, overrides: dict, path: str = "config") -> dict:
    from memplan.families.registry import apply_overrides as family_overrides
    from memplan.measure.trace.probe import with_layers

    if find_family(str(config.get("model_type"))) is None:
        return with_layers(config, overrides["layers"])
    return family_overrides(config, overrides, path)


def spec_of(name: str, config: dict) -> ModelSpec:
    return ModelSpec(name=name, architecture=read_config(config, name), hf_config=config)


def _llama(name: str, vocab: int, layers: int = 4, hidden: int = 256, kv: int = 2) -> ModelSpec:
    # a Llama-family model small enough for a real CPU step, with a real tokenizer's vocabulary
    return spec_of(name, {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
                          "num_attention_heads": 8, "num_key_value_heads": kv, "intermediate_size": 688,
                          "vocab_size": vocab, "max_position_embeddings": 4096})


LLAMA_32K = _llama("llama-mini-32k", 32000)
LLAMA_128K = _llama("llama-mini-128k", 128256, layers=2)
LLAMA_512 = _llama("llama-mini-v512", 512, kv=8)

CASES = [
    Case("GPT-2 124M, bf16, AdamW, sdpa (dropout 0.1), b4 s256", "gpt2", "bf16", micro_batch=4, seq=256,
         device="fake"),
    Case("GPT-2 124M, fp32, AdamW foreach, eager, b2 s512", "gpt2", "fp32", impl="foreach", micro_batch=2,
         seq=512, attention="eager", device="fake"),
    Case("GPT-2 124M, amp-bf16, SGD momentum, eager, b8 s128", "gpt2", "amp-bf16", optimizer="sgd-momentum",
         micro_batch=8, seq=128, attention="eager", device="fake"),
    Case("GPT-2 medium, bf16-mixed, AdamW, eager, full recompute, b4 s1024", "gpt2-medium", "bf16-mixed",
         micro_batch=4, seq=1024, attention="eager", recompute="full", device="fake"),
    Case("Llama mini (V=32000, GQA), bf16-mixed, AdamW, sdpa, b2 s256", LLAMA_32K, "bf16-mixed", micro_batch=2,
         seq=256),
    Case("Llama mini (V=32000), fp32, AdamW fused, eager, b2 s256", LLAMA_32K, "fp32", impl="fused",
         micro_batch=2, seq=256, attention="eager"),
    Case("Llama mini (V=128256), amp-bf16, AdamW foreach, sdpa, b2 s512", LLAMA_128K, "amp-bf16",
         impl="foreach", micro_batch=2, seq=512, device="fake"),
    Case("Llama mini (V=512), bf16, AdamW, eager, b16 s512", LLAMA_512, "bf16", micro_batch=16, seq=512,
         attention="eager", device="fake"),
    Case("Llama mini (V=32000), bf16, AdamW, sdpa, full recompute, b8 s1024", LLAMA_32K, "bf16", micro_batch=8,
         seq=1024, recompute="full", device="fake"),
    Case("reference decoder (V=32000), bf16, AdamW, sdpa, b4 s512", LLAMA_32K, "bf16", micro_batch=4, seq=512,
         source="reference", device="fake"),
    Case("reference decoder (V=32000), bf16, AdamW, eager, selective recompute, b4 s512", LLAMA_32K, "bf16",
         micro_batch=4, seq=512, attention="eager", recompute="selective", source="reference", device="fake"),
    Case("Llama-2-7B, bf16, AdamW, sdpa, b1 s4096", "llama-2-7b", "bf16", seq=4096, device="fake", slow=True),
    Case("Mistral-7B (GQA 8), bf16-mixed, AdamW foreach, sdpa, b1 s4096", "mistral-7b", "bf16-mixed",
         impl="foreach", seq=4096, device="fake", slow=True),
    Case("Llama-3-8B (V=128256), amp-bf16, AdamW fused, sdpa, b2 s4096", "llama-3-8b", "amp-bf16", impl="fused",
         micro_batch=2, seq=4096, device="fake", slow=True),
    Case("Llama-2-13B, bf16, AdamW, sdpa, full recompute, b4 s4096", "llama-2-13b", "bf16", micro_batch=4,
         seq=4096, recompute="full", device="fake", slow=True),
]


# ---------------------------------------------------------------------------------------------------------
# every family: a small config on the CPU, and full width under fake tensors
# ---------------------------------------------------------------------------------------------------------
# config key -> its small value (sizes of a real CPU step that takes a second); heads keep their MHA/GQA/MQA kind
SMALL = {"hidden_size": 64, "n_embd": 64, "intermediate_size": 96, "n_inner": 96, "ffn_hidden_size": 96,
         "moe_intermediate_size": 32, "intermediate_size_mlp": 96, "shared_expert_intermediate_size": 48,
         "vocab_size": 512, "max_position_embeddings": 256, "n_positions": 256, "n_ctx": 256,
         "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
         "sliding_window": 48, "attention_chunk_size": 48, "head_dim": 16}
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
HEAD_KEYS = ("num_attention_heads", "n_head")
KV_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv")


def small_config(config: dict) -> dict:
    """`config` at one period of its layer pattern with every size a few dozen (windows shorter than the test
    sequences, so their masks are exercised)."""
    from memplan.measure.trace.probe import one_period, text_config, with_class_defaults

    cfg = copy.deepcopy(one_period(with_class_defaults(text_config(config))))
    m = read_config(cfg, "config")
    at = m.first.attention
    heads = 4
    kv = heads if at.kv_heads == at.heads else (1 if at.kv_heads == 1 else 2)
    for key in HEAD_KEYS:
        if key in cfg:
            cfg[key] = heads
    for key in KV_KEYS:
        if key in cfg:
            cfg[key] = kv
    for key, value in SMALL.items():
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            cfg[key] = value
    if at.mla and cfg.get("head_dim") is not None:
        cfg["head_dim"] = SMALL["qk_rope_head_dim"]  # DeepseekV3Config.head_dim is the rotary part
    for key in EXPERT_KEYS:
        if isinstance(cfg.get(key), int):
            cfg[key] = 4 * (cfg.get("n_group") or 1) if isinstance(cfg.get("n_group"), int) else 4
    if isinstance(cfg.get("num_experts_per_tok"), int):
        cfg["num_experts_per_tok"] = min(cfg["num_experts_per_tok"], 2)
    if isinstance(cfg.get("n_group"), int):
        cfg["n_group"], cfg["topk_group"] = 1, 1
    for holder in ("rope_scaling", "rope_parameters"):  # LongRoPE lists have one entry per rotated frequency
        block = cfg.get(holder)
        if isinstance(block, dict):
            rot = int(read_config(cfg, "config").first.attention.head_dim
                      * read_config(cfg, "config").first.attention.rotary_fraction) // 2
            for key, value in list(block.items()):
                if isinstance(value, list) and value and all(isinstance(x, (int, float)) for x in value):
                    block[key] = [value[i % len(value)] for i in range(rot)]
    return cfg


def family_cases() -> list[Case]:
    from memplan.measure.trace import REPRESENTATIVE

    out = []
    recipes = ["bf16-mixed", "fp32", "amp-bf16", "bf16"]
    # the families read from the module tree (no family file) after the others, so that each family keeps the
    # recipe and attention its case had before they came
    order = sorted(REPRESENTATIVE, key=lambda f: (find_family(f) is None, f))
    for i, (family, profile) in enumerate((f, REPRESENTATIVE[f]) for f in order):
        spec = resolve_model(profile)
        small = small_config(spec.hf_config)
        recipe = recipes[i % len(recipes)]
        layers = read_config(small, "config").groups
        # transformers runs soft-capping (Gemma 2) and sinks (gpt-oss) with eager attention only
        no_sdpa = any(g.layer.attention.softcap is not None or g.layer.attention.sinks for g in layers)
        attention = "eager" if i % 3 == 2 or no_sdpa else "sdpa"
        out.append(Case(f"{family}: small config (cpu), {recipe}, {attention}, b2 s64", spec_of(f"{family}-small", small),
                        recipe, micro_batch=2, seq=64, attention=attention, device="cpu",
                        tolerance=FAMILY_TOLERANCE_PERCENT))
        # full width, one period of layers (two at least), pure bf16 at 4k tokens: activations and the loss's
        # fp32 logits outweigh the two layers' model states, so backward is the peak
        text = _text_model(spec.hf_config)
        layers = max(2, read_config(small, "config").n_layers)
        wide = apply_overrides(text, {"layers": layers}, profile)
        wide_spec = spec_of(f"{profile} ({layers} layers)", wide)
        seq = min(4096, wide_spec.arch.max_positions)
        if any(g.layer.attention.window == seq for g in wide_spec.arch.groups):
            seq = 3 * seq // 4  # a window exactly as long as the sequence is its own test (test_validation.py)
        wide_attention = "eager" if no_sdpa else "sdpa"
        out.append(Case(f"{family}: {profile} at full width, {layers} layers (fake), bf16, {wide_attention}, "
                        f"b1 s{seq}", wide_spec, "bf16", micro_batch=1, seq=seq, attention=wide_attention,
                        device="fake", slow=True, tolerance=FAMILY_TOLERANCE_PERCENT))
    return out


def _text_model(config: dict) -> dict:
    """A multimodal config's text model as its own config (what the trace and the CPU step build)."""
    from memplan.measure.trace.probe import text_config

    return text_config(config)


def run_case(case: Case):
    """(estimate, measured step) for one case."""
    from memplan.measure.runner import measure_training_step
    from memplan.memory.estimate import estimate_memory

    setup = case.setup()
    measured = measure_training_step(setup, device=case.device, model_source=case.source, optimizer_impl=case.impl)
    assert measured.optimizer_impl == case.impl
    return estimate_memory(setup, kernels="cpu"), measured


def memtracker_peak(case: Case) -> int:
    """PyTorch's MemTracker (torch.distributed._tools.mem_tracker) on the same steady-state step: its peak."""
    import contextlib
    import gc

    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from memplan.measure.runner import _Phases, _Step, fake_mode

    mode = fake_mode() if case.device == "fake" else contextlib.nullcontext()
    with mode:
        step = _Step(case.setup(), case.device, case.source, case.impl, seed=0)
        step.run(_Phases([]))  # warm-up: optimizer states exist from here on
        gc.collect()
        mt = MemTracker()
        inner = getattr(step.optimizer, "inner", step.optimizer)
        mt.track_external(step.built.module, inner, step.input_ids, step.targets,
                          *getattr(step.optimizer, "master", []), *getattr(step.optimizer, "main_grads", []))
        with mt:
            step.run(_Phases([]))
        return mt.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def error_percent(estimated: int, measured: int) -> float:
    return (estimated - measured) / measured * 100


def main() -> None:
    import sys
    import time

    gib = 1024 ** 3
    suites = {"cases": CASES, "families": family_cases()}
    which = sys.argv[1:] or list(suites)
    for name in which:
        print(f"\n### {name}\n")
        print("| case | device | estimate (GiB) | phase | measured (GiB) | phase | error | MemTracker |")
        print("|---|---|---:|---|---:|---|---:|---:|")
        for case in suites[name]:
            t = time.time()
            est, m = run_case(case)
            err = error_percent(est.per_gpu.peak_allocated, m.peak_allocated)
            mt = memtracker_peak(case) if name == "families" else None
            mt_col = "" if mt is None else f"{error_percent(est.per_gpu.peak_allocated, mt):+.2f}%"
            print(f"| {case.label} | {case.device} | {est.per_gpu.peak_allocated / gib:.4f} | {est.peak_phase} | "
                  f"{m.peak_allocated / gib:.4f} | {m.peak_phase} | {err:+.2f}% | {mt_col} |  <!-- "
                  f"{est.per_gpu.peak_allocated} {m.peak_allocated} {mt} {time.time() - t:.1f}s -->", flush=True)


if __name__ == "__main__":
    main()
