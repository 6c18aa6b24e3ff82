"""Published, measured training runs and the memplan setups that describe them (tests/test_published_runs.py,
docs/time-and-plan.md, benchmarks/calibrate_time.py).

Megatron-LM 2021 (Narayanan et al., SC'21, arXiv:2104.04473) Table 1, the same numbers as
github:NVIDIA/Megatron-LM@6985e58 images/cases_april2021.png: A100-80GB (Selene), seq 2048, vocab 51,200,
--fp16, full recompute (--activations-checkpoint-method uniform); TP/PP/micro-batch/global batch, interleaving
(--num-layers-per-virtual-pipeline-stage) and --DDP-impl from examples/sc21/run_table_1.sh.  Published: TFLOP/s
per GPU of eq. 3's hardware FLOPs over the end-to-end iteration time.

Korthikanti et al. 2022 (arXiv:2205.05198) Table 5: seconds per iteration, full recompute and sequence
parallelism + selective recompute, data-parallel size one; configurations (Table 3, interleaving 3 for 175B and
530B) and times as calculon-ai/calculon@caa4b11 validation/seqsel/tab5 and calculon/llm/validation.py record them
(they agree with the Megatron-LM README's MFU at 2e90a34 to 0.1 point).

Implementation choices that are the setup, not tuning (each cited in its profile): attention "eager" (the
2021/2022 code ran baddbmm + fused softmax + dropout + bmm; FlashAttention appeared after), the execution profile
of the code (profiles/execution/megatron-2021*.json, megatron-2022.json).

Held out beyond the 18 (never calibrated on): BLOOM-176B (github:bigscience-workshop/bigscience
train/tr11-176B-ml/README.md: 104.70 s per iteration at iteration 85376 on 384 A100-80GB).
"""
from __future__ import annotations

from dataclasses import dataclass

from memplan.catalog import get_gpu
from memplan.families.registry import read_config
from memplan.answers.time import estimate_time
from memplan.results.time import TimeEstimate
from memplan.setups import training_setup
from memplan.spec.model import FFN, Attention, Embeddings, Head, LayerGroup, LayerSpec, Model, ModelSpec, Norm

SEQ, VOCAB = 2048, 51200


@dataclass(frozen=True)
class Run:
    name: str
    table: str          # megatron2021-t1 | korthikanti2022-t5 | held-out
    heads: int
    hidden: int
    layers: int
    tp: int
    pp: int
    gpus: int
    global_batch: int
    micro_batch: int
    virtual: int
    execution: str
    recompute: str = "full"
    sp: bool = False
    published: float = 0.0  # TFLOP/s per GPU (Megatron) or seconds per iteration (Korthikanti, held out)

    @property
    def metric(self) -> str:
        return "TFLOP/s per GPU" if self.table == "megatron2021-t1" else "s/iteration"

    @property
    def params_billion(self) -> str:
        return self.name.split()[0]


def _t1(name, heads, hidden, layers, tp, pp, gpus, gb, mb, v, ddp, tflops):
    ex = "megatron-2021-torch-ddp" if ddp == "torch" else "megatron-2021"
    return Run(name, "megatron2021-t1", heads, hidden, layers, tp, pp, gpus, gb, mb, v, ex, published=tflops)


MEGATRON_2021 = [
    _t1("1.7B", 24, 2304, 24, 1, 1, 32, 512, 16, 1, "torch", 137),
    _t1("3.6B", 32, 3072, 30, 2, 1, 64, 512, 16, 1, "torch", 138),
    _t1("7.5B", 32, 4096, 36, 4, 1, 128, 512, 16, 1, "torch", 142),
    _t1("18.4B", 48, 6144, 40, 8, 1, 256, 1024, 8, 1, "torch", 135),
    _t1("39.1B", 64, 8192, 48, 8, 2, 512, 1536, 4, 1, "local", 138),
    _t1("76.1B", 80, 10240, 60, 8, 4, 1024, 1792, 2, 3, "local", 140),
    _t1("145.6B", 96, 12288, 80, 8, 8, 1536, 2304, 2, 2, "local", 148),
    _t1("310.1B", 128, 16384, 96, 8, 16, 1920, 2160, 1, 2, "local", 155),
    _t1("529.6B", 128, 20480, 105, 8, 35, 2520, 2520, 1, 3, "local", 163),
    _t1("1008.0B", 160, 25600, 128, 8, 64, 3072, 3072, 1, 1, "local", 163),
]

