"""Heads other than the causal LM's: a sequence-classification (reward / value) score head (issue 20 item 4).

- the head is read from the config's `architectures` (families/heads.py) and counted exactly: every parameter of
  transformers' AutoModelForSequenceClassification on the meta device;
- num_labels as transformers reads it (id2label, num_labels, else 2);
- the activation rows of the score head (profiles/implementations/hf-<family>-seq-cls.json, traced) reproduce a
  real CPU step's peak (memplan's tracker, cross-checked with PyTorch's MemTracker) within 2%, peak phase right;
- the estimate says what is trained; RL reward and value models get the score head.
"""
from __future__ import annotations

import copy
import json

import pytest

from memplan.errors import MemplanError
from memplan.families.heads import as_sequence_classifier, num_labels_of
from memplan.families.registry import read_config
from memplan.spec.model import count_parameters

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 96, "vocab_size": 512, "max_position_embeddings": 256, "pad_token_id": 0}
CLASSES = {"llama": "LlamaForSequenceClassification", "mistral": "MistralForSequenceClassification",
           "qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification",
           "gemma2": "Gemma2ForSequenceClassification", "phi3": "Phi3ForSequenceClassification"}


def _config(model_type: str, **kw) -> dict:
    return {"model_type": model_type, "architectures": [CLASSES[model_type]], **TINY, **kw}


def test_num_labels_as_transformers_reads_it():
    assert num_labels_of({"id2label": {"0": "a", "1": "b", "2": "c"}, "num_labels": 7}) == 3
    assert num_labels_of({"num_labels": 1}) == 1
    assert num_labels_of({}) == 2  # PreTrainedConfig's default
    with pytest.raises(MemplanError, match="num_labels must be a positive integer"):
        num_labels_of({"num_labels": 0})


@pytest.mark.parametrize("model_type", sorted(CLASSES))
@pytest.mark.parametrize("labels", [{"num_labels": 1}, {"id2label": {"0": "bad", "1": "good", "2": "best"}}])
def test_score_head_counts_every_parameter_of_transformers_class(model_type, labels):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    cfg = _config(model_type, **labels)
    m = read_config(cfg, "config")
    assert m.head.score and not m.head.lm_head and m.head.num_labels == num_labels_of(cfg)
    conf = tf.AutoConfig.for_model(**copy.deepcopy(cfg))
    with torch.device("meta"):
        module = tf.AutoModelForSequenceClassification.from_config(conf)
    assert type(module).__name__ == CLASSES[model_type]
    assert count_parameters(m).total == sum(p.numel() for p in module.parameters())
    assert count_parameters(m).lm_head == module.score.weight.numel()


def test_a_causal_lm_config_keeps_its_lm_head_and_bert_reads_its_own():
    m = read_config({"model_type": "llama", "architectures": ["LlamaForCausalLM"], **TINY}, "config")
    assert m.head.objective == "causal-lm" and m.head.lm_head
    bert = read_config({"model_type": "bert", "architectures": ["BertForSequenceClassification"],
                        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                        "intermediate_size": 96, "vocab_size": 512}, "config")
    assert bert.head.objective == "encoder"


def test_a_head_cannot_be_both():
    from memplan.spec.model import Head

    with pytest.raises(MemplanError, match="no LM head"):
        Head(objective="sequence-classification", num_labels=1, lm_head=True)
    with pytest.raises(MemplanError, match="num_labels >= 1"):
        Head(objective="sequence-classification", lm_head=False)
    with pytest.raises(MemplanError, match="has none"):
        Head(objective="causal-lm", num_labels=1)


def test_other_models_json_is_unchanged_by_the_new_field():
    from memplan.catalog import resolve_model

    assert "num_labels" not in resolve_model("llama-3.1-8b").arch.model_dump()["head"]
    assert as_sequence_classifier(resolve_model("llama-3.1-8b")).arch.model_dump()["head"]["num_labels"] == 1


