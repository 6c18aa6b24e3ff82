"""Pools of values for flags: mostly sensible ones (so that the estimate itself runs and its invariants are
checked), and the odd ones a user or a script can pass."""
from __future__ import annotations

import random

# whole numbers a flag must refuse or read: zero, negatives, floats, overflow, non-numbers, unicode digits
ODD_INTS = ["0", "-1", "-0", "1.5", "2.0", "1e3", "1e400", "-1e400", "nan", "inf", "-inf", "abc", "", " ", "0x10",
            "1_0", "\u0663", "9" * 30, str(2**63), "1e30", "+4", " 8 ", "1,000", "4.", "1e-3", "NaN", "Infinity"]
# real numbers: the same and a few of their own
ODD_FLOATS = ["0", "-1", "-0.0", "nan", "-nan", "inf", "-inf", "1e400", "1e-400", "abc", "", "1e308", "0.0",
              "1,5", "5%", "1/2", "\u0663"]
# byte sizes (--cpu-memory): units, overflow, negatives
ODD_SIZES = ["0", "-1GB", "1e400GB", "nanGB", "GB", "1.5", "1 TB", "1TB", "2TiB", "512MiB", "1XB", "inf", "1e30",
             "", "1e18TB", "0.1B"]

MODEL_PROFILES = ["gpt2", "gpt2-xl", "bert-base", "llama-2-7b", "llama-2-70b", "llama-3-8b", "llama-3.1-405b",
                  "mistral-7b", "mixtral-8x7b", "falcon-7b", "gemma-7b", "gemma-2-9b", "gemma-3-27b",
                  "deepseek-v3", "gpt-oss-20b", "llama-4-scout", "qwen3-0.6b", "qwen3-30b-a3b",
                  "qwen1.5-moe-a2.7b", "phi-3-mini", "olmo-2-7b", "gpt-neox-20b", "pythia-160m", "gpt3-175b"]
SMALL_PROFILES = ["gpt2", "bert-base", "pythia-160m", "qwen3-0.6b"]
HUB_IDS = ["meta-llama/Llama-2-7b-hf", "openai-community/gpt2", "Qwen/Qwen3-8B", "unknown-org/unknown-model",
           "a/b/c", "meta-llama/", "/", "meta-llama/Llama-2-7b-hf@main", "hf://meta-llama/Llama-2-7b-hf"]
COUNTS = ["7B", "124M", "1.3e9", "70b", "1T", "0", "-7B", "1e400", "nan", "inf", "7Q", "1e30", "0.5", "1",
          "7 B", "7BB", "1e15", "1e16", "5K"]
ODD_NAMES = ["", " ", "\u200b", "\u03bb", "\U0001f999", "x" * 300, ".", "-", "..", "~", "NUL\u0000", "llama\n2",
             "gpt2 ", " GPT2", "GPT2"]
GPUS = ["a100-80gb", "a100-40gb", "h100-sxm", "h200", "b200", "v100-16gb", "t4", "l4", "rtx-4090", "mi300x",
        "a10", "A100", "NVIDIA A100-SXM4-80GB"]
INTERCONNECTS = ["nvlink4", "nvlink3", "pcie4", "infiniband-ndr", "roce-400g", "ethernet-25g"]
RECIPES = ["fp32", "amp-bf16", "amp-fp16", "bf16-mixed", "fp16-mixed", "bf16", "fp8-mixed"]
OPTIMIZERS = ["adamw", "adam", "sgd", "sgd-momentum", "lion", "adafactor", "adamw-8bit"]
DTYPES = ["fp32", "bf16", "fp16", "fp8", "none", "int8", "float32", "bfloat16"]


def near_miss(rng: random.Random, name: str) -> str:
    """A typo of `name`: a character dropped, doubled, swapped or replaced, the case changed, a look-alike."""
    if not name:
        return "x"
    i = rng.randrange(len(name))
    kind = rng.randrange(7)
    if kind == 0:
        return name[:i] + name[i + 1:] or "x"
    if kind == 1:
        return name[:i] + name[i] + name[i:]
    if kind == 2 and len(name) > 1:
        j = min(i + 1, len(name) - 1)
        chars = list(name)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if kind == 3:
        return name.upper()
    if kind == 4:
        return name.replace("-", "\u2010")  # a Unicode hyphen
    if kind == 5:
        return name + "x"
    return name[:i] + rng.choice("aeiou01_") + name[i + 1:]


def pick(rng: random.Random, good: list, odd: list, p_odd: float = 0.25):
    """A value from `good`, or with probability `p_odd` one from `odd`."""
    return rng.choice(odd) if odd and rng.random() < p_odd else rng.choice(good)


def model_name(rng: random.Random, profiles: list[str] = MODEL_PROFILES) -> str:
    r = rng.random()
    if r < 0.70:
        return rng.choice(profiles)
    if r < 0.80:
        return near_miss(rng, rng.choice(profiles))
    if r < 0.87:
        return rng.choice(HUB_IDS)
    if r < 0.95:
        return rng.choice(COUNTS)
    return rng.choice(ODD_NAMES)


def gpu_name(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.85:
        return rng.choice(GPUS)
    if r < 0.95:
        return near_miss(rng, rng.choice(GPUS))
    return rng.choice(ODD_NAMES)
