"""LoRA / QLoRA: adapter counts against PEFT, a measured step on CPU and at 7B scale with fake tensors, the bytes
of NF4 with double quantisation, and the LoRA and QLoRA papers' memory figures."""
from __future__ import annotations

import math

import pytest

from memplan.errors import MemplanError
from memplan.families.profiles import with_overrides
from memplan.families.registry import all_families, read_config
from memplan.memory.estimate import estimate_memory
from memplan.memory.lora import (adapter_parameters, int8_tensor_bytes, lora_activation_adjustment, lora_spec,
                                 nf4_tensor_bytes, resolve_targets)
from memplan.memory.states import model_states
from memplan.spec.layout import Layout
from memplan.spec.model import ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import Workload, get_optimizer, get_recipe
from tests.helpers import cli_json, run_cli


def spec(name: str, **config) -> ModelSpec:
    """A model as its config.json describes it (the family reader builds it; measure builds it with transformers)."""
    return ModelSpec(name=name, architecture=read_config(config, name), hf_config=config)


def llama(name="llama", **sizes) -> ModelSpec:
    cfg = dict(model_type="llama", num_hidden_layers=2, hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
               intermediate_size=160, vocab_size=128, max_position_embeddings=64)
    return spec(name, **{**cfg, **sizes})


SMALL = {
    "llama": llama(),
    "gpt2": spec("gpt2", model_type="gpt2", n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=128,
                 n_positions=64, bos_token_id=127, eos_token_id=127),
    "gpt_neox": spec("gpt_neox", model_type="gpt_neox", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                     intermediate_size=256, vocab_size=128, max_position_embeddings=64, rotary_pct=0.25),
    "bert": spec("bert", model_type="bert", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                 intermediate_size=256, vocab_size=128, max_position_embeddings=64, type_vocab_size=2),
}


def _setup(model: ModelSpec, rank: int, targets: str | None = None, quantize: str | None = None,
           recipe: str = "bf16-mixed", seq: int = 32, micro_batch: int = 1, **recipe_kw) -> TrainingSetup:
    s = TrainingSetup(model=model, recipe=get_recipe(recipe, **recipe_kw), layout=Layout(micro_batch=micro_batch),
                      workload=Workload(seq=seq))
    return s.model_copy(update={"lora": lora_spec(s, lora_rank=rank, lora_targets=targets, quantize_base=quantize)})


# ---- which modules, how many parameters: against PEFT --------------------------------------------------------
def test_default_targets_are_peft_s():
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_map

    for model_type, fam in all_families().items():
        if fam.peft_targets is not None:
            assert list(peft_map[model_type]) == list(fam.peft_targets), model_type


@pytest.mark.parametrize("family,targets", [
    ("llama", None), ("llama", "all-linear"), ("llama", "k_proj,o_proj,down_proj"),
    ("gpt2", None), ("gpt2", "c_proj"), ("gpt2", "all-linear"),
    ("gpt_neox", None), ("gpt_neox", "all-linear"),
    ("bert", None), ("bert", "dense"), ("bert", "all-linear"),
])
def test_adapter_parameters_equal_peft(family, targets):
    """The trainable count of get_peft_model on the same architecture built with transformers."""
    from peft import LoraConfig, get_peft_model

    from memplan.measure.models import build_model

    model_spec = SMALL[family]
    arch = model_spec.arch
    built = build_model(model_spec, "hf")
    target_modules = None if targets is None else ("all-linear" if targets == "all-linear" else targets.split(","))
    model = get_peft_model(built.module, LoraConfig(r=4, target_modules=target_modules))
    peft_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ours = adapter_parameters(arch, 4, resolve_targets(arch, None if targets is None else targets.split(",")))
    assert ours == peft_trainable


def test_bad_target_is_one_line_error(capsys):
    code, _, err = run_cli(capsys, "estimate", "llama-2-7b", "--lora-rank", "8", "--lora-targets", "q_prj")
    assert code == 2 and "q_proj" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(MemplanError, match="needs --lora-rank"):
        lora_spec(_setup(SMALL["llama"], 4), lora_rank=None, quantize_base="nf4")