def test_shipped_score_head_rows_are_read_for_their_family():
    from memplan.catalog import profiles_dir, resolve_model
    from memplan.measure.trace import REPRESENTATIVE, SEQ_CLS
    from memplan.memory.activations import implementation_for
    from memplan.spec.setup import TrainingSetup

    for family in SEQ_CLS:
        assert (profiles_dir() / "implementations" / f"hf-{family.replace('_', '-')}-seq-cls.json").is_file()
        used = implementation_for(TrainingSetup(model=as_sequence_classifier(resolve_model(REPRESENTATIVE[family]))))
        assert used.family == family and used.name.endswith("-seq-cls"), family


def test_the_estimate_reads_the_score_heads_rows_and_says_what_is_trained(tmp_path, capsys):
    from tests.helpers import run_cli

    cfg = tmp_path / "rm" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(_config("llama", num_labels=1)))
    code, out, err = run_cli(capsys, "estimate", cfg.parent, "--seq", "256")
    assert code == 0, err
    first = out.splitlines()[0]
    assert "trained as sequence-classification with a score head (hidden x 1, last-token pooling" in first
    assert "activation rows hf-llama-seq-cls" in out
    assert "log-softmax" not in out and "LM head" not in out
    code, out, _ = run_cli(capsys, "estimate", cfg.parent, "--seq", "256", "--json")
    assert json.loads(out)["objective"] == "sequence-classification"


def test_the_score_head_is_a_fraction_of_the_lm_heads_memory():
    """The +87% of issue 20: a reward model read as a causal LM counted the vocabulary head and its log-softmax."""
    from memplan.catalog import resolve_model
    from memplan.memory.estimate import estimate_memory
    from memplan.setups import training_setup

    lm = estimate_memory(training_setup("llama-3.1-8b", seq=4096, micro_batch=4, recompute="full"))
    rm = estimate_memory(training_setup(as_sequence_classifier(resolve_model("llama-3.1-8b")), seq=4096,
                                        micro_batch=4, recompute="full"))
    vocab_head = 128256 * 4096
    assert lm.parameters - rm.parameters == vocab_head - 4096
    assert rm.per_gpu.peak_allocated < lm.per_gpu.peak_allocated


# ---------------------------------------------------------------------------------------------------------
# measured: a real CPU step of the representative's small config with the score head
# ---------------------------------------------------------------------------------------------------------
def _cases():
    from memplan.catalog import resolve_model
    from memplan.measure.trace import REPRESENTATIVE
    from tests.validation_cases import FAMILY_TOLERANCE_PERCENT, Case, small_config, spec_of

    from memplan.measure.trace import SEQ_CLS

    out = []
    recipes = ["bf16-mixed", "fp32", "amp-bf16", "bf16"]
    # llama in every mode, then one case per family with shipped score-head rows (recipe and attention rotated;
    # eager where transformers runs no sdpa: Gemma 2's soft-capping)
    runs = [("llama", "bf16-mixed", "sdpa"), ("llama", "fp32", "eager"), ("llama", "amp-bf16", "sdpa")]
    runs += [(f, recipes[i % 4], "eager" if i % 3 == 2 or f == "gemma2" else "sdpa")
             for i, f in enumerate(x for x in SEQ_CLS if x != "llama")]
    for family, recipe, attention in runs:
        spec = as_sequence_classifier(resolve_model(REPRESENTATIVE[family]), 1)
        small = small_config(spec.hf_config)
        out.append(Case(f"{family} reward model (score head): small config (cpu), {recipe}, {attention}, b2 s64",
                        spec_of(f"{family}-rm-small", small), recipe, micro_batch=2, seq=64, attention=attention,
                        device="cpu", tolerance=FAMILY_TOLERANCE_PERCENT))
    return out


HEAD_CASES = _cases() if __import__("importlib.util").util.find_spec("torch") else []


