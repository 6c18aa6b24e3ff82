"""Llama 4 text model alone (model_type llama4_text: Llama4ForCausalLM): llama4.py's text model from a top-level
Llama4TextConfig.  A module of its own because PEFT's default targets differ by model_type (peft 0.21.2
constants.py maps llama4 to q_proj/v_proj and has no llama4_text entry)."""
from __future__ import annotations

from memplan.families.config import ConfigReader
from memplan.families.llama4 import text_model
from memplan.families.registry import Family
from memplan.spec.model import Model


def read(c: ConfigReader) -> Model:
    return text_model(c, family="llama4_text")


FAMILY = Family(model_types=("llama4_text",), read=read,
                description="Llama 4 (text): chunked rotary + NoPE global layers, MoE with shared expert",
                peft_targets=None, transformers_class="Llama4ForCausalLM")