# ---- the frozen base: NF4 with double quantisation ----------------------------------------------------------
def test_nf4_double_quant_is_4_127_bits_per_parameter():
    """QLoRA sec. 3: 4 bits + 8/64 + 32/(64*256) = 4.127 bits with DQ; 4 + 32/64 = 4.5 without."""
    n = 4096 * 4096 * 16  # large: the per-tensor constants vanish
    assert nf4_tensor_bytes(n, True) * 8 / n == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), rel=1e-5)
    assert nf4_tensor_bytes(n, False) * 8 / n == pytest.approx(4.5, rel=1e-5)


@pytest.mark.parametrize("shape", [(4096, 4096), (11008, 4096), (100, 37)])
def test_nf4_and_int8_bytes_equal_bitsandbytes(shape):
    """Byte for byte what bitsandbytes allocates (it runs these on CPU; not a test dependency: skipped without
    it).  Checked here with bitsandbytes 0.50.2: all shapes equal."""
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    import torch

    w = torch.randn(*shape, dtype=torch.bfloat16)
    for dq in (True, False):
        packed, st = bnb_f.quantize_4bit(w, blocksize=64, compress_statistics=dq, quant_type="nf4")
        tensors = [packed, st.absmax, st.code] + ([st.offset, st.state2.absmax] if dq else [])
        assert sum(t.nbytes for t in tensors) == nf4_tensor_bytes(w.numel(), dq)  # state2.code: one shared map
    cb, scb, _ = bnb_f.int8_vectorwise_quant(w.half())
    assert cb.nbytes + scb.nbytes == int8_tensor_bytes(*shape)


def test_dequantised_weight_is_the_qlora_temporary():
    """bitsandbytes Linear4bit's backward dequantises the weight to the compute dtype for grad_input (MatMul4Bit;
    on CUDA the forward does too): measured, that transient is the adjustment's dequant_temporary_bytes.  Runs where
    bitsandbytes is installed (its CPU backend), skipped elsewhere."""
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    from memplan.measure.tracker import StorageTracker

    model = llama(num_hidden_layers=1, hidden_size=1024, num_key_value_heads=8, intermediate_size=4096)
    adj = lora_activation_adjustment(_setup(model, 8, quantize="nf4"))
    lin = bnb.nn.Linear4bit(1024, 4096, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    lin.weight = bnb.nn.Params4bit(torch.randn(4096, 1024, dtype=torch.bfloat16), requires_grad=False,
                                   quant_type="nf4", compress_statistics=True)
    lin = lin.to("cpu")
    x = torch.randn(2, 64, 1024, dtype=torch.bfloat16, requires_grad=True)
    tr = StorageTracker("cpu")
    tr.track([x, lin.weight], "weights")
    with tr:
        tr.set_phase("forward")
        loss = lin(x).sum()
        tr.set_phase("backward")
        held = tr.total
        loss.backward()
    # minus grad_input and the loss's own 0-d bf16 gradient (2 B)
    transient = tr.phase_peaks["backward"][0] - held - x.nbytes - 2
    assert transient == adj.dequant_temporary_bytes == 4096 * 1024 * 2


def test_lora_states_components():
    """Frozen base: weights only.  Adapters: weights, grads, master and Adam states per the recipe."""
    s = _setup(SMALL["llama"], 4)
    states = model_states(s)
    n = s.model.parameters.total
    n_adapt = adapter_parameters(SMALL["llama"].arch, 4, resolve_targets(SMALL["llama"].arch, ["q", "v"]))
    assert states.gpu_bytes("weights") == 2 * n + 2 * n_adapt
    assert states.gpu_bytes("gradients") == 2 * n_adapt
    assert states.gpu_bytes("master_weights") == 4 * n_adapt
    assert states.gpu_bytes("optimizer_states") == 8 * n_adapt


# ---- measured: a LoRA step on CPU (PEFT) and at 7B scale with fake tensors (the same maths) -------------------
def _inject_lora(module, targets: list[str], rank: int):
    """LoRA exactly as PEFT's lora.Linear (lora_dropout=0): y = W0 x + B(A x) * alpha/r.  Used where PEFT's
    `.to()` calls cannot run (FakeTensorMode)."""
    import torch
    from torch import nn

    class LoraLinear(nn.Module):
        def __init__(self, base: nn.Linear):
            super().__init__()
            self.base = base
            self.lora_A = nn.Linear(base.in_features, rank, bias=False, dtype=base.weight.dtype)
            self.lora_B = nn.Linear(rank, base.out_features, bias=False, dtype=base.weight.dtype)
            nn.init.zeros_(self.lora_B.weight)

        def forward(self, x):
            return self.base(x) + self.lora_B(self.lora_A(x)) * 2.0

    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if attr in targets and isinstance(sub, torch.nn.Linear):
                setattr(child, attr, LoraLinear(sub))
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)
    return module


