"""Gemma 3 text-only checkpoints (model_type gemma3_text: Gemma3ForCausalLM, e.g. gemma-3-1b): the text model of
gemma3.py from a top-level Gemma3TextConfig.  A module of its own because PEFT's default targets differ by
model_type (peft 0.21.2 constants.py maps gemma3_text to q_proj/v_proj and has no gemma3 entry)."""
from __future__ import annotations

from memplan.families.config import ConfigReader
from memplan.families.gemma3 import text_model
from memplan.families.registry import Family
from memplan.spec.model import Model


def read(c: ConfigReader) -> Model:
    # Gemma3ForCausalLM._tied_weights_keys apply when Gemma3TextConfig.tie_word_embeddings (default True)
    return text_model(c, family="gemma3_text", tied=c.flag("tie_word_embeddings", default=True))


FAMILY = Family(model_types=("gemma3_text",), read=read,
                description="Gemma 3 (text): 5 sliding : 1 global, q/k norm, sandwich norms",
                peft_targets=("q_proj", "v_proj"), transformers_class="Gemma3ForCausalLM")
