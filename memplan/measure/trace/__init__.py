"""Activation rows traced from a model's own code (`memplan trace`): config -> implementation profile.

probe.py (the traced configs: one layer period at small distinct sizes), record.py (one traced step, storage by
storage), emulate.py (the CUDA kernels, emulated on the CPU), step.py (a variant: precision mode, kernels,
attention, recompute), shapes.py (dimensions back to size names), analyze.py (the regions and transient moments
the estimate's timeline adds up), merge.py (all variants -> rows), profile.py (the whole trace).
"""

# family -> the built-in model profile its shipped traced profile is traced from (scripts/trace_profiles.py); the
# rows are expressions of the size names, valid for every config of the family: the sizes of this one only decide
# which transient moments are kept
REPRESENTATIVE = {
    "bert": "bert-base",
    "deepseek_v3": "deepseek-v3",
    "falcon": "falcon-7b",
    "gemma": "gemma-7b",
    "gemma2": "gemma-2-9b",
    "gemma3": "gemma-3-27b",
    "gpt2": "gpt2",
    "gpt_neox": "gpt-neox-20b",
    "gpt_oss": "gpt-oss-20b",
    "llama": "llama-3.1-8b",
    "llama4": "llama-4-scout",
    "mistral": "mistral-7b",
    "mixtral": "mixtral-8x7b",
    "olmo2": "olmo-2-7b",
    "olmo3": "olmo-3-7b",  # no family file: read from the module tree (scripts/module_tree_profiles.py)
    "smollm3": "smollm3-3b",  # idem
    "apertus": "apertus-8b",  # idem
    "phi3": "phi-3-mini",
    "qwen2": "qwen2.5-7b",
    "qwen2_moe": "qwen1.5-moe-a2.7b",
    "qwen3": "qwen3-8b",
    "qwen3_moe": "qwen3-30b-a3b",
}

# families whose sequence-classification (reward/value model) rows ship, hf-<family>-seq-cls.json, traced from the
# representative with transformers' score head (scripts/trace_profiles.py --seq-cls); not gemma3 (its multimodal
# config's class wraps the vision tower), deepseek_v3 and gpt_oss (not traced yet), llama4 and apertus
# (transformers 5.24 has no sequence-classification class for them)
SEQ_CLS = ("falcon", "gemma", "gemma2", "gpt2", "gpt_neox", "llama", "mistral", "mixtral", "olmo2", "olmo3", "phi3",
           "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "smollm3")
