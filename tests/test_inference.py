"""Serving: the KV cache measured from transformers' cache tensors, weights with quantisation scales from the
checkpoint layouts, published KV figures (vLLM, Mistral), what fits, and the roofline's invariants."""
from __future__ import annotations

import math

import pytest

from memplan.catalog import get_gpu, get_model_profile
from memplan.memory.inference import estimate_inference, required_bytes, weight_bytes
from memplan.spec.inference import InferenceSetup
from memplan.spec.model import Architecture, ModelSpec
from memplan.spec.layout import Layout
from memplan.spec.training import DType
from tests.helpers import cli_json, run_cli

H100 = get_gpu("h100-sxm")


def _small(kv_heads: int, window: int | None = None, family: str = "llama") -> ModelSpec:
    a = Architecture(family=family, n_layers=3, hidden_size=64, n_heads=8, n_kv_heads=kv_heads, ffn_hidden_size=128,
                     vocab_size=128, max_positions=512, sliding_window=window)
    return ModelSpec(name=f"{family}-kv{kv_heads}", architecture=a)


def _cache_bytes(cache) -> tuple[int, int]:
    """Bytes of every key and value tensor the cache object holds, and the tokens it holds per sequence."""
    layers = cache.layers
    return sum(t.nbytes for layer in layers for t in (layer.keys, layer.values)), layers[0].keys.shape[-2]


# ---- the KV cache, measured -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kv_heads", [8, 2, 1])  # MHA, GQA, MQA
def test_kv_cache_equals_dynamic_cache_after_prefill(kv_heads):
    import torch

    from memplan.measure.models import build_model

    spec = _small(kv_heads)
    m = build_model(spec, "hf", dtype=torch.bfloat16).module
    ids = torch.randint(0, 128, (3, 100))
    with torch.no_grad():
        cache = m(input_ids=ids, use_cache=True).past_key_values
    measured, tokens = _cache_bytes(cache)
    est = estimate_inference(InferenceSetup(model=spec, batch=3, context=100))
    assert tokens == 100 and measured == est.per_gpu.kv_cache


def test_kv_cache_of_generation():
    """generate() with a 40-token prompt and 24 new tokens: context 64.  The cache ends holding 63 tokens (the last
    generated token is never fed back), within 5% of the estimate for the full context."""
    import torch

    from memplan.measure.models import build_model

    spec = _small(2)
    m = build_model(spec, "hf", dtype=torch.bfloat16).module
    ids = torch.randint(1, 128, (2, 40))
    out = m.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False, return_dict_in_generate=True,
                     pad_token_id=0)
    measured, tokens = _cache_bytes(out.past_key_values)
    est = estimate_inference(InferenceSetup(model=spec, batch=2, context=64))
    assert tokens == 63
    assert measured == pytest.approx(est.per_gpu.kv_cache, rel=0.05)
    assert measured == est.kv_bytes_per_token * 63 * 2


def test_sliding_window_caps_the_cache():
    """Mistral-style window of 64, 200-token sequences: transformers' DynamicSlidingWindowLayer keeps 63 tokens
    between steps (and window 64 during one); the estimate caps at the window."""
    import torch

    from memplan.measure.models import build_model

    spec = _small(2, window=64, family="mistral")
    m = build_model(spec, "hf", dtype=torch.bfloat16).module
    with torch.no_grad():
        cache = m(input_ids=torch.randint(0, 128, (3, 200)), use_cache=True).past_key_values
    measured, tokens = _cache_bytes(cache)
    est = estimate_inference(InferenceSetup(model=spec, batch=3, context=200))
    assert tokens == 63 and est.kv_tokens == 64
    assert measured == pytest.approx(est.per_gpu.kv_cache, rel=0.05)


@pytest.mark.parametrize("attention,batch,seq", [("sdpa", 2, 256), ("sdpa", 1, 1024), ("eager", 2, 256),
                                                 ("eager", 1, 1024)])