def _measure_step(module, ids, trainable_only: bool = True) -> dict[str, int]:
    """Bytes by category after one forward/backward/AdamW step (StorageTracker, measure/tracker.py)."""
    import torch

    from memplan.measure.tracker import StorageTracker

    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, foreach=False)
    tr = StorageTracker("cpu")
    tr.track(list(module.parameters()), "weights")
    tr.watch_gradients(params)
    with tr:
        tr.set_phase("forward")
        loss = module(input_ids=ids, labels=ids).loss
        tr.set_phase("backward")
        activations = tr.current["activations"]
        loss.backward()
        del loss
        tr.set_phase("optimizer_step")
        opt.step()
        tr.track_optimizer(opt)
    tr.remove_hooks()
    out = {"activations": activations, **{c: tr.current[c] for c in ("weights", "gradients", "optimizer_states")}}
    # torch AdamW also keeps a 0-d fp32 `step` per parameter tensor: 4 B each, not model-state bytes per param
    out["optimizer_states"] -= 4 * len(params)
    return out


def _full_ft_activations(model: ModelSpec, ids, dtype, inject=None) -> int:
    import torch

    from memplan.measure.models import build_model

    torch.manual_seed(0)
    m = build_model(model, "hf", dtype=dtype).module
    return _measure_step(m, ids)["activations"]


def test_measured_lora_step_on_cpu_matches():
    """PEFT LoRA (r=8, q_proj+v_proj, the llama default) on a small Llama, pure bf16 recipe, one AdamW step:
    model states exact; saved activations = full fine-tuning's measured minus the estimate's adjustment, ±5%."""
    import torch
    from peft import LoraConfig, get_peft_model

    from memplan.measure.models import build_model

    small = llama(num_hidden_layers=4, hidden_size=256, intermediate_size=688, vocab_size=512,
                  max_position_embeddings=256)
    arch = small.arch
    s = _setup(small, 8, recipe="bf16", seq=128, micro_batch=2)
    ids = torch.randint(0, arch.vocab_size, (2, 128))
    torch.manual_seed(0)
    m = build_model(s.model, "hf", dtype=torch.bfloat16).module
    m = get_peft_model(m, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]), autocast_adapter_dtype=False)
    measured = _measure_step(m, ids)
    states = model_states(s)
    for cat in ("weights", "gradients", "optimizer_states"):
        assert measured[cat] == states.gpu_bytes(cat), cat

    adj = lora_activation_adjustment(s)
    full = _full_ft_activations(small, ids, torch.bfloat16)
    predicted = full - arch.n_layers * (adj.per_layer_removed_bytes - adj.per_layer_added_bytes) \
        - adj.once_removed_bytes
    assert measured["activations"] == pytest.approx(predicted, rel=0.05)
    assert measured["activations"] < full  # a frozen base saves less


