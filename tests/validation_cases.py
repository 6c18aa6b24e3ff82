"""The estimate-vs-measurement cases: each a training setup, the device the runner measures it on, and the model
source.  tests/test_validation.py asserts every case; `python -m tests.validation_cases` prints the table
published in docs/validation.md (estimate, measured, error), from a fresh measurement.

Small models run real steps on the CPU; full-size ones (7B-13B, 4k tokens) are traced under FakeTensorMode
(exact tensor bytes, no memory).  The estimate is asked for PyTorch's CPU kernels (`kernels="cpu"`), which is
what both devices execute; the optimizer implementation is the one the runner is told to use.
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.catalog import resolve_model
from memplan.spec.model import Architecture, ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import Workload, get_optimizer, get_recipe

TOLERANCE_PERCENT = 5.0  # the goal: every case within +-5% of the measured peak


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

    def setup(self) -> TrainingSetup:
        model = self.model if isinstance(self.model, ModelSpec) else resolve_model(self.model)
        return TrainingSetup(model=model, recipe=get_recipe(self.recipe), optimizer=get_optimizer(self.optimizer),
                             workload=Workload(micro_batch=self.micro_batch, seq=self.seq, attention=self.attention,
                                               recompute=self.recompute, optimizer_impl=self.impl))


def _llama(name: str, vocab: int, layers: int = 4, hidden: int = 256, kv: int = 2) -> ModelSpec:
    # a Llama-family model small enough for a real CPU step, with a real tokenizer's vocabulary
    return ModelSpec(name=name, architecture=Architecture(
        family="llama", n_layers=layers, hidden_size=hidden, n_heads=8, n_kv_heads=kv, ffn_hidden_size=688,
        vocab_size=vocab, max_positions=4096))


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


def run_case(case: Case):
    """(estimate, measured step) for one case."""
    from memplan.measure.runner import measure_training_step
    from memplan.memory.estimate import estimate_memory

    setup = case.setup()
    measured = measure_training_step(setup, device=case.device, model_source=case.source, optimizer_impl=case.impl)
    assert measured.optimizer_impl == case.impl
    return estimate_memory(setup, kernels="cpu"), measured


def error_percent(estimated: int, measured: int) -> float:
    return (estimated - measured) / measured * 100


def main() -> None:
    import time

    gib = 1024 ** 3
    print("| case | device | estimate (GiB) | phase | measured (GiB) | phase | error |")
    print("|---|---|---:|---|---:|---|---:|")
    for case in CASES:
        t = time.time()
        est, m = run_case(case)
        err = error_percent(est.per_gpu.peak_allocated, m.peak_allocated)
        print(f"| {case.label} | {case.device} | {est.per_gpu.peak_allocated / gib:.3f} | {est.peak_phase} | "
              f"{m.peak_allocated / gib:.3f} | {m.peak_phase} | {err:+.2f}% |  <!-- {est.per_gpu.peak_allocated} "
              f"{m.peak_allocated} {time.time() - t:.1f}s -->", flush=True)


if __name__ == "__main__":
    main()