def test_prefill_workspace_is_measured(attention, batch, seq):
    """Peak of a no-grad prefill forward (use_cache, logits of the last token as generate() asks), every storage
    counted by memplan.measure.tracker, minus the KV cache it builds: within 5% of the estimate."""
    import torch

    from memplan.measure.models import build_model
    from memplan.measure.tracker import StorageTracker
    from memplan.memory.inference import prefill_workspace_bytes

    a = Architecture(family="llama", n_layers=4, hidden_size=256, n_heads=8, n_kv_heads=2, ffn_hidden_size=688,
                     vocab_size=2048, max_positions=2048)
    spec = ModelSpec(name="m", architecture=a)
    m = build_model(spec, "hf", attention=attention, dtype=torch.bfloat16).module.eval()
    ids = torch.randint(0, a.vocab_size, (batch, seq))
    fixed = list(m.parameters()) + list(m.buffers()) + [ids]
    tr = StorageTracker("cpu")
    tr.track(fixed, "weights")
    with torch.no_grad(), tr:
        tr.set_phase("forward")
        cache = m(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
    kv, _ = _cache_bytes(cache)
    measured = tr.peak - sum(t.nbytes for t in fixed) - kv
    est = prefill_workspace_bytes(InferenceSetup(model=spec, batch=batch, context=seq, attention=attention))
    assert est == pytest.approx(measured, rel=0.05)


# ---- published figures ------------------------------------------------------------------------------------
def test_vllm_paper_opt_13b_kv_per_token():
    """Kwon et al. 2023 (vLLM), sec. 3: "the KV cache of a single token demands 800 KB of space, calculated as
    2 (key and value vectors) x 5120 (hidden state size) x 40 (number of layers) x 2 (bytes per FP16)"."""
    opt = Architecture(family="opt", n_layers=40, hidden_size=5120, n_heads=40, ffn_hidden_size=20480, mlp="gelu",
                       norm="layernorm", norm_bias=True, vocab_size=50272, max_positions=2048, position="learned",
                       tied_embeddings=True, qkv_bias=True, attn_out_bias=True, mlp_bias=True)
    est = estimate_inference(InferenceSetup(model=ModelSpec(name="opt-13b", architecture=opt), context=2048,
                                            kv_dtype=DType.fp16, weights_dtype=DType.fp16))
    assert est.kv_bytes_per_token == 2 * 5120 * 40 * 2 == 800 * 1024


def test_mistral_rolling_buffer_saves_8x_at_32k():
    """Jiang et al. 2023 (Mistral 7B), sec. 2: "On a sequence length of 32k tokens, this reduces the cache memory
    usage by 8x"."""
    mistral = get_model_profile("mistral-7b")
    no_window = mistral.model_copy(update={"architecture": mistral.arch.model_copy(update={"sliding_window": None})})
    with_w = estimate_inference(InferenceSetup(model=mistral, context=32768)).per_gpu.kv_cache
    without = estimate_inference(InferenceSetup(model=no_window, context=32768)).per_gpu.kv_cache
    assert without == 8 * with_w


def test_llama2_70b_gqa_kv_per_token():
    """Llama 2 70B: 80 layers, 8 KV heads of 128 (GQA, Touvron et al. 2023 sec. 2.2): 2 x 80 x 8 x 128 x 2 B =
    320 KiB per token, an eighth of its 64-head MHA equivalent; over tp=8 each GPU holds one KV head."""
    m = get_model_profile("llama-2-70b")
    assert estimate_inference(InferenceSetup(model=m, context=4096)).kv_bytes_per_token == 320 * 1024
    tp8 = estimate_inference(InferenceSetup(model=m, context=4096, layout=Layout(gpus=8, tp=8)))
    assert tp8.kv_bytes_per_token == 320 * 1024 // 8


# ---- weights with scales: the checkpoint layouts ------------------------------------------------------------
def _linear_shapes(a: Architecture):
    return [(lin.in_features, lin.out_features) for lin in a.linears() for _ in range(a.n_layers)]


def test_int4_weights_follow_the_awq_layout():
    """AutoAWQ WQLinear_GEMM (w_bit 4, group 128): qweight int32 [in, out/8], qzeros int32 [in/128, out/8],
    scales fp16 [in/128, out]; the rest (embeddings, norms, LM head) fp16/bf16."""
    m = get_model_profile("llama-2-7b")
    a = m.arch
    linear = sum(i * (o // 8) * 4 + (i // 128) * (o // 8) * 4 + (i // 128) * o * 2 for i, o in _linear_shapes(a))
    rest = (m.parameters.total - sum(i * o for i, o in _linear_shapes(a))) * 2
    total, _, _ = weight_bytes(InferenceSetup(model=m, context=16, weights_dtype=DType.int4))
    assert total == linear + rest


def test_int8_weights_have_row_scales():
    """LLM.int8() (bitsandbytes Int8Params): int8 CB [out, in] + fp32 SCB [out]."""
    m = get_model_profile("llama-2-7b")
    linear = sum(i * o + 4 * o for i, o in _linear_shapes(m.arch))
    rest = (m.parameters.total - sum(i * o for i, o in _linear_shapes(m.arch))) * 2
    assert weight_bytes(InferenceSetup(model=m, context=16, weights_dtype=DType.int8))[0] == linear + rest


# ---- what fits -----------------------------------------------------------------------------------------------
def test_max_batch_and_context_are_the_largest_that_fit():
    m = get_model_profile("llama-2-13b")
    s = InferenceSetup(model=m, batch=4, context=4096)
    est = estimate_inference(s, H100, max_batch=True, max_context=True)
    cap = H100.memory_bytes
    assert required_bytes(s, H100, est.max_batch, 4096) <= cap < required_bytes(s, H100, est.max_batch + 1, 4096)
    c = est.max_context
    assert c == m.arch.max_positions or required_bytes(s, H100, 4, c) <= cap < required_bytes(s, H100, 4, c + 1)
    assert est.per_gpu.required == required_bytes(s, H100, 4, 4096)


def test_cli_json_fields(capsys):
    out = cli_json(capsys, "estimate", "llama-2-7b", "--mode", "inference", "--batch", "8", "--context", "4096",
                   "-g", "a100-80gb", "--max-batch", "--max-context", "--kv-dtype", "fp8")
    g = out["per_gpu"]
    assert g["kv_cache"] == 2 * 32 * 32 * 128 * 1 * 4096 * 8  # fp8: 1 byte
    assert g["required"] == g["weights"] + g["kv_cache"] + g["activations"] + g["overheads"]
    assert out["max_batch"] > 8 and out["max_context"] >= 4096
    assert out["roofline"]["decode_bound"] == "memory"


def test_encoder_is_refused(capsys):
    code, _, err = run_cli(capsys, "estimate", "bert-base", "--mode", "inference", "--context", "128")
    assert code == 2 and "encoder" in err and len(err.strip().splitlines()) == 1


# ---- the roofline ---------------------------------------------------------------------------------------------
def test_decode_is_bandwidth_bound_at_small_batch():
    """Pope et al. 2022 sec. 3.1: at batch 1 a decode step does ~2 FLOPs per weight byte pair, ~1 FLOP/byte in
    16-bit, far below the H100's ~295 FLOP/byte balance; its time is the bytes read over the bandwidth."""
    m = get_model_profile("llama-2-7b")
    est = estimate_inference(InferenceSetup(model=m, batch=1, context=1024), H100)
    r = est.roofline
    assert r.decode_bound == "memory"
    assert r.decode_bytes_per_step == est.per_gpu.weights + est.per_gpu.kv_cache
    assert r.decode_step_seconds == pytest.approx(r.decode_bytes_per_step / (3350e9), rel=1e-9)
    assert 0.9 < r.decode_flops_per_step / r.decode_bytes_per_step < 1.2
    assert r.decode_tokens_per_second == pytest.approx(1 / r.decode_step_seconds)


def test_tensor_parallel_splits_decode_bytes_and_prefill_is_compute_bound():
    m = get_model_profile("llama-2-70b")
    one = estimate_inference(InferenceSetup(model=m, batch=8, context=2048, layout=Layout(gpus=2, tp=2)),
                             H100).roofline
    four = estimate_inference(InferenceSetup(model=m, batch=8, context=2048, layout=Layout(gpus=4, tp=4)),
                              H100).roofline
    # weights and KV heads split 4 ways instead of 2 (the replicated norms and the 1-head floor aside)
    assert four.decode_bytes_per_step == pytest.approx(one.decode_bytes_per_step / 2, rel=0.01)
    assert four.prefill_bound == "compute"
    compute = [r.time_to_first_token_seconds - r.prefill_comm_seconds for r in (one, four)]
    assert compute[1] == pytest.approx(compute[0] / 2, rel=1e-9)
    # Megatron: 2 ring all-reduces of the hidden states per layer on NVLink4 (450 GB/s, 3 us per ring step)
    tokens, h, layers = 8 * 2048, 8192, 80
    ring = 2 * 3 / 4 * tokens * h * 2
    assert four.prefill_comm_seconds == pytest.approx(2 * layers * (ring / 450e9 + 2 * 3 * 3e-6), rel=1e-9)


def test_chunked_prefill_rereads_weights():
    m = get_model_profile("llama-2-7b")
    whole = estimate_inference(InferenceSetup(model=m, batch=1, context=8192), H100)
    chunked = estimate_inference(InferenceSetup(model=m, batch=1, context=8192, prefill_chunk=16), H100)
    assert chunked.per_gpu.activations < whole.per_gpu.activations
    # 512 passes x 13.5 GB over 3.35 TB/s: memory bound, slower than one pass
    assert chunked.roofline.prefill_bound == "memory"
    assert chunked.roofline.prefill_seconds == pytest.approx(512 * whole.per_gpu.weights / 3350e9, rel=1e-9)
    assert math.isclose(whole.roofline.prefill_flops, chunked.roofline.prefill_flops)


def test_serving_and_lora_estimates_import_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom memplan.cli import main\n"
            "main(['estimate', 'llama-2-7b', '--mode', 'inference', '--context', '512', '-g', 'h100', '--max-batch'])\n"
            "main(['estimate', 'llama-2-7b', '--lora-rank', '8', '--quantize-base', 'nf4', '--seq', '512'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