@pytest.mark.parametrize("case", HEAD_CASES, ids=lambda c: c.label)
def test_score_head_rows_reproduce_a_real_cpu_step(case):
    pytest.importorskip("transformers")
    from tests.validation_cases import error_percent, memtracker_peak, run_case

    est, measured = run_case(case)
    assert est.activation_profile.endswith("-seq-cls")
    err = error_percent(est.per_gpu.peak_allocated, measured.peak_allocated)
    assert abs(err) <= case.tolerance and est.peak_phase == measured.peak_phase, (
        f"{case.label}: estimate {est.per_gpu.peak_allocated:,} B ({est.peak_phase}) vs measured "
        f"{measured.peak_allocated:,} B ({measured.peak_phase}): {err:+.2f}%")
    theirs = memtracker_peak(case)
    assert abs(error_percent(measured.peak_allocated, theirs)) <= 0.1, (measured.peak_allocated, theirs)


# ---------------------------------------------------------------------------------------------------------
def test_rl_reward_and_value_models_get_the_score_head():
    from memplan.answers.rl_phases import scoring_model
    from memplan.catalog import resolve_model

    rm = scoring_model("qwen3-8b")
    assert rm.arch.head.score and rm.arch.head.num_labels == 1
    assert rm.hf_config["architectures"] == ["Qwen3ForSequenceClassification"] and rm.hf_config["num_labels"] == 1
    lm = resolve_model("qwen3-8b")
    assert lm.parameters.total - rm.parameters.total == lm.arch.vocab_size * lm.arch.hidden_size - \
        lm.arch.hidden_size
    assert scoring_model("7B").total_parameters  # a bare count stays a count


def test_num_labels_asks_for_the_score_head_explicitly(capsys):
    import memplan
    from tests.helpers import run_cli

    code, out, err = run_cli(capsys, "estimate", "qwen3-8b", "--num-labels", "1", "--json")
    assert code == 0, err
    est = json.loads(out)
    assert est["objective"] == "sequence-classification" and est["activation_profile"] == "hf-qwen3-seq-cls"
    assert memplan.estimate("qwen3-8b", num_labels=1).objective == "sequence-classification"
    code, _, err = run_cli(capsys, "estimate", "qwen3-8b", "--num-labels", "0")
    assert code == 2 and err.count("\n") == 1 and "num-labels" in err
    code, _, err = run_cli(capsys, "estimate", "bert-base", "--num-labels", "1")
    assert code == 2 and "no sequence-classification head in memplan" in err


def test_rl_weighs_the_reward_model_with_its_score_head():
    """PPO with a reward model named by a built-in causal LM: TRL loads it with AutoModelForSequenceClassification
    (num_labels=1), so its bf16 weights are the backbone's and hidden x 1, not the vocabulary head's."""
    from memplan.answers.rl import rl

    p = rl("qwen3-0.6b", "h100-sxm", algorithm="ppo", prompt_length=128, completion_length=256,
           reward_model="qwen3-0.6b", search_changes=False)
    upd = next(ph for ph in p.phases if ph.name == "update")
    [reward] = [c for c in upd.components if c.name.startswith("reward model")]
    assert "score head (hidden x 1" in reward.name
    score = as_sequence_classifier(__import__("memplan.catalog", fromlist=["x"]).resolve_model("qwen3-0.6b"))
    assert reward.bytes == 2 * score.parameters.total


def _score_families():
    from memplan.measure.trace import REPRESENTATIVE

    return sorted(f for f in REPRESENTATIVE if f != "bert")


@pytest.mark.parametrize("family", _score_families())
def test_every_family_with_a_score_class_counts_it_exactly(family):
    """Each built-in family's representative (small config) as a sequence classifier: memplan's count equals
    transformers' AutoModelForSequenceClassification on the meta device (GPT-2, GPT-NeoX and Falcon have their own
    classes, with the same bias-free `score`)."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as CLASSES

    from memplan.catalog import resolve_model
    from memplan.measure.models import transformers_config
    from memplan.measure.trace import REPRESENTATIVE
    from tests.validation_cases import small_config, spec_of

    if family not in CLASSES:
        pytest.skip(f"transformers 5.24 has no sequence-classification class for {family}")
    spec = as_sequence_classifier(spec_of(family, small_config(resolve_model(REPRESENTATIVE[family]).hf_config)), 1)
    with torch.device("meta"):
        module = tf.AutoModelForSequenceClassification.from_config(transformers_config(spec.hf_config))
    assert count_parameters(spec.arch).total == sum(p.numel() for p in module.parameters())
