"""measure/trace/: activation rows traced from the model's own code.

- the size-name solver reads dimensions back exactly (products, fused sums, rotary halves, GQA's heads per KV head,
  MLA's heads x (nope + v_head_dim)) and refuses what no name explains;
- one period of a layer pattern keeps every layer kind, in order;
- the CUDA emulation keeps what CUDA's kernels keep (bool dropout mask, fp32 layer-norm statistics, flash's
  log-sum-exp, the efficient kernel's mask);
- a traced profile, read by the torch-free estimate, reproduces a real CPU step of a config it was not traced from
  (other sizes, no head_dim key) to the byte in every phase but the optimizer's 0-dim step counters;
- every shipped hf-<family>.json is a valid profile the estimate picks for its family;
- `memplan trace` errors are one line.
"""
from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memplan.errors import MemplanError  # noqa: E402
from memplan.measure.trace.shapes import ShapeError, Solver, canonical_poly, elements  # noqa: E402

# two probes' base-name values: every name a different odd prime (times 8 for d), different in each probe
TABLES = [dict(b=11, s=61, h=8 * 221 * 23, a=221, g=13, r=17, d=152, f=296, V=47, K=29, E=67),
          dict(b=5, s=31, h=8 * 33 * 17, a=33, g=3, r=11, d=56, f=104, V=53, K=41, E=73)]


def _solve(*values_per_probe, prefer=None):
    solver = Solver(TABLES)
    return solver.dim(tuple(values_per_probe), prefer) if prefer else solver.dim(tuple(values_per_probe))


def _v(name_expr: str, k: int) -> int:
    return eval(name_expr, {}, dict(TABLES[k]))  # noqa: S307 - test expressions over the table only


@pytest.mark.parametrize("expr,want", [
    ("b*s", {("b", "s"): 1}),
    ("2*f", {("f",): 2}),
    ("d//2", {("d",): Fraction(1, 2)}),
    ("a*d + 2*g*d", {("a", "d"): 1, ("d", "g"): 2}),  # a fused QKV output: q + 2*kv
    ("b*s*K", {("K", "b", "s"): 1}),  # the routed tokens
    ("E + 1", {("E",): 1, (): 1}),  # one_hot(num_classes=E + 1)
    ("r", {("r",): 1}),  # repeat_kv's expanded dimension
])
def test_dimensions_are_read_back_as_expressions(expr, want):
    got = _solve(_v(expr, 0), _v(expr, 1))
    assert got == {tuple(sorted(m)): Fraction(c) for m, c in want.items()}


def test_element_counts_use_the_interface_names():
    # repeat_kv's copy (b, g, r, s, d) is b*s*q elements; a key (b, g, s, d) is b*s*kv
    dims = [_solve(_v(x, 0), _v(x, 1)) for x in ("b", "g", "r", "s", "d")]
    assert canonical_poly(elements(dims)) == {("b", "s", "q"): 1}
    dims = [_solve(_v(x, 0), _v(x, 1)) for x in ("b", "g", "s", "d")]
    assert canonical_poly(elements(dims)) == {("b", "s", "kv"): 1}


def test_a_constant_is_a_constant_and_nonsense_is_refused():
    assert _solve(3, 3) == {(): 3}
    with pytest.raises(ShapeError):
        _solve(1009, 2003)  # primes no name product reaches


def test_mla_value_width_is_heads_times_nope_plus_v_head_dim():
    tables = [dict(TABLES[0], d=231, dr=158, dv=83), dict(TABLES[1], d=133, dr=86, dv=67)]
    solver = Solver(tables)
    nope_plus_dv = [t["a"] * (t["d"] - t["dr"] + t["dv"]) for t in tables]
    assert solver.dim(tuple(nope_plus_dv)) == {("a", "d"): 1, ("a", "dr"): -1, ("a", "dv"): 1}


# ---------------------------------------------------------------------------------------------------------
def test_one_period_keeps_every_layer_kind_in_order():
    from memplan.catalog import resolve_model
    from memplan.families.registry import read_config
    from memplan.measure.trace.probe import one_period, text_config, with_class_defaults

    for name, kinds in [("gemma-3-27b", ["sliding", "global"]), ("gpt-oss-20b", ["sliding", "global"]),
                        ("llama-2-7b", ["global"])]:
        period = one_period(with_class_defaults(text_config(resolve_model(name).hf_config)))
        m = read_config(period)
        assert [g.layer.attention.window_kind for g in m.groups] == kinds, name
    period = one_period(resolve_model("deepseek-v3").hf_config)
    assert [g.layer.ffn.moe for g in read_config(period).groups] == [False, True]