KORTHIKANTI_2022 = []
for _label, _heads, _hidden, _layers, _pp, _gpus, _gb, _mb, _v, _full, _sel in [
        ("22B", 64, 6144, 48, 1, 8, 4, 4, 1, 1.42, 1.10),
        ("175B", 96, 12288, 96, 8, 64, 64, 1, 3, 18.13, 13.75),
        ("530B", 128, 20480, 105, 35, 280, 280, 1, 3, 49.05, 37.83),
        ("1T", 160, 25600, 128, 64, 512, 512, 1, 1, 94.42, 71.49)]:
    _common = dict(heads=_heads, hidden=_hidden, layers=_layers, tp=8, pp=_pp, gpus=_gpus, global_batch=_gb,
                   micro_batch=_mb, virtual=_v, execution="megatron-2022", table="korthikanti2022-t5")
    KORTHIKANTI_2022.append(Run(f"{_label} full recompute", recompute="full", published=_full, **_common))
    KORTHIKANTI_2022.append(Run(f"{_label} SP + selective", recompute="selective", sp=True, published=_sel,
                                **_common))

# the 18, in the order of the tables
PUBLISHED = MEGATRON_2021 + KORTHIKANTI_2022
# calibrated on (profiles/efficiency/a100.json gemm_scale / memory_scale): every other row, starting with the
# first; held out: the rest (benchmarks/calibrate_time.py re-fits them)
CALIBRATION = [r.name for i, r in enumerate(PUBLISHED) if i % 2 == 0]
HELD_OUT = [r.name for i, r in enumerate(PUBLISHED) if i % 2 == 1]


def megatron_gpt(layers: int, hidden: int, heads: int, vocab: int = VOCAB, seq: int = SEQ) -> ModelSpec:
    """Megatron's GPT (Narayanan et al. 2021): GPT-2's layer (learned positions, biased fused QKV, 4h GeLU MLP,
    pre-LayerNorm, tied embeddings, dropout 0.1), read as a GPT-2 config.json."""
    config = {"model_type": "gpt2", "n_layer": layers, "n_embd": hidden, "n_head": heads, "n_positions": seq,
              "vocab_size": vocab}
    return ModelSpec(name=f"megatron-gpt-{layers}x{hidden}", architecture=read_config(config, "megatron gpt"),
                     hf_config=config)


def setup_of(r: Run, model: ModelSpec | None = None):
    model = model or megatron_gpt(r.layers, r.hidden, r.heads)
    dp = r.gpus // (r.tp * r.pp)
    return training_setup(model, gpus=r.gpus, tp=r.tp, pp=r.pp, virtual_stages=r.virtual,
                          micro_batch=r.micro_batch, grad_accum=r.global_batch // (dp * r.micro_batch),
                          recompute=r.recompute, sequence_parallel=r.sp, engine="megatron", precision="fp16-mixed",
                          attention="eager", implementation="megatron", seq=SEQ)


def predict(r: Run, **kwargs) -> tuple[float, TimeEstimate]:
    """(the published metric as predicted, the estimate) at default efficiencies."""
    est = estimate_time(setup_of(r), get_gpu("a100-80gb"), steps=1, execution=r.execution, with_memory=False,
                        **kwargs)
    value = est.achieved_tflops_per_gpu if r.table == "megatron2021-t1" else est.step_seconds
    return value, est


def error_percent(r: Run, predicted: float) -> float:
    return 100.0 * (predicted - r.published) / r.published


# ---- held out: BLOOM-176B ------------------------------------------------------------------------------------------
BLOOM = Run("BLOOM-176B", "held-out", 112, 14336, 70, 4, 12, 384, 2048, 2, 1, "megatron-deepspeed-bf16",
            published=104.70)


def bloom_model() -> ModelSpec:
    """BLOOM-176B (arXiv:2211.05100 Table 1; tr11-176B-ml.slurm): 70 layers, hidden 14336, 112 heads, ALiBi,
    LayerNorm after the embeddings, 4h GeLU MLP with biases, tied embeddings, vocabulary padded to 250,880, no
    dropout (hidden_dropout 0, attention_dropout 0)."""
    norm = Norm(kind="layernorm", bias=True)
    layer = LayerSpec(attention=Attention(heads=112, kv_heads=112, head_dim=128, position="alibi", fused_qkv=True,
                                          qkv_bias=True, out_bias=True),
                      ffn=FFN(intermediate_size=4 * 14336, gated=False, bias=True, activation="gelu"), norm=norm)
    m = Model(family="bloom", hidden_size=14336, vocab_size=250880, max_positions=2048, norm=norm,
              embeddings=Embeddings(norm=True), groups=[LayerGroup(count=70, layer=layer)], head=Head(tied=True))
    return ModelSpec(name="bloom-176b", architecture=m)


