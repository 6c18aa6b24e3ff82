"""The head a config asks for: a decoder's `architectures` naming a *ForSequenceClassification class (a reward or
value model, a classifier) replaces the LM head with a score head.

transformers 5.24 modeling_layers.py GenericForSequenceClassification (LlamaForSequenceClassification,
MistralForSequenceClassification, Qwen2/Qwen3ForSequenceClassification, ... are that class with their
PreTrainedModel): the backbone (AutoModel, so the final norm stays), `score = nn.Linear(hidden, num_labels,
bias=False)` applied to every position, the logits of the last non-padding token returned.  TRL builds reward models
(RewardTrainer) and PPO's value model with AutoModelForSequenceClassification and num_labels=1.

num_labels as transformers 5.24 configuration_utils.py PreTrainedConfig reads it: len(id2label) when the config has
an id2label map, else the `num_labels` key, else 2 (the default kept "in case users have saved a classifier with 2
labels").  BERT reads its own `architectures` (families/bert.py).
"""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError
from memplan.spec.model import Head, Model, ModelSpec

SUFFIX = "ForSequenceClassification"


def sequence_classification_class(data: dict[str, Any]) -> str | None:
    """The *ForSequenceClassification class the config's `architectures` names, if any."""
    archs = data.get("architectures")
    if not isinstance(archs, list):
        return None
    return next((a for a in archs if isinstance(a, str) and a.endswith(SUFFIX)), None)


def num_labels_of(data: dict[str, Any], path: str = "config") -> int:
    id2label = data.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = data.get("num_labels", 2)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MemplanError(f"{path}: num_labels must be a positive integer (a reward model has 1), got {n!r}")
    return n


def score_head(model: Model, num_labels: int) -> Model:
    """`model` with a sequence-classification score head in place of its LM head (the final norm kept)."""
    if model.head.objective not in ("causal-lm", "sequence-classification"):
        raise MemplanError(f"a {model.family} model with a {model.head.objective} head has no sequence-classification "
                           "head in memplan (decoder models do: transformers' GenericForSequenceClassification)")
    head = Head(objective="sequence-classification", final_norm=model.head.final_norm, lm_head=False,
                num_labels=num_labels)
    return model.model_copy(update={"head": head})


def apply_architectures(model: Model, data: dict[str, Any], path: str = "config") -> Model:
    """The head the config's `architectures` asks for (a decoder read as a causal LM otherwise)."""
    if model.head.objective != "causal-lm" or sequence_classification_class(data) is None:
        return model
    return score_head(model, num_labels_of(data, path))


def as_sequence_classifier(spec: ModelSpec, num_labels: int = 1) -> ModelSpec:
    """`spec` as a sequence-classification model (a reward model: num_labels 1), as TRL loads a reward model from a
    causal-LM checkpoint (AutoModelForSequenceClassification.from_pretrained(..., num_labels=1)): its config says
    so too, so that a measured step builds the same class."""
    a = spec.arch
    if a.head.score and a.head.num_labels == num_labels:
        return spec
    arch = score_head(a, num_labels)
    config = None
    if spec.hf_config is not None:
        config = dict(spec.hf_config)
        archs = [x for x in (config.get("architectures") or []) if isinstance(x, str)]
        stem = next((x.removesuffix("ForCausalLM") for x in archs if x.endswith("ForCausalLM")), None)
        config["architectures"] = [f"{stem or 'Auto'}{SUFFIX}"]
        config.pop("id2label", None)
        config.pop("label2id", None)
        config["num_labels"] = num_labels
    return spec.model_copy(update={"architecture": arch, "hf_config": config})
