"""Serving: the transformers (hf) view measured from transformers' own tensors, published KV figures (vLLM paper,
Mistral, Llama 2), what fits, the default vLLM view from the CLI, and the roofline's invariants.

vLLM's accounting itself is tests/test_vllm.py; the KV cache per layer kind tests/test_kv_cache.py; the weight
formats tests/test_quantized.py.
"""
from __future__ import annotations

import math

import pytest

from memplan.catalog import get_gpu, get_model_profile
from memplan.families.custom import build
from memplan.families.registry import read_config
from memplan.memory.hf_serving import prefill_workspace_bytes, required_bytes
from memplan.answers.inference import estimate_inference
from memplan.setups import serving_setup
from memplan.spec.model import ModelSpec
from tests.helpers import cli_json, run_cli

H100 = get_gpu("h100-sxm")
GiB = 1 << 30


def _small(kv_heads: int, window: int | None = None) -> tuple[ModelSpec, dict]:
    cfg = {"model_type": "mistral" if window else "llama", "num_hidden_layers": 3, "hidden_size": 64,
           "num_attention_heads": 8, "num_key_value_heads": kv_heads, "intermediate_size": 128, "vocab_size": 128,
           "max_position_embeddings": 512, "sliding_window": window}
    return ModelSpec(name=f"kv{kv_heads}", architecture=read_config(cfg, "small"), hf_config=cfg), cfg


def _hf_model(cfg: dict, attention: str = "sdpa"):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    c = AutoConfig.for_model(**{k: v for k, v in cfg.items() if v is not None})
    return AutoModelForCausalLM.from_config(c, dtype=torch.bfloat16, attn_implementation=attention).eval()


def _held_bytes(cache) -> int:
    return sum(t.untyped_storage().nbytes() for layer in cache.layers for t in (layer.keys, layer.values))


def hf(model, **kw):
    return estimate_inference(serving_setup(model, engine="hf", **kw))


# ---- the hf engine's KV cache, measured --------------------------------------------------------------------------
@pytest.mark.parametrize("kv_heads", [8, 2, 1])  # MHA, GQA, MQA
def test_kv_cache_equals_dynamic_cache_after_prefill(kv_heads):
    import torch

    spec, cfg = _small(kv_heads)
    ids = torch.randint(0, 128, (3, 100))
    with torch.no_grad():
        cache = _hf_model(cfg)(input_ids=ids, use_cache=True).past_key_values
    assert _held_bytes(cache) == hf(spec, batch=3, context=100).per_gpu.kv_cache


def test_kv_cache_of_generation():
    """generate() with a 40-token prompt and 24 new tokens: context 64.  The cache ends holding 63 tokens (the last
    generated token is never fed back): the estimate counts the context, one token more."""
    import torch

    spec, cfg = _small(2)
    out = _hf_model(cfg).generate(torch.randint(1, 128, (2, 40)), max_new_tokens=24, min_new_tokens=24,
                                  do_sample=False, return_dict_in_generate=True, pad_token_id=0)
    est = hf(spec, batch=2, prompt=40, output=24)
    assert out.past_key_values.layers[0].keys.shape[-2] == 63
    assert _held_bytes(out.past_key_values) == est.kv_bytes_per_token * 63 * 2 == est.per_gpu.kv_cache * 63 // 64


def test_sliding_window_holds_the_prompt_after_prefill():
    """Mistral-style window of 64 and 200-token prompts: DynamicSlidingWindowLayer shows 63 tokens, but its keys are
    a view of the whole 200-token concatenation until the first decode step; the estimate counts that storage."""
    import torch

    spec, cfg = _small(2, window=64)
    with torch.no_grad():
        cache = _hf_model(cfg)(input_ids=torch.randint(0, 128, (3, 200)), use_cache=True).past_key_values
    est = hf(spec, batch=3, context=200)
    assert cache.layers[0].keys.shape[-2] == 63 and est.kv_tokens == 200
    assert _held_bytes(cache) == est.per_gpu.kv_cache


