"""Llama 4 (transformers models/llama4/modeling_llama4.py, configuration_llama4.py): the released multimodal
checkpoints (model_type llama4: Llama4ForConditionalGeneration) and, through llama4_text.py, the text model alone.

Text model (Llama4TextConfig under `text_config`):
- Llama4TextAttention: q/k/v/o_proj with bias=attention_bias (default False), head_dim field (default 128),
  KV heads default 8.  use_rope = no_rope_layers[layer_idx] (1: rotary; Llama4TextConfig.__post_init__ defaults
  to NoPE on every no_rope_layer_interval-th layer, default 4).  Rotary layers take chunked attention
  (layer_types "chunked_attention" over attention_chunk_size, default 8192) and, with use_qk_norm (default True),
  Llama4TextL2Norm on q and k: an L2 norm without weights.  NoPE layers attend globally without positions.
- Llama4TextDecoderLayer: `feed_forward` is Llama4TextMoe on the layers in moe_layers (default
  range(interleave_moe_layer_step - 1, num_hidden_layers, interleave_moe_layer_step): every layer of Scout,
  every other of Maverick), else Llama4TextMLP(intermediate_size_mlp).  Llama4TextMoe: router = Llama4Router, an
  nn.Linear(h, num_local_experts, bias=False) (sigmoid of the top-k logits); experts = Llama4TextExperts with
  TRANSPOSED fused weights gate_up_proj (E, h, 2 * intermediate_size) and down_proj (E, intermediate_size, h),
  no bias; shared_expert = Llama4TextMLP(intermediate_size).  Every token passes all experts' rows weighted by
  its router scores (no dispatch), top num_experts_per_tok (default 1) of them non-zero.
- Llama4ForCausalLM ties lm_head only with text_config.tie_word_embeddings (default False).

Vision (model_type llama4 only), counted exactly as `Extra` components:
- Llama4VisionModel: patch_embedding Llama4UnfoldConvolution (a linear num_channels * patch^2 -> hidden, no
  bias), class_embedding (hidden), positional_embedding_vlm ((image_size // patch_size)^2 + 1, hidden),
  layernorm_pre / layernorm_post (LayerNorm with bias), num_hidden_layers Llama4VisionEncoderLayers (q/k/v/o_proj
  with bias over heads * (hidden // heads), fc1/fc2 with bias, two LayerNorms), vision_adapter
  Llama4VisionPixelShuffleMLP: fc1 (intermediate_size -> projector_input_dim) and fc2 (projector_output_dim ->
  projector_output_dim), no bias.  Llama4VisionConfig defaults for absent keys.
- Llama4MultiModalProjector.linear_1: vision_output_dim -> text hidden, no bias.
"""
from __future__ import annotations

from memplan.families import _decoder as d
from memplan.families.config import MAX_LAYERS, ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import Extra, Head, LayerSpec, Model

NAMES = {"mlp": "feed_forward.", "expert": "feed_forward.experts.", "shared": "feed_forward.shared_expert.",
         "router": "feed_forward.router"}
NOT_RUN = "not run on text-only batches (its weights and optimizer states still count)"


def rope_layers(c: ConfigReader, count: int) -> list[bool]:
    """no_rope_layers: 1 = the layer uses rotary positions, 0 = NoPE (Llama4TextAttention.use_rope)."""
    given = c.int_list("no_rope_layers", default=None)
    if not given:  # Llama4TextConfig.__post_init__: `self.no_rope_layers if self.no_rope_layers else default`
        interval = c.integer("no_rope_layer_interval", default=4)
        return [(i + 1) % interval != 0 for i in range(count)]
    if len(given) != count or any(v not in (0, 1) for v in given):
        raise c.bad("no_rope_layers", f"a list of {count} entries (num_hidden_layers), each 0 (NoPE) or 1 (rotary)",
                    given)
    return [bool(v) for v in given]