def bloom_setup():
    """tp 4, pp 12, dp 8, micro-batch 2, global batch 2048, full recompute, bf16, DeepSpeed ZeRO-1; pipeline
    [embed|5], 6 x 10, [5|embed] (README 'Architecture')."""
    return training_setup(bloom_model(), gpus=384, tp=4, pp=12, first_stage_layers=5, last_stage_layers=5,
                          micro_batch=2, grad_accum=2048 // (8 * 2), recompute="full", zero=1, engine="deepspeed",
                          precision="bf16-mixed", attention="eager", implementation="megatron", seq=SEQ)


def predict_bloom() -> tuple[float, TimeEstimate]:
    # Jean Zay: 4 Omni-Path 100 Gb/s links per 8-GPU node (profiles/interconnects/omni-path-jean-zay.json)
    est = estimate_time(bloom_setup(), get_gpu("a100-80gb"), steps=1, execution=BLOOM.execution,
                        internode="omni-path-jean-zay", with_memory=False)
    return est.step_seconds, est


# ---- at scale on H100 (issue 22): stated layouts, predicted at default efficiencies, nothing calibrated on them ----
@dataclass(frozen=True)
class ScaleRun:
    """A published H100 run: its stated layout as `training_setup` keywords, the published metric and its source.
    `metric`: "TFLOP/s per GPU" (achieved, model FLOPs) or "s/step"."""

    name: str
    source: str
    published: float
    metric: str
    setup: dict
    execution: str = "megatron-core"
    assumed: str = ""   # what the source does not state and memplan had to choose
    gpu: str = "h100-sxm"

    def predict(self) -> tuple[float, TimeEstimate]:
        kw = dict(self.setup)
        model, gpus, seq = kw.pop("model"), kw.pop("gpus"), kw.pop("seq")
        s = training_setup(model, gpus=gpus, seq=seq, engine="megatron", **kw)
        est = estimate_time(s, get_gpu(self.gpu), steps=1, execution=self.execution, with_memory=False)
        if self.metric.startswith("TFLOP"):
            return est.achieved_tflops_per_gpu, est
        if self.metric.startswith("tokens"):
            return s.layout.global_batch * seq / est.step_seconds / gpus, est
        return est.step_seconds, est

    def error_percent(self, predicted: float) -> float:
        """Signed, as 'predicted too fast' > 0 for every metric."""
        if self.metric.startswith(("TFLOP", "tokens")):
            return 100.0 * (predicted - self.published) / self.published
        return 100.0 * (self.published - predicted) / self.published


_LLAMA3 = ("Dubey et al. 2024, 'The Llama 3 Herd of Models' (arXiv:2407.21783) Table 4 (the same figures as "
           "P. Balaji, SC'24 'Herding Llamas'): 405B, BF16, 16M tokens per batch, H100 SXM 700 W, 400 Gb/s per GPU "
           "(RoCE; priced as the profile's NDR at the same wire rate)")
_LLAMA3_V = ("v = 8: Table 4 does not state the interleaving; 126 layers + embedding + loss = 128 = pp 16 x v 8 "
             "one-layer chunks, as sec. 3.3.2's 'one layer fewer on the first and last stage' gives")
_AUTOMODEL = ("NeMo AutoModel performance summary, DGX-H100 BF16 pre-training "
              "(docs.nvidia.com/nemo/automodel/nightly/performance-summary.html): 'Time per Global Step (s)', "
              "TE + DeepEP")

