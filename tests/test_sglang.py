"""SGLang's startup accounting (memory/sglang.py, serving/sglang.py): its server defaults restated from
python/sglang/srt/server_args.py @v0.5.10.post1 and published startup logs reproduced.

Logs (verbatim lines quoted in each test):
  S1 github.com/vllm-project/vllm/issues/21348 - Qwen3-235B-A22B-FP8, `--tp 4 --mem-fraction-static 0.93` on
     4x H100: "KV Cache is allocated. #tokens: 367404, K size: 8.23 GB, V size: 8.23 GB"
  S2 code-index file 47376055009 (a public README: "SGLang start sequence with Qwen QwQ-32B" on an AWS g6.12xlarge,
     4x L4 24 GB), SGLang 0.4.3.post4, TP4, mem_fraction_static=0.85: "Init torch distributed ends. mem
     usage=0.13 GB", "Load weight begin. avail mem=21.63 GB", "Load weight end. ... mem usage=15.54 GB",
     "KV Cache is allocated. #tokens: 46611, K size: 1.42 GB, V size: 1.42 GB",
     "max_total_num_tokens=46611, chunked_prefill_size=2048, ... context_len=131072"
Honest note: profiles/serving/sglang.json has two constants fitted to these two logs (the NVLink distributed init
to S1, the load's extra 0.25 GiB to S2), so the full predictions below are calibrations, not held-out checks; the
formula itself (mem_fraction_static of the pre-load free memory, cell size, weights) is checked by the
measured-figure tests, which fix only what the log prints.
"""
from __future__ import annotations

import copy

import pytest

from memplan.catalog import get_gpu, get_model_profile
from memplan.families.registry import read_config
from memplan.memory.sglang import sglang_startup
from memplan.serving.sglang import cuda_graph_bs, defaults, max_running_requests, piecewise_tokens
from memplan.setups import serving_setup
from memplan.spec.model import ModelSpec
from tests.helpers import cli_json, run_cli

GiB = 1 << 30
FP8_BLOCK = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}
QWQ = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 5120, "num_hidden_layers": 64,
       "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648, "vocab_size": 152064,
       "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
       "rms_norm_eps": 1e-5, "rope_theta": 1000000.0}  # Qwen/QwQ-32B config.json


def qwen3_235b_fp8() -> ModelSpec:
    c = copy.deepcopy(get_model_profile("qwen3-235b-a22b").hf_config)
    c["quantization_config"] = FP8_BLOCK
    return ModelSpec(name="qwen3-235b-a22b-fp8", architecture=read_config(c, "q"), hf_config=c)


def qwq() -> ModelSpec:
    return ModelSpec(name="qwq-32b", architecture=read_config(QWQ, "qwq-32b"), hf_config=QWQ)


# ---- server_args.py defaults ------------------------------------------------------------------------------------
def test_default_mem_fraction_static_by_gpu_and_tp():
    """_handle_gpu_memory_settings: H100 (81,559 MiB) TP1: reserved = 512 + 8192 x 1.5 + 256 x 2 + 1/8 x 1024
    + 58 piecewise sizes x 8 = 13,904 MiB -> round((81559 - 13904) / 81559, 3) = 0.83; L4 (23,034 MiB) TP4:
    chunked prefill 2048, cuda_graph_max_bs 80 (S2 logs chunked_prefill_size=2048, cuda_graph_max_bs=80)."""
    d = defaults(81559, 1, 1, mla=False)
    assert (d.chunked_prefill_size, d.cuda_graph_max_bs, len(d.piecewise_tokens)) == (8192, 256, 58)
    assert d.reserved_mib == 13904 and d.mem_fraction_static == 0.83
    d4 = defaults(23034, 4, 1, mla=False)
    assert (d4.chunked_prefill_size, d4.cuda_graph_max_bs) == (2048, 80)
    d40 = defaults(40960, 1, 1, mla=False)
    assert (d40.chunked_prefill_size, d40.cuda_graph_max_bs) == (4096, 32)
    assert defaults(81559, 8, 1, mla=True).reserved_mib == max(512 + 8192 * 1.5 + 512 * 2 + 1024 + 1536, 10240)


def test_capture_sizes_and_max_running_requests():
    assert cuda_graph_bs(256)[:6] == (1, 2, 4, 8, 12, 16) and cuda_graph_bs(256)[-1] == 256
    # 0.5.10: [1, 2, 4, 8, 12] + range(16, 81, 8) = 14 sizes; S2's 0.4.3 captured 13 ([1, 2, 4] + range(8, 81, 8))
    assert len(cuda_graph_bs(80)) == 14
    assert piecewise_tokens(2048)[-1] == 2048
    assert max_running_requests(367404, 40960) == 4096 and max_running_requests(46611, 131072) == 2048


# ---- published logs ---------------------------------------------------------------------------------------------
def test_s2_formula_from_the_logged_figures():
    """S2: pre-load free 21.63 GiB, weights 15.54 GiB, mem_fraction_static 0.85: rest = 21.63 x 0.85 - 15.54 GiB
    over 64 layers x 2 KV heads x 256 x 2 B = 65,536 B per token -> 46,611 tokens (the log's figures have two
    decimals: +-0.3%)."""
    gpu = get_gpu("l4")
    s = serving_setup(qwq(), engine="sglang", tp=4, gpu_memory_utilization=0.85)
    st = sglang_startup(s, gpu, measured={"pre_load_used": gpu.torch_total_memory_bytes - round(21.63 * GiB),
                                          "weights": round(15.54 * GiB)})
    assert st.cell_size == 65536
    assert st.max_total_num_tokens == pytest.approx(46611, rel=0.003)
    assert round(st.kv_pool / 2 / GiB, 2) == pytest.approx(1.42, abs=0.01)  # "K size: 1.42 GB"


