"""Gemma 3 (transformers models/gemma3/modeling_gemma3.py, configuration_gemma3.py), the multimodal checkpoints
(model_type gemma3: Gemma3ForConditionalGeneration) and, through gemma3_text.py, the text-only ones.

Text model (Gemma3TextConfig under `text_config`):
- Gemma3DecoderLayer: Gemma 2's four sandwich RMSNorms; Gemma3Attention adds q_norm / k_norm =
  Gemma3RMSNorm(config.head_dim) per head, has no soft-capping by default (attn_logit_softcapping and
  final_logit_softcapping default None) and keeps q/k/v/o_proj with bias=attention_bias (default False).
- layer_types: Gemma3TextConfig.__post_init__ defaults to sliding unless (i + 1) % sliding_window_pattern == 0
  (the BC key, default 6): five sliding-window layers (sliding_window, default 4096; 1024 in the released 27B)
  then one global. use_bidirectional_attention: not causal, and the window is stored as sliding_window // 2 + 1.
- Defaults of the absent keys: head_dim 256, KV heads 4, vocab_size 262208 (the published 27B file has no
  text_config.vocab_size), max_position_embeddings 131072, tie_word_embeddings True.

Vision (model_type gemma3 only), counted exactly as `Extra` components (not walked as layers):
- Gemma3Model.vision_tower = AutoModel.from_config(vision_config): a SiglipVisionModel
  (models/siglip/modeling_siglip.py): patch_embedding Conv2d(num_channels -> hidden, kernel = stride = patch,
  with bias), position_embedding Embedding((image_size // patch_size)^2, hidden), num_hidden_layers encoder layers
  (layer_norm1/2 LayerNorms with bias; q/k/v/out_proj hidden x hidden with bias; fc1/fc2 with bias),
  post_layernorm, and with vision_use_head (SiglipVisionConfig default True; False in Gemma 3) the
  SiglipMultiheadAttentionPoolingHead: probe (1, 1, hidden), nn.MultiheadAttention (in_proj 3h x h + 3h, out_proj
  h x h + h), a LayerNorm and a SiglipMLP.
- Gemma3MultiModalProjector: mm_input_projection_weight (vision hidden x text hidden) and mm_soft_emb_norm
  Gemma3RMSNorm(vision hidden).
- Gemma3ForConditionalGeneration ties lm_head to language_model.embed_tokens when the top-level
  tie_word_embeddings (Gemma3Config default True) says so (PreTrainedModel.get_expanded_tied_weights_keys reads the
  model's own config).
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.gemma2 import alternating, layers
from memplan.families.qwen3 import QK_NORM_NAMES
from memplan.families.registry import Family
from memplan.spec.model import Embeddings, Extra, Head, Model

NOT_RUN = "not run on text-only batches (its weights and optimizer states still count)"


def text_model(c: ConfigReader, *, family: str, tied: bool, extras: list[Extra] | None = None) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    pattern = c.integer("sliding_window_pattern", default=6)
    bidirectional = c.flag("use_bidirectional_attention", default=False)
    window = c.integer("sliding_window", default=4096) if c.data.get("sliding_window", 0) is not None else None
    data = dict(c.data)
    if bidirectional and window is not None:
        data["sliding_window"] = window // 2 + 1  # Gemma3TextConfig.__post_init__ ("fa exclusive bounds")
    text = ConfigReader(data, c.path, c.model_type, c.where)
    specs = layers(text, hidden, default_types=alternating(count, pattern), kv_default=4, attn_softcap=None,
                   window_default=4096, qk_norm="head")
    return d.decoder(c, family=family, hidden=hidden, layers=specs, vocab=c.integer("vocab_size", default=262_208),
                     max_positions=c.integer("max_position_embeddings", default=131_072),
                     embeddings=Embeddings(scale=True),
                     head=Head(tied=tied, softcap=d.optional_number(c, "final_logit_softcapping", None)),
                     names=dict(QK_NORM_NAMES), extras=extras or [])


def siglip_vision_params(v: ConfigReader) -> int:
    """SiglipVisionModel's parameter count from its config (SiglipVisionConfig defaults for absent keys)."""
    h = v.integer("hidden_size", default=768)
    inter = v.integer("intermediate_size", default=3072)
    n = v.integer("num_hidden_layers", default=12, maximum=1 << 14)
    heads = v.integer("num_attention_heads", default=12)
    if h % heads:
        raise v.bad("num_attention_heads", f"a divisor of hidden_size ({h}) (SiglipAttention)", heads)
    channels = v.integer("num_channels", default=3)
    image, patch = v.integer("image_size", default=224), v.integer("patch_size", default=16)
    layer_norm = 2 * h
    mlp = h * inter + inter + inter * h + h  # fc1, fc2 with biases
    layer = 2 * layer_norm + 4 * (h * h + h) + mlp
    params = channels * patch * patch * h + h + (image // patch) ** 2 * h + n * layer + layer_norm
    if v.flag("vision_use_head", default=True):
        params += h + (3 * h * h + 3 * h) + (h * h + h) + layer_norm + mlp
    return params


def vision_extras(c: ConfigReader, text_hidden: int) -> list[Extra]:
    v = c.sub("vision_config") if c.has("vision_config") else ConfigReader({}, c.path, "siglip_vision_model",
                                                                          "vision_config.")
    vision_type = v.text("model_type", default="siglip_vision_model")
    if vision_type != "siglip_vision_model":
        raise v.refuse("model_type", f"a {vision_type!r} vision tower (Gemma 3 uses siglip_vision_model)")
    h = v.integer("hidden_size", default=768)
    return [Extra(name="vision tower (SigLIP)", params=siglip_vision_params(v),
                  note="Gemma3Model.vision_tower, a SiglipVisionModel; " + NOT_RUN),
            Extra(name="multimodal projector", params=h * text_hidden + h,
                  note="Gemma3MultiModalProjector: mm_input_projection_weight and mm_soft_emb_norm; " + NOT_RUN)]


def read(c: ConfigReader) -> Model:
    text = c.sub("text_config")
    if text is c:
        raise c.missing("text_config")
    extras = vision_extras(c, text.integer("hidden_size"))
    return text_model(text, family="gemma3", tied=c.flag("tie_word_embeddings", default=True), extras=extras)


FAMILY = Family(model_types=("gemma3",), read=read,
                description="Gemma 3 (multimodal): 5 sliding : 1 global, q/k norm, sandwich norms; SigLIP tower",
                peft_targets=None,  # peft 0.21.2 constants.py lists gemma3_text, not gemma3
                transformers_class="Gemma3ForConditionalGeneration", text_config="text_config")
