"""Write the built-in model profiles of model types that no family file covers (profiles/models/<name>.json): the
published config.json values (`hf_config`) and the architecture memplan reads from transformers' module tree on the
meta device (`architecture`, measure/trace/module_tree.py), stored so that `memplan estimate` needs neither torch
nor transformers.  tests/test_new_families.py reads every such profile's config again and checks the stored
architecture and its parameter count against the module tree.

    python scripts/module_tree_profiles.py            # every profile below
    python scripts/module_tree_profiles.py olmo-3-7b  # one

Rerun after changing the module-tree reader; the traced rows of their families come from scripts/trace_profiles.py
(REPRESENTATIVE in memplan/measure/trace/__init__.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_OLMO3_ROPE = {"rope_type": "yarn", "rope_theta": 500000, "factor": 8.0, "original_max_position_embeddings": 8192,
               "attention_factor": 1.2079441541679836, "beta_fast": 32, "beta_slow": 1}
_OLMO3_SOURCE = (
    "Architecture: the publisher's model card ({card}: {layers} layers, hidden {hidden}, {heads} query heads, {kv} "
    "KV heads, context 65,536); the FFN width, layer pattern (three sliding-window layers of 4,096 then one global), "
    "vocabulary and YaRN rope as the published checkpoint's config.json holds them, read from its repackagings "
    "{repack} and, for vocab_size 100278 and the rope block, huggingface.co/tiny-random/olmo-3 (the Olmo 3 config at "
    "tiny widths) and the Olmo 3 GGUF metadata (ollama.com/library/olmo-3: rope yarn factor 8, original context "
    "8192, attn factor 1.2079442, sliding window 4096, rms eps 1e-6).  transformers 5.24 builds it as "
    "Olmo3ForCausalLM (models/olmo3); no family file: the architecture is read from its module tree "
    "(scripts/module_tree_profiles.py).  The publisher rounds the count to {rounded}.")


def _olmo3_config(hidden: int, intermediate: int, layers: int, heads: int, kv: int) -> dict:
    """Olmo3ForCausalLM's published config.json: the sizes differ between 7B and 32B, the rest is shared (three
    sliding-window layers of 4,096 then one full, RoPE as _OLMO3_ROPE, vocabulary 100,278)."""
    return {
        "architectures": ["Olmo3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"] * (layers // 4),
        "max_position_embeddings": 65536, "model_type": "olmo3", "num_attention_heads": heads,
        "num_hidden_layers": layers, "num_key_value_heads": kv, "pad_token_id": 100277, "rms_norm_eps": 1e-06,
        "rope_parameters": _OLMO3_ROPE, "sliding_window": 4096, "tie_word_embeddings": False,
        "vocab_size": 100278}

PROFILES = {
    "olmo-3-7b": {
        "aliases": ["allenai/Olmo-3-1025-7B", "allenai/Olmo-3-7B-Instruct", "allenai/Olmo-3-7B-Think", "olmo3-7b"],
        "source": _OLMO3_SOURCE.format(card="huggingface.co/allenai/Olmo-3-1025-7B", layers=32, hidden=4096, heads=32,
                                       kv=32, repack="huggingface.co/mlx-community/Olmo-3-7B-RLZero-Code-4bit "
                                                     "config.json (intermediate_size 11008, layer_types, "
                                                     "max_position_embeddings 65536, pad 100277, eos 100257)",
                                       rounded="7B"),
        "hf_config": _olmo3_config(hidden=4096, intermediate=11008, layers=32, heads=32, kv=32),
    },
    "olmo-3-32b": {
        "aliases": ["allenai/Olmo-3-1125-32B", "allenai/Olmo-3-32B-Think", "allenai/Olmo-3.1-32B-Think",
                    "olmo3-32b"],
        "source": _OLMO3_SOURCE.format(card="huggingface.co/allenai/Olmo-3-1125-32B", layers=64, hidden=5120, heads=40,
                                       kv=8, repack="huggingface.co/dphnAI/32B-fp8 config.json (intermediate_size "
                                                    "27648, layer_types)", rounded="32B"),
        "hf_config": _olmo3_config(hidden=5120, intermediate=27648, layers=64, heads=40, kv=8),
    },
    "smollm3-3b": {
        "aliases": ["HuggingFaceTB/SmolLM3-3B", "HuggingFaceTB/SmolLM3-3B-Base", "smollm3"],
        "source": (
            "Architecture: transformers 5.24 models/smollm3/configuration_smollm3.py SmolLM3Config, whose defaults "
            "are documented as the HuggingFaceTB/SmolLM3-3B configuration (@auto_docstring(checkpoint="
            "\"HuggingFaceTB/SmolLM3-3B\"): vocab 128256, hidden 2048, FFN 11008, 36 layers, 16 heads, 4 KV heads, "
            "tied embeddings, no RoPE in every fourth layer); the 65,536-token context and the no_rope_layers pattern "
            "as SmolLM3-3B's config.json holds them (read from the fine-tune huggingface.co/koutch/"
            "0.json_train_grpo_v1_dev config.json).  transformers builds it as SmolLM3ForCausalLM; no family file: "
            "the architecture is read from its module tree (scripts/module_tree_profiles.py).  The publisher rounds "
            "the count to 3B."),
        "hf_config": {
            "architectures": ["SmolLM3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 128000, "eos_token_id": 128012, "hidden_act": "silu", "hidden_size": 2048,
            "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 65536,
            "max_window_layers": 28, "mlp_bias": False, "model_type": "smollm3", "no_rope_layer_interval": 4,
            "no_rope_layers": [1, 1, 1, 0] * 9, "num_attention_heads": 16, "num_hidden_layers": 36,
            "num_key_value_heads": 4, "pad_token_id": 128004, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
            "use_sliding_window": False, "vocab_size": 128256},
    },
    "apertus-8b": {
        "aliases": ["swiss-ai/Apertus-8B-2509", "swiss-ai/Apertus-8B-Instruct-2509", "apertus-8b-instruct"],
        "source": (
            "Architecture: swiss-ai/Apertus-8B-Instruct-2509's config.json as its repackaging huggingface.co/"
            "nm-testing/Apertus-8B-Instruct-2509-NVFP4 holds it (quantization aside): hidden 4096, FFN 21504, 32 "
            "layers, 32 heads, 8 KV heads, vocab 131072, 65,536 positions, QK-norm, xIELU, llama3 rope; the same "
            "values in the fine-tune huggingface.co/NewEden-Forge/Science-Expert-R1.  transformers 5.24 builds it as "
            "ApertusForCausalLM (models/apertus); its MLP's xIELU (activations.py XIELUActivation) holds two "
            "parameters per layer (alpha_p, alpha_n), counted as an extra; no family file: the architecture is read "
            "from its module tree (scripts/module_tree_profiles.py).  The publisher rounds the count to 8B."),
        "hf_config": {
            "architectures": ["ApertusForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "xielu", "hidden_dropout": 0.0, "hidden_size": 4096,
            "initializer_range": 0.02, "intermediate_size": 21504, "max_position_embeddings": 65536,
            "mlp_bias": False, "model_type": "apertus", "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "pad_token_id": 3, "post_norm": False, "qk_norm": True, "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 12000000, "tie_word_embeddings": False, "vocab_size": 131072},
    },
}


def profile(name: str) -> dict:
    from memplan.measure.trace.module_tree import read_module_tree
    from memplan.spec.model import count_parameters

    spec = PROFILES[name]
    model = read_module_tree(spec["hf_config"], name)
    total = count_parameters(model).total
    return {"name": name, "aliases": spec["aliases"],
            "source": spec["source"] + f"  Counted: {total:,} parameters, equal to the module tree's.",
            "hf_config": spec["hf_config"], "architecture": model.model_dump(mode="json")}


def main(argv: list[str]) -> int:
    names = argv or sorted(PROFILES)
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        print(f"unknown profiles {unknown}; known: {', '.join(sorted(PROFILES))}", file=sys.stderr)
        return 2
    for name in names:
        path = ROOT / "profiles" / "models" / f"{name}.json"
        path.write_text(json.dumps(profile(name), indent=1) + "\n")
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