def test_fake_7b_lora_step_matches():
    """Llama-2-7B (all 32 layers) at seq 512, LoRA r=16 on q,v (own implementation of PEFT's maths: PEFT's `.to()`
    cannot run on fake tensors), built and run under
    FakeTensorMode: model states exact, activations within 5% of full-FT measured + the adjustment."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memplan.catalog import get_model_profile
    from memplan.measure.models import build_model

    model = get_model_profile("llama-2-7b")
    arch = model.arch
    s = _setup(model, 16, recipe="bf16", seq=512)
    with FakeTensorMode():
        ids = torch.randint(0, arch.vocab_size, (1, 512))
        m = build_model(model, "hf", dtype=torch.bfloat16).module
        m = _inject_lora(m, ["q_proj", "v_proj"], 16)
        measured = _measure_step(m, ids)
        full = _full_ft_activations(model, ids, torch.bfloat16)
    states = model_states(s)
    for cat in ("weights", "gradients", "optimizer_states"):
        assert measured[cat] == states.gpu_bytes(cat), cat
    adj = lora_activation_adjustment(s)
    predicted = full - arch.n_layers * (adj.per_layer_removed_bytes - adj.per_layer_added_bytes) \
        - adj.once_removed_bytes
    assert measured["activations"] == pytest.approx(predicted, rel=0.05)


# ---- the estimate against a measured steady-state step (activations.py / timeline.py apply the adjustment) ----
def _measure_steady_step(module, ids, recompute: bool = False) -> dict[str, int]:
    """The step the timeline models: AdamW (for-loop) states already allocated by a warm-up step, gradients None
    after zero_grad(set_to_none=True); StorageTracker's saved activations at backward start and peak of the step
    (the same registration as measure/runner.py: weights, buffers, optimizer states, input ids and targets)."""
    import torch

    from memplan.measure.tracker import StorageTracker

    if recompute:  # as measure/runner.py does for --recompute full
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = ids.clone()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, foreach=False)
    module(input_ids=ids, labels=targets).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    tr = StorageTracker("cpu")
    tr.track(list(module.parameters()), "weights")
    tr.track(list(module.buffers()), "other")
    tr.track_optimizer(opt)
    tr.track([ids, targets], "other")
    tr.watch_gradients(params)
    with tr:
        tr.set_phase("forward")
        loss = module(input_ids=ids, labels=targets).loss
        tr.set_phase("backward")
        loss.backward()
        del loss
        tr.set_phase("optimizer_step")
        opt.step()
        tr.set_phase("zero_grad")
        opt.zero_grad(set_to_none=True)
    tr.remove_hooks()
    return {"saved": tr.activations_at_backward_start, "peak": tr.peak, "peak_phase": tr.peak_phase}


def _lora_estimate(s: TrainingSetup, recompute: str = "none"):
    w = s.workload.model_copy(update={"optimizer_impl": "for-loop"})
    return estimate_memory(s.model_copy(update={"workload": w, "layout": s.layout.replace(recompute=recompute)}),
                           kernels="cpu").per_gpu


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_estimate_matches_measured_peft_lora_step_on_cpu(recompute):
    """PEFT LoRA r=8 on q_proj,v_proj (small Llama, pure bf16, sdpa): estimate_memory's saved activations and
    peak_allocated against the measured step, and what LoRA saves against full fine-tuning, measured both ways.
    Measured (torch 2.13 cpu): full FT saves 12,250,120 B, LoRA 8,775,688 B (recompute none); with full recompute
    only the LM head's inputs differ (262,144 B), layer 0's first norm being recomputed like any layer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from memplan.measure.models import build_model

    small = llama(num_hidden_layers=4, hidden_size=256, intermediate_size=688, vocab_size=512,
                  max_position_embeddings=256)
    s = _setup(small, 8, recipe="bf16", seq=128, micro_batch=2)
    torch.manual_seed(0)
    ids = torch.randint(0, small.arch.vocab_size, (2, 128))
    full = _measure_steady_step(build_model(s.model, "hf", dtype=torch.bfloat16).module, ids, recompute == "full")
    m = build_model(s.model, "hf", dtype=torch.bfloat16).module
    m = get_peft_model(m, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]), autocast_adapter_dtype=False)
    measured = _measure_steady_step(m, ids, recompute=recompute == "full")
    est = _lora_estimate(s, recompute)
    # both from the traced rows: full fine-tuning's, and the frozen base's (traced with every parameter frozen)
    est_full = _lora_estimate(s.model_copy(update={"lora": None}), recompute)
    # the adjustment itself: byte-exact against the two measurements
    assert est_full.saved_activations - est.saved_activations == full["saved"] - measured["saved"]
    # full recompute: the full-FT checkpoint model is 15,368 B (1%) short of these tiny checkpoints, LoRA or not
    assert est.saved_activations == pytest.approx(measured["saved"], rel=0.01 if recompute == "none" else 0.02)
    assert est.peak_allocated == pytest.approx(measured["peak"], rel=0.01)