def moe_layers(c: ConfigReader, count: int) -> set[int]:
    given = c.int_list("moe_layers", default=None)
    if given is None:
        step = c.integer("interleave_moe_layer_step", default=1)
        return set(range(step - 1, count, step))
    return {i for i in given if 0 <= i < count}  # Llama4TextDecoderLayer: `layer_idx in config.moe_layers`


def text_model(c: ConfigReader, *, family: str, extras: list[Extra] | None = None) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    rope = rope_layers(c, count)
    sparse = moe_layers(c, count)
    chunk = c.integer("attention_chunk_size", default=8192) if c.data.get("attention_chunk_size", 0) is not None \
        else None
    default_types = ["chunked_attention" if r and chunk is not None else "full_attention" for r in rope]
    wins = d.windows(c, count, default_types, chunk_default=8192)
    qk_norm = c.flag("use_qk_norm", default=True)
    bias = c.flag("attention_bias", default=False)
    experts, top_k = d.experts_top_k(c, ("num_local_experts",), ("num_experts_per_tok",), experts_default=16,
                                     top_k_default=1)
    moe = d.gated_ffn(c, c.integer("intermediate_size"), experts=experts, top_k=top_k,
                      shared_intermediate_size=c.integer("intermediate_size"), router_is_module=True,
                      experts_transposed=True, dispatch="all") if sparse else None
    dense = d.gated_ffn(c, c.integer("intermediate_size_mlp")) if len(sparse) < count else None
    layers = [LayerSpec(attention=d.llama_attention(c, hidden, qkv_bias=bias, out_bias=bias, window=w,
                                                    head_dim_default=128, kv_default=8,
                                                    position="rotary" if r else "none",
                                                    qk_norm="l2" if qk_norm and r else "none"),
                        ffn=moe if i in sparse else dense) for i, (w, r) in enumerate(zip(wins, rope))]
    return d.decoder(c, family=family, hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=4096 * 32),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=dict(NAMES),
                     extras=extras or [])


def vision_params(v: ConfigReader, text_hidden: int) -> tuple[int, int]:
    """(Llama4VisionModel, Llama4MultiModalProjector) parameter counts."""
    h = v.integer("hidden_size", default=768)
    n = v.integer("num_hidden_layers", default=34, maximum=MAX_LAYERS)
    heads = v.integer("num_attention_heads", default=16)
    inter = v.integer("intermediate_size", default=5632)
    channels = v.integer("num_channels", default=3)
    image, patch = v.integer("image_size", default=448), v.integer("patch_size", default=14)
    proj_in, proj_out = v.integer("projector_input_dim", default=4096), v.integer("projector_output_dim", default=4096)
    qd = heads * (h // heads)
    norm = 2 * h  # nn.LayerNorm weight and bias
    layer = 3 * (h * qd + qd) + (qd * h + h) + (h * inter + inter) + (inter * h + h) + 2 * norm
    tower = channels * patch * patch * h + h + ((image // patch) ** 2 + 1) * h + 2 * norm + n * layer \
        + inter * proj_in + proj_out * proj_out
    return tower, v.integer("vision_output_dim", default=7680) * text_hidden


def read(c: ConfigReader) -> Model:
    text = c.sub("text_config")
    if text is c:
        raise c.missing("text_config")
    v = c.sub("vision_config") if c.has("vision_config") else ConfigReader({}, c.path, "llama4_vision_model",
                                                                          "vision_config.")
    tower, projector = vision_params(v, text.integer("hidden_size"))
    extras = [Extra(name="vision tower", params=tower,
                    note="Llama4ForConditionalGeneration.vision_model (Llama4VisionModel); " + NOT_RUN),
              Extra(name="multimodal projector", params=projector,
                    note="Llama4MultiModalProjector.linear_1; " + NOT_RUN)]
    return text_model(text, family="llama4", extras=extras)


FAMILY = Family(model_types=("llama4",), read=read,
                description="Llama 4 (multimodal): chunked rotary + NoPE global layers, MoE with shared expert",
                peft_targets=("q_proj", "v_proj"), transformers_class="Llama4ForConditionalGeneration",
                text_config="text_config")
