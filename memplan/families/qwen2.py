"""Qwen2 / Qwen2.5 (transformers models/qwen2/modeling_qwen2.py): q/k/v_proj with bias, o_proj and the MLP
without; configuration_qwen2.py: sliding windows only with use_sliding_window, then for layers
i >= max_window_layers (transformers 5 writes that out as `layer_types`); Qwen2Config defaults 32 KV heads."""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Head, LayerSpec, Model


def default_layer_types(c: ConfigReader, count: int) -> list[str]:
    sliding = c.flag("use_sliding_window", default=False)
    first = c.integer("max_window_layers", default=28, minimum=0)
    return ["sliding_attention" if sliding and i >= first else "full_attention" for i in range(count)]


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    ffn = d.gated_ffn(c, c.integer("intermediate_size"))
    wins = d.windows(c, count, default_layer_types(c, count))
    if not c.flag("use_sliding_window", default=False):
        # __post_init__: sliding_window = None unless use_sliding_window, and a "sliding_attention" layer with no
        # window attends globally (Qwen2Attention.sliding_window = config.sliding_window for those layers)
        wins = [("global", None)] * count
    layers = [LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=True, out_bias=False, window=w,
                                                  kv_default=32), ffn=ffn)
              for w in wins]
    return d.decoder(c, family="qwen2", hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=32768),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)))


FAMILY = Family(model_types=("qwen2",), read=read, description="Qwen2/2.5: Llama layers with q/k/v biases",
                peft_targets=("q_proj", "v_proj"), transformers_class="Qwen2ForCausalLM")
