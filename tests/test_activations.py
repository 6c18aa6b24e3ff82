"""Saved activations of the `hf` profile, derived by hand from the modeling code (each expectation below is the
list of tensors autograd keeps, as torch.autograd.graph.saved_tensors_hooks shows them for transformers 5 on
PyTorch 2.x), and the `megatron` profile's relation to Korthikanti et al. 2022.
"""
from __future__ import annotations

import pytest

from memplan.catalog import resolve_model
from memplan.errors import MemplanError
from memplan.memory.activations import activations, precision_mode
from memplan.memory.implementations import evaluate, get_implementation
from memplan.spec.model import ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.layout import Layout
from memplan.spec.training import Workload, get_recipe


def setup(model="llama-2-7b", recipe="bf16", b=1, s=4096, tp=1, sp=False, **w) -> TrainingSetup:
    # this file checks the hand-written rows (hf.json); the traced profiles are checked against measured steps
    # (tests/test_validation.py)
    w.setdefault("implementation", "hf-hand")
    m = model if isinstance(model, ModelSpec) else resolve_model(model)
    lay = {k: w.pop(k) for k in list(w) if k in Layout.model_fields}
    return TrainingSetup(model=m, recipe=get_recipe(recipe),
                         layout=Layout(gpus=tp, tp=tp, sequence_parallel=sp, micro_batch=b, **lay),
                         workload=Workload(seq=s, **w))


def llama_layer_bytes(b, s, h, q, kv, f, a, act, fp32_norm_in=4):
    """LlamaDecoderLayer with sdpa, activation dtype `act` bytes (2 half, 4 fp32):
    each RMSNorm keeps its fp32 input, 1/rms (fp32, b*s), the normalized tensor and its output (act bytes);
    attention keeps the rotated query, the DynamicCache's K and V copies, the output and the fp32 log-sum-exp;
    the SwiGLU MLP keeps gate, up, silu(gate) and the product."""
    norms = 2 * (fp32_norm_in * b * s * h + 4 * b * s + act * b * s * h + act * b * s * h)
    attention = act * b * s * q + 2 * act * b * s * kv + act * b * s * q + 4 * b * a * s
    mlp = 4 * act * b * s * f
    return norms + attention + mlp


def test_llama_7b_layer_bf16_sdpa():
    assert activations(setup()).layer == llama_layer_bytes(1, 4096, 4096, 4096, 4096, 11008, 32, act=2)


def test_llama_7b_layer_fp32_keeps_everything_in_fp32():
    assert activations(setup(recipe="fp32")).layer == llama_layer_bytes(1, 4096, 4096, 4096, 4096, 11008, 32, act=4)


def test_gqa_keeps_kv_at_kv_heads_with_sdpa():
    # Mistral-7B: 8 KV heads of 128 -> kv = 1024; sdpa runs GQA natively (no repeat_kv without a mask)
    got = activations(setup("mistral-7b", b=2, s=1024)).layer
    assert got == llama_layer_bytes(2, 1024, 4096, 4096, 1024, 14336, 32, act=2)


def test_autocast_keeps_fp32_norms_and_per_linear_casts_and_weight_copies():
    # torch.autocast over fp32 weights: norms run in fp32 (input, normalized: 4 B), the norm output is cast to
    # bf16 once per reading linear (q, k, v: 3; gate, up: 2), and each linear's weight is cast once (2 B/param)
    b, s, h, f, a = 1, 2048, 4096, 11008, 32
    st = setup(recipe="amp-bf16", s=s)
    norms = 2 * (4 * b * s * h + 4 * b * s + 4 * b * s * h) + (3 + 2) * 2 * b * s * h
    attention = 2 * b * s * h + 2 * 2 * b * s * h + 2 * b * s * h + 4 * b * a * s
    weights = 2 * (4 * h * h + 3 * h * f)
    assert activations(st).layer == norms + attention + 4 * 2 * b * s * f + weights


def test_gpt2_eager_is_korthikanti_plus_what_unfused_gelu_new_keeps():
    # GPT-2 (dropout 0.1, eager, 16-bit, CUDA kernels): Korthikanti's 34sbh + 5as^2b, plus NewGELUActivation's
    # tanh(.), 1 + tanh(.) and 0.5x (3 x 2*b*s*4h = 24sbh) and the LayerNorms' fp32 mean and 1/std (2 x 8bs)
    b, s, h, a = 2, 1024, 768, 12
    st = setup("gpt2", b=b, s=s, attention="eager")
    assert activations(st).layer == 34 * s * b * h + 5 * a * s * s * b + 24 * s * b * h + 16 * b * s