# ---------------------------------------------------------------------------------------------------------
def _saved(fn, *tensors):
    """dtype and shape of every tensor the autograd graph of fn(*tensors) saved (through the pack hook)."""
    seen = []

    def pack(t):
        seen.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*tensors)
    return seen


def test_cuda_emulation_keeps_cudas_tensors():
    import torch.nn.functional as F

    from memplan.measure.trace.emulate import CudaDispatch, CudaKernels

    x = torch.randn(2, 8, 16, dtype=torch.bfloat16, requires_grad=True)
    with CudaKernels():
        saved = _saved(lambda t: F.dropout(t, 0.1, training=True), x)
    assert saved == [(torch.bool, (2, 8, 16))]  # native_dropout's mask, not the CPU's bf16 noise
    w = torch.ones(16, dtype=torch.bfloat16, requires_grad=True)
    with CudaDispatch():
        saved = _saved(lambda t: F.layer_norm(t, (16,), w), x)
    assert (torch.float32, (2, 8, 1)) in saved  # fp32 mean and rstd, as layer_norm_kernel.cu keeps them
    q = torch.randn(2, 4, 8, 16, dtype=torch.bfloat16, requires_grad=True)
    with CudaKernels():
        saved = _saved(lambda t: F.scaled_dot_product_attention(t, t, t, is_causal=True), q)
    assert (torch.float32, (2, 4, 8)) in saved and len(saved) == 5  # flash: q, k, v, output, fp32 lse
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    with CudaKernels():
        saved = _saved(lambda t: F.scaled_dot_product_attention(t, t, t, attn_mask=mask), q)
    assert (torch.bfloat16, (8, 8)) in saved  # efficient keeps the mask, converted to the query dtype


# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def traced_llama(tmp_path_factory):
    """`memplan trace` of a Llama config with head_dim and GQA 4:1 (one layer traced; about 10 s on 2 cores)."""
    from memplan.cli import main
    from memplan.memory.implementations import ImplementationProfile

    folder = tmp_path_factory.mktemp("trace")
    cfg = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8,
           "num_key_value_heads": 2, "head_dim": 128, "intermediate_size": 1408, "vocab_size": 32000,
           "max_position_embeddings": 4096}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert main(["trace", str(folder), "--out", str(folder / "hf-llama.json")]) == 0
    prof = ImplementationProfile.model_validate_json((folder / "hf-llama.json").read_text())
    # named by the config's structure (hf-<model_type>-<key>), so that two traced configs of one type coexist
    assert prof.family == "llama" and re.fullmatch(r"hf-llama-[0-9a-f]{8}", prof.name)
    return prof


@pytest.mark.parametrize("precision,attention,batch,seq", [
    ("fp32", "sdpa", 2, 32), ("bf16-mixed", "eager", 4, 48), ("amp-bf16", "sdpa", 2, 64)])
def test_traced_rows_reproduce_a_real_cpu_step(traced_llama, monkeypatch, precision, attention, batch, seq):
    import memplan.memory.activations as activations
    import memplan.memory.timeline as timeline
    from memplan.measure.runner import measure_training_step
    from memplan.memory.estimate import estimate_memory
    from tests.measure_archs import setup

    monkeypatch.setattr(activations, "implementation_for", lambda s: traced_llama)
    monkeypatch.setattr(timeline, "implementation_for", lambda s: traced_llama)
    # the tiny llama has no head_dim key (head_dim = hidden / heads), GQA 2:1, other sizes: not the traced config
    s = setup("llama", precision, micro_batch=batch, seq=seq, attention=attention, optimizer_impl="for-loop")
    measured = measure_training_step(s, device="cpu", optimizer_impl="for-loop")
    est = estimate_memory(s, kernels="cpu")
    by_phase = {p.name: p.total for p in est.timeline}
    # each phase to the byte, but torch's 0-dim fp32 `step` counter per parameter tensor (optimizer states)
    counters = 4 * len(list(__import__("memplan.measure.models", fromlist=["x"]).build_model(
        s.model, "hf").module.parameters()))
    for phase in measured.phases:
        assert abs(by_phase[phase.name] - phase.peak_bytes) <= counters, phase.name
    assert est.peak_phase == measured.peak_phase