SGLANG_LOGS = [
    # (id, model, gpu, tp, mem_fraction_static, logged weights GiB or None, logged max_total_num_tokens)
    ("S1-qwen3-235b-fp8-h100-tp4", qwen3_235b_fp8, "h100-sxm", 4, 0.93, None, 367404),
    ("S2-qwq-32b-l4-tp4", qwq, "l4", 4, 0.85, 15.54, 46611),
]


@pytest.mark.parametrize("case", SGLANG_LOGS, ids=[c[0] for c in SGLANG_LOGS])
def test_max_total_num_tokens_against_published_logs(case):
    """max_total_num_tokens within 3%, weights within 2% (see the module note: calibrated constants)."""
    _, model, gpu, tp, mfs, weights, tokens = case
    st = sglang_startup(serving_setup(model(), engine="sglang", tp=tp, gpu_memory_utilization=mfs), get_gpu(gpu))
    assert st.starts and st.mem_fraction_static == mfs
    assert st.max_total_num_tokens == pytest.approx(tokens, rel=0.03)
    if weights is not None:
        assert st.weights / GiB == pytest.approx(weights, rel=0.02)


def test_sglang_holds_about_twice_vllms_kv_for_s1():
    """Issue 23 / vllm#21348: on the same 4x H100 SGLang (0.93 of the pre-load free memory, no profile run)
    allocated 367,404 tokens where vLLM logged 178,880 (2.05x): SGLang's pool is larger by vLLM's profile peak
    (the sort sampler over 1024 x 151,936 logits: 5.6 GiB), its non-torch memory (NCCL's NVLink buffers, ~2.1 GiB)
    and 0.93 vs 0.9.  memplan's vLLM 0.9.2 prediction for that launch (189k tokens) is +5.6% above the log, whose
    vLLM also ran an LMCache KV connector (not modelled): recorded as a miss in docs/finetune-and-serve.md."""
    from memplan.memory.vllm import vllm_startup

    m = qwen3_235b_fp8()
    sg = sglang_startup(serving_setup(m, engine="sglang", tp=4, gpu_memory_utilization=0.93), get_gpu("h100-sxm"))
    assert sg.max_total_num_tokens / 178880 == pytest.approx(2.05, abs=0.06)
    vl = vllm_startup(serving_setup(m, tp=4, vllm_version="0.9.2"), get_gpu("h100-sxm"))
    assert 1.0 < vl.num_gpu_blocks * vl.block_size / 178880 < 1.1  # the known miss (LMCache)


# ---- failures, CLI -----------------------------------------------------------------------------------------------
def test_refuses_when_weights_leave_no_pool():
    st = sglang_startup(serving_setup("llama-3.3-70b", engine="sglang"), get_gpu("h100-sxm"))
    assert not st.starts and st.failed_phase in ("load", "kv")
    st = sglang_startup(serving_setup("llama-3.3-70b", engine="sglang", tp=2, gpu_memory_utilization=0.5),
                        get_gpu("h100-sxm"))
    assert not st.starts and st.failed_phase == "kv" and "mem-fraction-static" in st.refusal


def test_reserve_too_small_for_the_prefill_and_graphs():
    """mem_fraction_static 0.99 on an H100 leaves ~0.8 GiB outside the pool: an 8k-token chunked prefill of
    Llama-3.1-8B and the CUDA graphs do not fit there."""
    st = sglang_startup(serving_setup("llama-3.1-8b", engine="sglang", gpu_memory_utilization=0.99),
                        get_gpu("h100-sxm"))
    assert not st.starts and st.failed_phase == "graph capture"


def test_cli_engine_sglang(capsys):
    out = cli_json(capsys, "estimate", "qwen3-8b", "--mode", "inference", "--engine", "sglang", "-g", "h100",
                   "--context", "8192", "--mem-fraction-static", "0.85", "--max-batch")
    sg = out["sglang"]
    assert out["engine"] == "sglang" and sg["mem_fraction_static"] == 0.85 and sg["starts"] is True
    assert sg["max_total_num_tokens"] > 8192 and out["max_batch"] == sg["max_total_num_tokens"] // 8192
    code, _, err = run_cli(capsys, "estimate", "qwen3-8b", "--mode", "inference", "-g", "h100",
                           "--mem-fraction-static", "0.85")
    assert code == 2 and "SGLang" in err


def test_hybrid_swa_pools_only_for_sglangs_hybrid_architectures():
    """is_hybrid_swa_model @v0.5.10.post1: gpt-oss and Llama 4 get a separate sliding pool (swa tokens = 0.8 x
    full tokens), so their full pool holds more than the profiled cell count; Gemma 3's windowed layers keep every
    token (no split)."""
    from memplan.memory.sglang import hybrid_split

    s = serving_setup("gpt-oss-20b", engine="sglang")
    full = hybrid_split(s, range(24), 2, 1_000_000, 1)
    assert full == int(1_000_000 * 2 / (1 + 0.8))  # 12 sliding + 12 full layers of equal width
    assert hybrid_split(serving_setup("gemma-3-27b", engine="sglang"), range(62), 2, 1_000_000, 1) is None
    st = sglang_startup(s, get_gpu("h100-sxm"))
    assert st.starts and any("hybrid SWA" in n for n in st.notes)


def test_pipeline_stages_take_the_smallest_pool():
    st1 = sglang_startup(serving_setup("llama-3.1-8b", engine="sglang"), get_gpu("h100-sxm"))
    st2 = sglang_startup(serving_setup("llama-3.1-8b", engine="sglang", pp=2), get_gpu("h100-sxm"))
    assert st2.cell_size == st1.cell_size // 2 and st2.max_total_num_tokens > st1.max_total_num_tokens