def test_dropout_masks_follow_the_kernels():
    # CUDA's native_dropout keeps a bool mask (1 B); PyTorch's CPU path keeps the scaled mask in the input dtype
    b, s, h, a = 1, 512, 768, 12
    cuda = activations(setup("gpt2", b=b, s=s, attention="eager")).layer
    cpu = activations(setup("gpt2", b=b, s=s, attention="eager"), kernels="cpu").layer
    # two residual masks (b*s*h) and the attention mask (b*a*s^2): 1 -> 2 bytes; LayerNorm stats fp32 -> bf16
    assert cpu - cuda == (2 * b * s * h + b * a * s * s) - 2 * 2 * (2 * b * s)


def test_logits_and_their_fp32_copy_are_counted():
    st = setup("llama-3-8b", b=1, s=8192)
    acts = activations(st)
    v = 128256
    assert acts.forward_only == 2 * 8192 * v          # bf16 logits of the model output
    assert acts.loss_forward == 4 * 8192 * v          # logits.float() in ForCausalLMLoss
    assert any(line.name.startswith("log-softmax") and line.bytes == 4 * 8192 * v for line in acts.lines)
    assert acts.loss_backward == 2 * 4 * 8192 * v     # the incoming and outgoing fp32 gradients of log_softmax


def test_full_recompute_keeps_the_layer_input_only():
    bf16 = activations(setup(recompute="full"))
    assert bf16.layer == 2 * 4096 * 4096 and bf16.layer_full == activations(setup()).layer
    assert activations(setup(recipe="amp-bf16", recompute="full")).layer == 4 * 4096 * 4096  # fp32 residual


def test_selective_recompute_drops_the_attention_core():
    eager = activations(setup(s=2048, attention="eager"))
    sel = activations(setup(s=2048, attention="eager", recompute="selective"))
    # Llama eager keeps the fp32 softmax (4 B) and its bf16 copy (2 B): 6 * b * a * s^2
    assert eager.layer - sel.layer == 6 * 32 * 2048 * 2048


def test_tensor_parallel_splits_what_megatron_splits():
    one, two = activations(setup(s=2048)), activations(setup(s=2048, tp=2))
    sp = activations(setup(s=2048, tp=2, sp=True))
    b, s, h, a, f = 1, 2048, 4096, 32, 11008
    replicated = 2 * (4 * b * s * h + 4 * b * s + 2 * b * s * h + 2 * b * s * h)  # the norms
    split = one.layer - replicated
    assert two.layer == replicated + split // 2
    assert sp.layer == one.layer // 2


def test_precision_modes():
    assert precision_mode(get_recipe("fp32")) == "fp32"
    assert precision_mode(get_recipe("amp-fp16")) == "autocast"
    assert {precision_mode(get_recipe(r)) for r in ("bf16", "bf16-mixed", "fp16-mixed", "fp8-mixed")} == {"half"}


def test_profiles_are_data_and_bad_input_is_one_line():
    assert evaluate("2*b*s*h + b*a*s*s", {"b": 2, "s": 3, "h": 5, "a": 7}) == 60 + 126
    with pytest.raises(MemplanError, match="bad size expression"):
        evaluate("b**2", {"b": 2})
    with pytest.raises(MemplanError, match="unknown size"):
        evaluate("b*zz", {"b": 2})
    with pytest.raises(MemplanError, match="megatron"):
        get_implementation("megatorn")
    assert get_implementation("Megatron-LM").name == "megatron"
    assert get_implementation("transformers").name == "hf"


def test_cuda_autocast_runs_gelu_new_pow_in_fp32():
    # torch.autocast on CUDA lists pow among the fp32 ops, so NewGELUActivation's tanh(.) and 1 + tanh(.) are fp32
    # (2 x 4 B instead of 2 x 2 B per b*s*f element); the CPU's autocast keeps them in bf16 (measured)
    b, s, f = 2, 512, 3072
    st = setup("gpt2", recipe="amp-bf16", b=b, s=s, attention="eager")
    assert activations(st).layer - activations(st, kernels="cpu").layer == (
        2 * (4 - 2) * b * s * f                # tanh, 1 + tanh: fp32 on CUDA, bf16 on the CPU
        - (2 - 1) * b * 12 * s * s             # dropout masks: bool on CUDA, bf16 on the CPU (attention: b*a*s^2,
        - (2 - 1) * 2 * b * s * 768)           # the two residual masks: b*s*h); LayerNorm stats fp32 on both
