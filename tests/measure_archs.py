"""Tiny configs, one per Hugging Face family, for the measurement tests (fast on a CPU).

Each is a config.json dict read by the family's own reader (memplan/families/<type>.py), so the measured module and
the estimated Model come from the same file."""
from __future__ import annotations

from memplan.families.registry import read_config
from memplan.spec.model import Model, ModelSpec
from memplan.spec.layout import Layout
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import Workload, get_optimizer, get_recipe

V = 512
_LLAMA = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=160, vocab_size=V, max_position_embeddings=64)

CONFIGS: dict[str, dict] = {
    "llama": {"model_type": "llama", **_LLAMA},
    "mistral": {"model_type": "mistral", **_LLAMA, "sliding_window": 32},
    "qwen2": {"model_type": "qwen2", **_LLAMA, "tie_word_embeddings": True},
    "mixtral": {"model_type": "mixtral", **{**_LLAMA, "intermediate_size": 96}, "num_local_experts": 4,
                "num_experts_per_tok": 2},
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_inner": 256, "vocab_size": V,
             "n_positions": 64, "activation_function": "gelu_new"},
    "gpt_neox": {"model_type": "gpt_neox", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                 "intermediate_size": 256, "vocab_size": V, "max_position_embeddings": 64, "rotary_pct": 0.25,
                 "hidden_act": "gelu", "use_parallel_residual": True},
    "falcon": {"model_type": "falcon", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
               "vocab_size": V, "max_position_embeddings": 64, "multi_query": True, "parallel_attn": True,
               "new_decoder_architecture": False, "bias": False},
    "bert": {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
             "intermediate_size": 256, "vocab_size": V, "max_position_embeddings": 64, "hidden_act": "gelu"},
}

MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(name=f"tiny-{name}", architecture=read_config(cfg, f"tiny-{name}"), hf_config=cfg)
    for name, cfg in CONFIGS.items()}
ARCHS: dict[str, Model] = {name: spec.arch for name, spec in MODELS.items()}


def setup(family: str = "llama", precision: str = "fp32", optimizer: str = "adamw", micro_batch: int = 2,
          seq: int = 32, recompute: str = "none", **workload) -> TrainingSetup:
    return TrainingSetup(model=MODELS[family], recipe=get_recipe(precision), optimizer=get_optimizer(optimizer),
                         layout=Layout(micro_batch=micro_batch, recompute=recompute),
                         workload=Workload(seq=seq, **workload))
