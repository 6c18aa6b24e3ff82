"""Served weights byte for byte against each format's tensor layout (memory/quantized.py).

Each expected figure is built here from the tensors the format stores, as the cited code creates them, for
Llama-3.1-8B's linears (q 4096x4096, k/v 1024x4096, o 4096x4096, gate/up 14336x4096, down 4096x14336; 32 layers),
so a wrong shape or a missed tensor shows.  "vllm" is what stays resident after process_weights_after_loading,
"hf" the checkpoint's tensors.
"""
from __future__ import annotations

import copy

import pytest

from memplan.catalog import get_model_profile
from memplan.families.registry import read_config
from memplan.memory.layout import stage_groups
from memplan.memory.quantized import stage_weights
from memplan.setups import serving_setup
from memplan.spec.model import ModelSpec

L, H, F, V, KV = 32, 4096, 14336, 128256, 1024
# (out N, in K) of one layer's checkpoint linears, and vLLM's fused modules (qkv_proj, o_proj, gate_up_proj, down)
LINEARS = [(H, H), (KV, H), (KV, H), (H, H), (F, H), (F, H), (H, F)]
FUSED = [((H, KV, KV), H), ((H,), H), ((F, F), H), ((H,), F)]
NORMS = (2 * L + 1) * H * 2
EMBED = 2 * V * H * 2  # embed_tokens + untied lm_head, bf16 (V is a multiple of 64: no vLLM padding)
ROTARY = 131072 * 128 * 2  # vLLM cos_sin_cache [max_position_embeddings, head_dim], bf16


def cdiv(a, b):
    return -(-a // b)


def llama(q: dict | None = None) -> ModelSpec:
    c = copy.deepcopy(get_model_profile("llama-3.1-8b").hf_config)
    if q is not None:
        c["quantization_config"] = q
    return ModelSpec(name="llama-3.1-8b-q", architecture=read_config(c, "q"), hf_config=c)


def weights(model: ModelSpec, engine: str, generation: str = "hopper", version=(0, 33, 0), **kw):
    s = serving_setup(model, **kw)
    return stage_weights(s, 0, stage_groups(model.arch, s.layout)[0], engine, generation, version)


def test_bf16_is_the_parameter_count():
    m = llama()
    w = weights(m, "hf")
    assert w.total == 2 * m.parameters.total
    assert weights(m, "vllm").total == 2 * m.parameters.total + ROTARY


def test_fp8_per_tensor():
    """Fp8LinearMethod (quantization/fp8.py): weight float8_e4m3fn [N, K]; weight_scale fp32 per checkpoint tensor,
    requantised to one scale per fused module (requantize_with_max_scale); input_scale fp32 when static."""
    m = llama({"quant_method": "fp8", "activation_scheme": "static"})
    ckpt = L * sum(n * k + 4 + 4 for n, k in LINEARS)
    assert weights(m, "hf").total == ckpt + NORMS + EMBED
    vllm = L * sum(sum(parts) * k + 4 + 4 for parts, k in FUSED)
    assert weights(m, "vllm").total == vllm + NORMS + EMBED + ROTARY


def test_fp8_block_128():
    """weight_block_size [128, 128] (DeepSeek-V3, Qwen3-*-FP8): weight fp8 [N, K] + weight_scale_inv fp32
    [cdiv(N, 128), cdiv(K, 128)]; vLLM's BlockQuantScaleParameter spans the fused output rows."""
    m = llama({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]})
    ckpt = L * sum(n * k + 4 * cdiv(n, 128) * cdiv(k, 128) for n, k in LINEARS)
    assert weights(m, "hf").total == ckpt + NORMS + EMBED
    vllm = L * sum(sum(p) * k + 4 * cdiv(sum(p), 128) * cdiv(k, 128) for p, k in FUSED)
    assert weights(m, "vllm").total == vllm + NORMS + EMBED + ROTARY