def test_estimate_matches_measured_7b_lora_step_fake():
    """Llama-2-7B shapes (4 of its 32 layers, to stay fast), seq 512, LoRA r=16 on q,v (PEFT's maths, `_inject_lora`)
    under FakeTensorMode: estimate_memory's saved activations and peak_allocated against the measured step."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memplan.catalog import get_model_profile
    from memplan.measure.models import build_model

    model = with_overrides(get_model_profile("llama-2-7b"), {"layers": 4})
    s = _setup(model, 16, recipe="bf16", seq=512)
    with FakeTensorMode():
        ids = torch.randint(0, model.arch.vocab_size, (1, 512))
        m = build_model(s.model, "hf", dtype=torch.bfloat16).module
        m = _inject_lora(m, ["q_proj", "v_proj"], 16)
        measured = _measure_steady_step(m, ids)
    est = _lora_estimate(s)
    assert est.saved_activations == pytest.approx(measured["saved"], rel=0.01)
    assert est.peak_allocated == pytest.approx(measured["peak"], rel=0.01)


# ---- published anchors ------------------------------------------------------------------------------------
def test_lora_paper_gpt3_175b():
    """Hu et al. 2021, sec. 4.2: GPT-3 175B, r=4 on W_q and W_v: "we reduce the VRAM consumption during training
    from 1.2TB to 350GB".  The frozen fp16 base is 2 bytes x 174.6B = 349.2 GB (+ 0.15 GB of adapters and their
    states); the paper does not give the recipe of the 1.2 TB, which lies between full fine-tuning with 16-bit
    weights + two 16-bit Adam states (6 B/param, its "up to 2/3" saving) and the same with 16-bit gradients too
    (8 B/param)."""
    from memplan.catalog import get_model_profile

    s = TrainingSetup(model=get_model_profile("gpt3-175b"), recipe=get_recipe("bf16"), optimizer=get_optimizer("adam"))
    lora = s.model_copy(update={"lora": lora_spec(s, lora_rank=4, lora_targets="q,v")})
    lora_bytes = model_states(lora)
    total = sum(c.bytes for c in lora_bytes.components if c.location == "gpu")
    assert total == pytest.approx(350e9, rel=0.005)
    # Table 5 (sec. 7.1): "18M" trainable parameters for r=8 on W_q, r=4 on W_q and W_v, r=2 on W_q,W_k,W_v,W_o
    a = s.model.arch
    counts = {adapter_parameters(a, r, resolve_targets(a, t)) for r, t in ((8, ["q"]), (4, ["q", "v"]),
                                                                         (2, ["q", "k", "v", "o"]))}
    assert len(counts) == 1 and 18e6 <= counts.pop() < 19e6
    full = model_states(s)
    no_grads = full.gpu_bytes("weights") + full.gpu_bytes("optimizer_states")
    assert no_grads < 1.2e12 < no_grads + full.gpu_bytes("gradients")


# Touvron et al. 2023, Table 2; 65.2B parameters
LLAMA_65B = llama("llama-65b", num_hidden_layers=80, hidden_size=8192, num_attention_heads=64, num_key_value_heads=64,
                  intermediate_size=22016, vocab_size=32000, max_position_embeddings=2048)


def test_qlora_paper_65b_on_one_48gb_gpu():
    """Dettmers et al. 2023, abstract: QLoRA "reduces the average memory requirements of finetuning a 65B
    parameter model from >780GB of GPU memory to <48GB".  Full 16-bit fine-tuning: bf16 weights and grads + fp32
    Adam states, 12 B/param.  QLoRA: NF4+DQ base, LoRA r=64 on all linear layers (sec. 4), bf16 adapters,
    paged 32-bit AdamW, batch 1, seq 512 (Figure 6), gradient checkpointing."""
    model = LLAMA_65B
    assert model.parameters.total == pytest.approx(65.2e9, rel=0.002)
    full = TrainingSetup(model=model, recipe=get_recipe("bf16-mixed", master_weights="none"))
    assert estimate_memory(full).per_gpu.model_states > 780e9
    # bitsandbytes' paged AdamW updates each tensor in one fused kernel (Optimizer2State.update_step ->
    # F.optimizer_update_32bit): no foreach temporaries
    q = TrainingSetup(model=model, recipe=get_recipe("bf16-mixed", master_weights="none"),
                      layout=Layout(micro_batch=1, recompute="full"), workload=Workload(seq=512, optimizer_impl="fused"))
    q = q.model_copy(update={"lora": lora_spec(q, lora_rank=64, lora_targets="all-linear", quantize_base="nf4")})
    est = estimate_memory(q)
    assert est.per_gpu.required < 48e9
    # the bulk is the 4-bit base: every linear of the 80 layers at 4.127 bits (sec. 3)
    m = LLAMA_65B.arch
    linear_params = m.n_layers * sum(lin.params for lin in m.linears(m.first))
    nf4 = next(c for c in est.components if c.name == "frozen base linears (nf4)")
    assert nf4.bytes == pytest.approx(linear_params * (4 + 8 / 64 + 32 / (64 * 256)) / 8, rel=1e-4)


# ---- the CLI ----------------------------------------------------------------------------------------------
def test_cli_qlora_json(capsys):
    out = cli_json(capsys, "estimate", "llama-2-7b", "--lora-rank", "16", "--quantize-base", "nf4",
                   "--lora-targets", "all-linear", "-g", "a100-40gb")
    names = [c["name"] for c in out["components"]]
    assert "frozen base linears (nf4)" in names and out["setup"]["lora"]["roles"] == [
        f"self_attn.{n}_proj" for n in "qkvo"] + [f"mlp.{n}_proj" for n in ("gate", "up", "down")]
    assert out["per_gpu"]["gradients"] * 2 == out["per_gpu"]["optimizer_states"] // 2  # bf16 grads, fp32 Adam x2
    # bitsandbytes paged AdamW: one fused kernel per tensor, no foreach temporaries; the dequantised temporary is the
    # largest base weight in bf16 (test_dequantised_weight_is_the_qlora_temporary): gate/up/down, 11008 x 4096
    comps = {c["name"]: c["bytes"] for c in out["components"]}
    assert "optimizer temporaries (step)" not in comps
    assert comps["QLoRA dequantised base weight (forward, backward)"] == 11008 * 4096 * 2


def test_zero_shards_adapters_and_stage_3_the_frozen_base():
    """ZeRO-1 shards the adapters' master weights and Adam states over DP, ZeRO-2 also their gradients, ZeRO-3 also
    every weight, frozen base included (ZeRO paper sec. 5 applied to what exists: the base has no grads/states)."""
    base = _setup(SMALL["llama"], 4)
    n = base.model.parameters.total
    n_adapt = adapter_parameters(SMALL["llama"].arch, 4, resolve_targets(SMALL["llama"].arch, ["q", "v"]))
    for zero, (w, g, m, o) in {1: (1, 1, 8, 8), 2: (1, 8, 8, 8), 3: (8, 8, 8, 8)}.items():
        s = base.model_copy(update={"layout": Layout(gpus=8, zero=zero)})
        st = model_states(s)
        assert st.gpu_bytes("weights") == math.ceil(2 * n / w) + math.ceil(2 * n_adapt / w)
        assert st.gpu_bytes("gradients") == math.ceil(2 * n_adapt / g)
        assert st.gpu_bytes("master_weights") == math.ceil(4 * n_adapt / m)
        assert st.gpu_bytes("optimizer_states") == math.ceil(8 * n_adapt / o)


# ---- every family: the frozen-base trace against PEFT steps --------------------------------------------------
def _family_lora_cases():
    from tests.validation_cases import family_cases

    return [c for c in family_cases() if c.device == "cpu"]


# sequential blocks with sdpa: layer 0 keeps exactly what the others keep once its first norm is off
EXACT = {"llama", "qwen2", "mixtral"}
MLA_TARGETS = {"deepseek_v3": "q_b_proj,kv_b_proj"}  # PEFT has no default; no q_proj/v_proj to fall back on


@pytest.mark.parametrize("recompute", ["none", "full"])
@pytest.mark.parametrize("case", _family_lora_cases(), ids=lambda c: c.label.split(":")[0])
def test_every_family_lora_step_against_peft(case, recompute):
    """PEFT LoRA r=8 on the family's default targets (memplan's q,v where PEFT has none), pure bf16, the small
    config of tests/validation_cases.py as a real CPU step, against estimate_memory with the frozen-base rows
    (measure/trace/step.py `frozen`).  Exact (saved; the peak but for the adapters' own gradient transients) for
    sequential sdpa blocks; otherwise within layer 0's kept activations: in a PEFT step nothing upstream of the
    first adapter requires grad, so layer 0's branches no adapter reaches save nothing (a parallel block's MLP,
    the k side of a QK-norm or of eager attention), which the trace counts like any layer's (measured: gpt_neox
    +8% at 4 layers, qwen3 +1.1%, gemma3 +1.1%, mistral +0.6%, gemma2 +0.5%; gpt2 under full recompute keeps
    one b x s x h tensor the trace does not)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from memplan.measure.models import build_model

    family = case.label.split(":")[0]
    base = case.setup().model_copy(update={"recipe": get_recipe("bf16")})
    s = base.model_copy(update={"lora": lora_spec(base, lora_rank=8, lora_targets=MLA_TARGETS.get(family)),
                                "layout": base.layout.replace(recompute=recompute),
                                "workload": base.workload.model_copy(update={"optimizer_impl": "for-loop"})})
    est = estimate_memory(s, kernels="cpu").per_gpu
    torch.manual_seed(0)
    built = build_model(s.model, "hf", attention=s.workload.attention, dtype=torch.bfloat16)
    if built.kind == "encoder":
        pytest.skip("a bare encoder (BertModel) has no loss of its own for this step")
    targets = sorted({name.split(".")[-1] for name in s.lora.roles})
    module = get_peft_model(built.module, LoraConfig(r=8, target_modules=targets), autocast_adapter_dtype=False)
    ids = torch.randint(0, s.model.arch.vocab_size, (s.layout.micro_batch, s.seq))
    measured = _measure_steady_step(module, ids, recompute=recompute == "full")
    # the frozen trace has no adapter weights: their gradients' transients during backward (at most one copy of
    # every adapter parameter, bf16) are not in its rows; 64 B: what the runner's step holds beside
    slack = 64 + 2 * adapter_parameters(s.model.arch, 8, s.lora.roles)
    if family in EXACT:
        assert est.saved_activations == measured["saved"]
        assert measured["peak"] - slack <= est.peak_allocated <= measured["peak"]
    else:
        from memplan.memory.activations import activations

        layer0 = activations(s.model_copy(update={"lora": None}), "cpu").groups[0].kept
        assert abs(est.saved_activations - measured["saved"]) <= layer0
        assert measured["peak"] - slack - layer0 <= est.peak_allocated <= measured["peak"] + layer0