def test_traced_rows_are_named_by_what_they_are(traced_llama):
    """names.py at trace time: the shown regions' rows have a name (no aten op) and keep the ops in `detail`."""
    import re

    aten = re.compile(r"_unsafe_view|new_empty|nll_loss|aten|saved by|@")
    for region in ("layer", "checkpoint", "embedding", "head", "forward_only"):
        for row in getattr(traced_llama, region):
            assert not aten.search(row.name) and not row.name.startswith("other"), (region, row.name)
            assert row.detail, (region, row.name)
    names = {row.name for row in traced_llama.layer}
    assert {"attention probabilities (softmax)", "norm statistics (rsqrt)", "MLP down input"} <= names


def test_shipped_traced_profiles_are_valid_and_used():
    from memplan.catalog import profiles_dir, resolve_model
    from memplan.measure.trace import REPRESENTATIVE
    from memplan.memory.activations import implementation_for
    from memplan.memory.implementations import ImplementationProfile
    from memplan.spec.setup import TrainingSetup

    folder = profiles_dir() / "implementations"
    shipped = sorted(folder.glob("hf-*.json"))
    assert shipped, "no traced profile ships"
    for path in shipped:
        prof = ImplementationProfile.model_validate(json.loads(path.read_text()))
        assert prof.family and prof.name == path.stem, path.name
    for family, model in REPRESENTATIVE.items():
        if (folder / f"hf-{family.replace('_', '-')}.json").exists():
            used = implementation_for(TrainingSetup(model=resolve_model(model)))
            assert used.family == family, family


# ---------------------------------------------------------------------------------------------------------
def test_trace_cli_errors_are_one_line(tmp_path, capsys):
    from memplan.cli import main

    assert main(["trace", str(tmp_path / "nope.json")]) == 2
    assert "memplan: error:" in capsys.readouterr().err
    t5 = tmp_path / "config.json"
    t5.write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    assert main(["trace", str(t5)]) == 2
    err = capsys.readouterr().err
    assert "encoder-decoder" in err and err.count("\n") == 1
    with pytest.raises(MemplanError, match="bare parameter count|no config.json"):
        from memplan.cli.trace import read_config

        read_config("7B")


# ---------------------------------------------------------------------------------------------------------
def test_a_model_type_without_a_family_file_is_read_from_its_module_tree():
    from memplan.measure.models import build_hf_config
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.spec.model import count_parameters

    granite = {"model_type": "granite", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
               "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128, "embedding_multiplier": 12.0,
               "residual_multiplier": 0.22, "attention_multiplier": 0.0078125, "logits_scaling": 16.0}
    m = read_module_tree(granite)
    assert m.family == "granite" and [g.count for g in m.groups] == [2]
    built = build_hf_config(granite)
    assert count_parameters(m).total == sum(p.numel() for p in built.module.parameters())
    # a layer whose token mixer nobody reads is refused, naming the module (not "MoE" for a 3-D conv weight)
    mamba = {"model_type": "mamba", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "vocab_size": 128, "state_size": 8}
    with pytest.raises(MemplanError, match="Mamba-1 .*family file memplan/families/mamba.py is needed") as err:
        read_module_tree(mamba)
    assert "MoE" not in str(err.value)


def test_trace_out_keeps_the_model_profile_beside_the_rows(tmp_path, capsys):
    """With --out, a model_type without a family file gets its model profile beside the rows
    (<out>.model.json), not in the shipped catalog; the two together estimate it."""
    import json

    from memplan.catalog import profiles_dir
    from tests.helpers import run_cli

    cfg = tmp_path / "granite-tiny" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"model_type": "granite", "hidden_size": 64, "intermediate_size": 96,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                               "vocab_size": 128, "max_position_embeddings": 64}))
    out = tmp_path / "rows" / "hf-granite.json"
    code, _, err = run_cli(capsys, "trace", cfg, "--out", out)
    assert code == 0, err
    model = json.loads((tmp_path / "rows" / "hf-granite.model.json").read_text())
    assert model["name"] == "granite-tiny" and out.is_file()
    assert not (profiles_dir() / "models" / "granite-tiny.json").exists()