def test_compressed_tensors_fp8_dynamic_with_ignored_layers():
    """compressed-tensors "FP8-dynamic" (CompressedTensorsW8A8Fp8): weight fp8 [N, K], weight_scale fp32 [N, 1]
    (channel), dynamic per-token activations (no input scale); `ignore` keeps lm_head and, here, layer 0's
    down_proj in bf16."""
    q = {"quant_method": "compressed-tensors", "format": "float-quantized",
         "config_groups": {"group_0": {"targets": ["Linear"],
                                       "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                                       "input_activations": {"num_bits": 8, "type": "float", "dynamic": True}}},
         "ignore": ["lm_head", "model.layers.0.mlp.down_proj"]}
    w = weights(llama(q), "hf")
    quantised = L * sum(n * k + 4 * n for n, k in LINEARS) - (H * F + 4 * H)
    assert w.quantized == quantised
    assert w.total == quantised + H * F * 2 + NORMS + EMBED


def test_awq_int4():
    """AWQ GEMM (AWQLinearMethod.create_weights; awq_marlin keeps the same bytes): qweight int32 [K, N/8],
    qzeros int32 [K/g, N/8], scales fp16 [K/g, N]: 0.5 + 2.5/128 bytes per weight at g = 128."""
    m = llama({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"})
    per = sum(k * n // 8 * 4 + k // 128 * n // 8 * 4 + k // 128 * n * 2 for n, k in LINEARS)
    w = weights(m, "vllm")
    assert w.quantized == L * per
    assert w.quantized / (L * sum(n * k for n, k in LINEARS)) == pytest.approx(0.5 + 2.5 / 128)


@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_int4_checkpoint_and_marlin(desc_act):
    """GPTQ (GPTQLinearMethod.create_weights): qweight int32 [K/8, N], qzeros int32 [K/g, N/8], scales fp16
    [K/g, N], g_idx int32 [K].  gptq_marlin (symmetric): qzeros emptied; g_idx and its sort indices kept only with
    act-order (desc_act)."""
    m = llama({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": desc_act, "sym": True})
    ckpt = L * sum(k // 8 * n * 4 + k // 128 * n // 8 * 4 + k // 128 * n * 2 + 4 * k for n, k in LINEARS)
    assert weights(m, "hf").quantized == ckpt
    marlin = L * sum(k * sum(p) // 2 + k // 128 * sum(p) * 2 + (8 * k if desc_act else 0) for p, k in FUSED)
    w = weights(m, "vllm")
    assert w.kernel == "marlin" and w.quantized == marlin


def test_gptq_exllama_when_forced_before_024():
    """vLLM 0.11 with --quantization gptq: the exllama kernel keeps qzeros and (act-order) the sorted g_idx."""
    m = llama({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True})
    w = weights(m, "vllm", "ampere", (0, 11, 0), quantization="gptq", vllm_version="0.11.0")
    exllama = L * sum(k * sum(p) // 2 + k // 128 * sum(p) // 2 + k // 128 * sum(p) * 2 + 4 * k for p, k in FUSED)
    assert w.kernel == "exllama" and w.quantized == exllama


def test_bitsandbytes_nf4_double_quant():
    """bitsandbytes quantize_4bit (blocksize 64) with compress_statistics: packed uint8 [N K / 2], uint8 absmax per
    64 weights, fp32 absmax per 256 of those, an fp32 offset, the nested 256-entry fp32 map and the 16-entry
    NF4 code: 0.5 + 1/64 + 4/(64 x 256) bytes per weight plus 1,092 B per tensor."""
    q = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
         "bnb_4bit_use_double_quant": True}
    per = sum(n * k // 2 + n * k // 64 + 4 * cdiv(n * k // 64, 256) + 4 + 256 * 4 + 16 * 4 for n, k in LINEARS)
    assert weights(llama(q), "hf").quantized == L * per


def test_bitsandbytes_refused_by_vllm_033():
    from memplan.errors import MemplanError
    from memplan.memory.vllm import vllm_startup
    from memplan.catalog import get_gpu

    s = serving_setup(llama(), quantization="bitsandbytes")
    with pytest.raises(MemplanError, match="not a quantization method in vLLM 0.33"):
        vllm_startup(s, get_gpu("h100-sxm"))


def test_mxfp4_experts_with_bf16_attention():
    """gpt-oss-120b (quant_method mxfp4): only the experts are MXFP4 (Mxfp4MoEMethod: w13_weight uint8
    [E, 2I', H'/2], w13_weight_scale uint8 [E, 2I', H'/32], w13_bias bf16 [E, 2I'], w2 likewise with [E, H', I'/2]);
    attention, router and sinks stay bf16.  On Hopper (Triton backend: I' = round_up(I, 64), H' = H) an expert
    layer holds 1,694,269,440 B (E = 128, H = I = 2880); on Blackwell (TRT-LLM: I' = round_up(I, 128) = 2944,
    H' = round_up(H, 256) = 3072) more."""
    m = get_model_profile("gpt-oss-120b")
    assert m.hf_config.get("quantization_config", {}).get("quant_method") == "mxfp4"
    E, Hd, I = 128, 2880, 2880

    def layer(i2, h2):
        return E * (2 * i2 * h2 // 2 + 2 * i2 * h2 // 32 + 2 * 2 * i2 + h2 * i2 // 2 + h2 * i2 // 32 + 2 * h2)

    hop = weights(m, "vllm", "hopper")
    assert layer(2880, 2880) == 1694269440 and hop.experts == 36 * layer(I, Hd)
    assert weights(m, "vllm", "blackwell").experts == 36 * layer(2944, 3072)
    a = m.arch.groups[0].layer
    attn_params = sum(x.params for x in m.arch.linears(a) if x.is_attention)
    assert hop.quantized == hop.experts  # nothing but the experts is quantised
    assert hop.unquantized > 36 * attn_params * 2  # attention (and norms, router, sinks, embeddings) in bf16


def test_flag_on_a_16bit_config():
    """--quantization fp8 on a bf16 checkpoint: vLLM quantises at load (per-tensor, one fp32 scale per fused
    module, dynamic activations)."""
    w = weights(llama(), "vllm", quantization="fp8")
    assert w.quantized == L * sum(sum(p) * k + 4 for p, k in FUSED)
    assert "online" in w.format