H100_RUNS = [
    ScaleRun("Llama 3 405B, 8,192 H100", _LLAMA3 + ": TP 8, CP 1, PP 16, DP 64, seq 8192, 32 sequences per DP rank",
             430.0, "TFLOP/s per GPU",
             dict(model="llama-3.1-405b", gpus=8192, seq=8192, precision="bf16-mixed", tp=8, pp=16,
                  virtual_stages=8, micro_batch=1, grad_accum=32, sequence_parallel=True, recompute="none"),
             assumed=_LLAMA3_V + "; micro-batch 1, no recompute, SP on"),
    ScaleRun("Llama 3 405B, 16,384 H100", _LLAMA3 + ": TP 8, CP 1, PP 16, DP 128, seq 8192, 16 sequences per DP rank",
             400.0, "TFLOP/s per GPU",
             dict(model="llama-3.1-405b", gpus=16384, seq=8192, precision="bf16-mixed", tp=8, pp=16,
                  virtual_stages=8, micro_batch=1, grad_accum=16, sequence_parallel=True, recompute="none"),
             assumed=_LLAMA3_V + "; micro-batch 1, no recompute, SP on"),
    ScaleRun("Llama 3 405B, 16,384 H100, 128K context", _LLAMA3 + ": TP 8, CP 16, PP 16, DP 8, seq 131,072, "
             "16 sequences per DP rank", 380.0, "TFLOP/s per GPU",
             dict(model="llama-3.1-405b", gpus=16384, seq=131072, precision="bf16-mixed", tp=8, cp=16, pp=16,
                  virtual_stages=8, micro_batch=1, grad_accum=16, sequence_parallel=True, recompute="none"),
             assumed=_LLAMA3_V + "; CP as Megatron's ring (Llama 3 all-gathers K/V: sec. 3.3.2)"),
    ScaleRun("DeepSeek-V3 671B, 1,024 H100", _AUTOMODEL + ": GBS 8192, MBS 1, seq 4096, TP 1, PP 4, EP 64, VP 8, "
             "FSDP 256", 37.87, "s/step",
             dict(model="deepseek-v3", gpus=1024, seq=4096, precision="bf16-mixed", tp=1, pp=4, ep=64,
                  virtual_stages=8, micro_batch=1, grad_accum=32, recompute="none"),
             execution="megatron-core-deepep",
             assumed="FSDP 256 priced as Megatron's distributed optimizer (ZeRO-1); 61 layers over pp 4 x v 8 = "
                     "32 chunks (uneven); DeepEP's dispatch (one copy per remote node), not overlapped"),
    ScaleRun("DeepSeek-V3 671B, 256 H100", _AUTOMODEL + ": GBS 512, MBS 1, seq 4096, TP 1, PP 4, EP 64, VP 8, FSDP 64",
             8.18, "s/step",
             dict(model="deepseek-v3", gpus=256, seq=4096, precision="bf16-mixed", tp=1, pp=4, ep=64,
                  virtual_stages=8, micro_batch=1, grad_accum=8, recompute="none"),
             execution="megatron-core-deepep", assumed="as the 1,024-GPU row"),
    ScaleRun("Qwen3-30B-A3B, 8 H100", _AUTOMODEL + ": GBS 512, MBS 4, seq 4096, EP 8, FSDP 8", 21.773, "s/step",
             dict(model="qwen3-30b-a3b", gpus=8, seq=4096, precision="bf16-mixed", tp=1, ep=8, micro_batch=4,
                  grad_accum=16, recompute="none"),
             execution="megatron-core-deepep",
             assumed="FSDP 8 priced as data parallel without sharding (one node: its traffic is NVLink)"),
    ScaleRun("DeepSeek-V3 671B, 2,048 H800", "DeepSeek-V3 technical report (arXiv:2412.19437): 'each trillion tokens "
             "takes 180K H800 GPU hours' (sec. 1) = 1e12 / (180,000 x 3600) = 1,543 tokens/s per GPU; 2,048 H800, "
             "one 400 Gb/s IB NIC per GPU (sec. 3.1); PP 16 (DualPipe), EP 64 over 8 nodes, ZeRO-1, no TP, FP8 "
             "(sec. 3.2-3.3); seq 4096, batch 15,360 (sec. 4.2)", 1543.0, "tokens/s per GPU",
             dict(model="deepseek-v3", gpus=2048, seq=4096, precision="fp8-mixed", pp=16, ep=64, micro_batch=1,
                  grad_accum=120, recompute="selective", zero=1),
             execution="megatron-core-moe-overlap", gpu="h800",
             assumed="DualPipe priced as 1F1B with the all-to-all under a paired micro-batch's compute; recompute "
                     "of RMSNorm and the MLA up-projections (sec. 3.2.3) as selective; the batch-size ramp, the MTP "
                     "module and node-limited routing (at most 4 nodes) not modelled"),
]