@pytest.mark.parametrize("attention,batch,seq", [("sdpa", 2, 256), ("sdpa", 1, 1024), ("eager", 2, 256),
                                                 ("eager", 1, 1024)])
def test_prefill_workspace_is_measured(attention, batch, seq):
    """Peak of a no-grad prefill forward (use_cache, logits of the last token as generate() asks), every storage
    counted by memplan.measure.tracker, minus the KV cache it builds: within 5% of the estimate."""
    import torch

    from memplan.measure.tracker import StorageTracker

    cfg = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 8,
           "num_key_value_heads": 2, "intermediate_size": 688, "vocab_size": 2048, "max_position_embeddings": 2048}
    spec = ModelSpec(name="m", architecture=read_config(cfg, "m"), hf_config=cfg)
    m = _hf_model(cfg, attention)
    ids = torch.randint(0, 2048, (batch, seq))
    fixed = list(m.parameters()) + list(m.buffers()) + [ids]
    tr = StorageTracker("cpu")
    tr.track(fixed, "weights")
    with torch.no_grad(), tr:
        tr.set_phase("forward")
        cache = m(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
    measured = tr.peak - sum(t.nbytes for t in fixed) - _held_bytes(cache)
    est = prefill_workspace_bytes(serving_setup(spec, engine="hf", batch=batch, context=seq, attention=attention))
    assert est == pytest.approx(measured, rel=0.05)


# ---- published figures --------------------------------------------------------------------------------------------
def test_vllm_paper_opt_13b_kv_per_token():
    """Kwon et al. 2023 (vLLM), sec. 3: "the KV cache of a single token demands 800 KB of space, calculated as
    2 (key and value vectors) x 5120 (hidden state size) x 40 (number of layers) x 2 (bytes per FP16)"."""
    opt = ModelSpec(name="opt-13b", architecture=build({"layers": 40, "hidden": 5120, "heads": 40, "ffn": 20480,
                                                        "vocab": 50272, "mlp": "gelu", "norm": "layernorm"}))
    est = hf(opt, context=2048, kv_dtype="fp16", weights_dtype="fp16")
    assert est.kv_bytes_per_token == 2 * 5120 * 40 * 2 == 800 * 1024


def test_mistral_rolling_buffer_saves_8x_at_32k():
    """Jiang et al. 2023 (Mistral 7B), sec. 2: "On a sequence length of 32k tokens, this reduces the cache memory
    usage by 8x" (window 4096): true of the decode steps; a long one-pass prefill holds its whole prompt."""
    mistral = get_model_profile("mistral-7b")
    assert mistral.arch.first.attention.window == 4096
    cfg = {**mistral.hf_config, "sliding_window": None}
    full = ModelSpec(name="no-window", architecture=read_config(cfg, "m"), hf_config=cfg)
    gen = dict(prompt=512, output=32768 - 512)
    assert hf(full, **gen).per_gpu.kv_cache == 8 * hf(mistral, **gen).per_gpu.kv_cache
    assert hf(mistral, context=32768).per_gpu.kv_cache == hf(full, context=32768).per_gpu.kv_cache
    chunked = hf(mistral, context=32768, prefill_chunk=4097).per_gpu.kv_cache
    assert chunked == 2 * hf(mistral, **gen).per_gpu.kv_cache  # window - 1 + chunk = 8192 tokens held


def test_llama2_70b_gqa_kv_per_token():
    """Llama 2 70B: 80 layers, 8 KV heads of 128 (GQA, Touvron et al. 2023 sec. 2.2): 2 x 80 x 8 x 128 x 2 B =
    320 KiB per token; over tp=8 each GPU holds one KV head."""
    m = get_model_profile("llama-2-70b")
    assert hf(m, context=4096).kv_bytes_per_token == 320 * 1024
    assert hf(m, context=4096, tp=8).kv_bytes_per_token == 320 * 1024 // 8


def test_generic_int4_and_int8_formats():
    """--weights-dtype int4: AutoAWQ WQLinear_GEMM (qweight int32 [in, out/8], qzeros int32 [in/128, out/8], scales
    fp16 [in/128, out]); int8: LLM.int8() (int8 CB [out, in] + fp32 SCB [out]); the rest 16-bit."""
    m = get_model_profile("llama-2-7b")
    shapes = [(x.in_features, x.out_features) for x in m.arch.linears(m.arch.first)] * m.arch.n_layers
    rest = (m.parameters.total - sum(i * o for i, o in shapes)) * 2
    int4 = sum(i * (o // 8) * 4 + (i // 128) * (o // 8) * 4 + (i // 128) * o * 2 for i, o in shapes)
    assert hf(m, context=16, weights_dtype="int4").per_gpu.weights == int4 + rest
    int8 = sum(i * o + 4 * o for i, o in shapes)
    assert hf(m, context=16, weights_dtype="int8").per_gpu.weights == int8 + rest


def test_unchunked_prefill_says_so():
    """The issue's new-user case: 32 x 8192 tokens in one transformers prefill pass dominates; the note says how
    to chunk it, and vLLM (the default engine) chunks by max_num_batched_tokens and starts."""
    kw = dict(batch=32, context=8192, tp=4)
    est = estimate_inference(serving_setup("llama-3-70b", engine="hf", **kw), H100)
    assert any("--prefill-chunk" in n for n in est.notes)
    v = estimate_inference(serving_setup("llama-3-70b", **kw), H100)
    assert v.engine == "vllm" and v.vllm.starts and v.fits


# ---- what fits -------------------------------------------------------------------------------------------------------
def test_max_batch_and_context_are_the_largest_that_fit():
    m = get_model_profile("llama-2-13b")
    s = serving_setup(m, engine="hf", batch=4, context=4096)
    est = estimate_inference(s, H100, max_batch=True, max_context=True)
    cap = H100.torch_total_memory_bytes
    assert required_bytes(s, H100, est.max_batch, 4096) <= cap < required_bytes(s, H100, est.max_batch + 1, 4096)
    c = est.max_context
    assert c == m.arch.max_positions or required_bytes(s, H100, 4, c) <= cap < required_bytes(s, H100, 4, c + 1)
    assert est.per_gpu.required == required_bytes(s, H100, 4, 4096)


def test_cli_json_fields(capsys):
    out = cli_json(capsys, "estimate", "llama-2-7b", "--mode", "inference", "--engine", "hf", "--batch", "8",
                   "--context", "4096", "-g", "a100-80gb", "--max-batch", "--max-context", "--kv-dtype", "fp8")
    g = out["per_gpu"]
    assert g["kv_cache"] == 2 * 32 * 32 * 128 * 1 * 4096 * 8  # fp8: 1 byte
    assert g["required"] == g["weights"] + g["kv_cache"] + g["activations"] + g["overheads"]
    assert out["max_batch"] > 8 and out["max_context"] >= 4096
    assert out["roofline"]["decode_bound"] == "memory"
    assert out["kv_layers"][0]["kind"] == "full"


def test_default_engine_is_vllm(capsys):
    out = cli_json(capsys, "estimate", "llama-3.1-8b", "--mode", "inference", "-g", "a100-80gb", "--prompt", "1000",
                   "--output", "200")
    assert out["engine"] == "vllm" and out["context"] == 1200 and out["vllm"]["max_model_len"] == 1200
    v = out["vllm"]
    assert v["kv_cache_pool"] == v["num_gpu_blocks"] * v["bytes_per_block"]
    # per_gpu.kv_cache: this load's one request of 1200 tokens in whole 16-token blocks (75 of them, 32 layers)
    assert out["per_gpu"]["kv_cache"] == 75 * v["bytes_per_block"] == 75 * 16 * 32 * 8 * 128 * 2 * 2


def test_encoder_is_refused(capsys):
    code, _, err = run_cli(capsys, "estimate", "bert-base", "--mode", "inference", "--context", "128")
    assert code == 2 and "encoder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["--prompt", "100", "--output", "50", "--context", "100"], "their sum"),
    (["--engine", "megatron"], "training convention"),
    (["--engine", "hf", "--max-num-seqs", "8"], "not used with --engine hf"),
])
def test_bad_serving_input_is_one_line(capsys, args, needle):
    code, _, err = run_cli(capsys, "estimate", "llama-2-7b", "--mode", "inference", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


# ---- the roofline ------------------------------------------------------------------------------------------------
def test_decode_is_bandwidth_bound_at_small_batch():
    """Pope et al. 2022 sec. 3.1: at batch 1 a decode step does ~2 FLOPs per weight byte pair, ~1 FLOP/byte in
    16-bit, far below the H100's ~295 FLOP/byte balance; its time is the bytes read over the bandwidth."""
    m = get_model_profile("llama-2-7b")
    est = estimate_inference(serving_setup(m, engine="hf", batch=1, context=1024), H100)
    r = est.roofline
    assert r.decode_bound == "memory"
    assert r.decode_bytes_per_step == est.per_gpu.weights + est.per_gpu.kv_cache
    assert r.decode_step_seconds == pytest.approx(r.decode_bytes_per_step / (3350e9), rel=1e-9)
    assert 0.9 < r.decode_flops_per_step / r.decode_bytes_per_step < 1.2
    assert r.decode_tokens_per_second == pytest.approx(1 / r.decode_step_seconds)


def test_vllm_roofline_reads_the_batch_kv_and_chunks_prefill():
    """With vLLM the decode batch is --batch (else what the blocks hold, capped by max_num_seqs), its KV read is the
    batch's context per layer kind, and the prefill runs in passes of max_num_batched_tokens."""
    est = estimate_inference(serving_setup("llama-3.1-8b", batch=16, prompt=4000, output=96), H100)
    r = est.roofline
    assert r.batch == 16 and r.decode_kv_bytes_per_step == 16 * 4096 * est.kv_bytes_per_token
    assert r.prefill_passes == math.ceil(16 * 4000 / est.vllm.max_num_batched_tokens)
    assert r.decode_bytes_per_step == est.per_gpu.weights + r.decode_kv_bytes_per_step


def test_sliding_layers_read_only_their_window():
    est = estimate_inference(serving_setup("gemma-2-9b", engine="hf", batch=4, context=8192), H100)
    sliding = next(k for k in est.kv_layers if k.kind == "sliding")
    full = next(k for k in est.kv_layers if k.kind == "full")
    assert est.roofline.decode_kv_bytes_per_step == 4 * (sliding.bytes_per_token * 4096 + full.bytes_per_token * 8192)


def test_tensor_parallel_splits_decode_bytes_and_prefill_is_compute_bound():
    m = get_model_profile("llama-2-70b")
    one = estimate_inference(serving_setup(m, engine="hf", batch=8, context=2048, tp=2), H100).roofline
    four = estimate_inference(serving_setup(m, engine="hf", batch=8, context=2048, tp=4), H100).roofline
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
    whole = estimate_inference(serving_setup(m, engine="hf", batch=1, context=8192), H100)
    chunked = estimate_inference(serving_setup(m, engine="hf", batch=1, context=8192, prefill_chunk=16), H100)
    assert chunked.per_gpu.activations < whole.per_gpu.activations
    assert chunked.roofline.prefill_bound == "memory"
    assert chunked.roofline.prefill_seconds == pytest.approx(512 * whole.per_gpu.weights / 3350e9, rel=1e-9)
    assert math.isclose(whole.roofline.prefill_flops, chunked.roofline.prefill_flops)


def test_serving_estimates_import_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom memplan.cli import main\n"
            "main(['estimate', 'llama-2-7b', '--mode', 'inference', '--context', '512', '-g', 'h100', '--max-batch'])\n"
            "main(['estimate', 'gpt-oss-20b', '--mode', 'inference', '-g', 'h100', '--engine', 'hf'])\n"
            "main(['estimate', 'llama-2-7b', '--lora-rank', '8', '--quantize-base', 'nf4', '--seq', '512'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
