"""The 2026 Llama-shaped families shipped as built-in profiles without a family file (issue 20 item 5): olmo-3 (7B,
32B), smollm3-3b, apertus-8b.  Their architecture is read from transformers' module tree and stored in the profile
(scripts/module_tree_profiles.py), so the estimate needs no torch; here it is read again from the config and
compared, and the parameter count checked against the module on the meta device.  Their traced rows
(profiles/implementations/hf-<type>.json) reproduce real CPU steps: tests/test_validation.py FAMILY_CASES (the
families of measure/trace REPRESENTATIVE) and the cases below."""
from __future__ import annotations

import copy
import json

import pytest

from memplan.catalog import resolve_model
from memplan.families.registry import find_family

PROFILES = ("olmo-3-7b", "olmo-3-32b", "smollm3-3b", "apertus-8b")


def test_they_need_no_family_file_and_no_torch():
    for name in PROFILES:
        spec = resolve_model(name)
        assert find_family(spec.hf_config["model_type"]) is None and spec.architecture is not None


@pytest.mark.parametrize("name", PROFILES)
def test_stored_architecture_is_the_module_trees_and_counts_every_parameter(name):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.spec.model import count_parameters

    spec = resolve_model(name)
    assert read_module_tree(spec.hf_config, name) == spec.arch  # the stored reading is today's reading
    data = {k: v for k, v in copy.deepcopy(spec.hf_config).items()}
    cfg = tf.AutoConfig.for_model(**data)
    with torch.device("meta"):
        module = tf.AutoModelForCausalLM.from_config(cfg)
    assert count_parameters(spec.arch).total == sum(p.numel() for p in module.parameters())


def test_xielu_parameters_are_counted_and_active():
    """Apertus's MLP activation (transformers activations.py XIELUActivation) holds alpha_p and alpha_n per layer."""
    from memplan.spec.model import count_parameters

    a = resolve_model("apertus-8b").arch
    [extra] = a.extras
    assert extra.params == 2 * a.n_layers and extra.per_token
    pc = count_parameters(a)
    assert pc.active == pc.total and pc.other == 2 * a.n_layers


def test_the_published_shapes():
    """What the publishers' model cards state (the source field of each profile)."""
    a = resolve_model("olmo-3-7b").arch
    assert (a.n_layers, a.hidden_size, a.first.attention.heads, a.first.attention.kv_heads) == (32, 4096, 32, 32)
    assert [g.count for g in a.groups[:2]] == [3, 1] and a.groups[0].layer.attention.window == 4096
    assert a.groups[1].layer.attention.window_kind == "global"
    b = resolve_model("olmo-3-32b").arch
    assert (b.n_layers, b.hidden_size, b.first.attention.heads, b.first.attention.kv_heads) == (64, 5120, 40, 8)
    assert resolve_model("allenai/Olmo-3-7B-Instruct").name == "olmo-3-7b"
    assert resolve_model("swiss-ai/Apertus-8B-Instruct-2509").name == "apertus-8b"
    assert resolve_model("HuggingFaceTB/SmolLM3-3B").arch.head.tied


@pytest.mark.parametrize("name", PROFILES)
def test_estimate_answers_with_the_traced_rows(name, capsys):
    from tests.helpers import run_cli

    code, out, err = run_cli(capsys, "estimate", name, "--gpu", "h100-sxm", "--json")
    assert code == 0, err
    est = json.loads(out)
    family = resolve_model(name).hf_config["model_type"]
    assert est["activation_profile"] == f"hf-{family}"


def test_architecture_flags_read_the_module_tree_again():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from memplan.families.profiles import with_overrides

    spec = with_overrides(resolve_model("olmo-3-7b"), {"layers": 4})
    assert spec.arch.n_layers == 4 and spec.hf_config["layer_types"] == ["sliding_attention"] * 3 + [
        "full_attention"]


# ---------------------------------------------------------------------------------------------------------
def _cases():
    from tests.validation_cases import family_cases

    return [c for c in family_cases() if c.label.split(":")[0] in ("olmo3", "smollm3", "apertus")]


CASES = _cases() if __import__("importlib.util").util.find_spec("transformers") else []


@pytest.mark.parametrize("case", [c for c in CASES if c.device == "cpu"], ids=lambda c: c.label)
def test_a_real_cpu_step_within_2_percent_with_the_peak_phase(case):
    from tests.validation_cases import error_percent, memtracker_peak, run_case

    est, measured = run_case(case)
    err = error_percent(est.per_gpu.peak_allocated, measured.peak_allocated)
    assert abs(err) <= case.tolerance and est.peak_phase == measured.peak_phase, (
        f"{case.label}: estimate {est.per_gpu.peak_allocated:,} B ({est.peak_phase}) vs measured "
        f"{measured.peak_allocated:,} B ({measured.peak_phase}): {err:+.2f}%")
    assert abs(error_percent(measured.peak_allocated, memtracker_peak(case))) <= 0.1
