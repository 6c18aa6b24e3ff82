"""DeepSeek-V3 / R1 (transformers models/deepseek_v3/modeling_deepseek_v3.py, configuration_deepseek_v3.py).

- DeepseekV3Attention, multi-head latent attention (DeepSeek-V2 sec. 2.1): with q_lora_rank, q_a_proj
  (h -> q_lora_rank, bias=attention_bias), q_a_layernorm RMSNorm(q_lora_rank) and q_b_proj
  (q_lora_rank -> heads * (qk_nope_head_dim + qk_rope_head_dim), no bias); with q_lora_rank null one q_proj
  (no bias).  kv_a_proj_with_mqa (h -> kv_lora_rank + qk_rope_head_dim, bias=attention_bias), kv_a_layernorm
  RMSNorm(kv_lora_rank), kv_b_proj (kv_lora_rank -> heads * (qk_nope_head_dim + v_head_dim), no bias), o_proj
  (heads * v_head_dim -> h, bias=attention_bias).  Every head gets its own key and value from the latent, so
  num_key_value_heads only sets repeat_kv's group count (= heads in the released configs): memplan keeps
  kv_heads = heads.  Rotary on qk_rope_head_dim of the qk_nope + qk_rope head dims.
- DeepseekV3DecoderLayer: DeepseekV3MLP(intermediate_size) for layer_idx < first_k_dense_replace, else
  DeepseekV3MoE: experts = DeepseekV3Experts (fused gate_up_proj (E, 2*moe_intermediate_size, h), down_proj
  (E, h, moe_intermediate_size)) over n_routed_experts, gate = DeepseekV3TopkRouter (a raw float32 (E, h) weight;
  its e_score_correction_bias is an nn.Buffer, not a parameter), shared_experts = DeepseekV3MLP(
  moe_intermediate_size * n_shared_experts).  moe_layer_freq is not read by transformers: refused unless 1.
- MTP: num_nextn_predict_layers (attribute num_mtp_layers) modules are declared, but DeepseekV3ForCausalLM does
  not build them (the checkpoint's model.layers.61 is dropped on load), so they are `MTP(trained=False)`: shown,
  not in the total, which stays transformers' count.  Each is one MoE decoder layer plus enorm, hnorm, eh_proj
  and a norm (DeepSeek-V3 report sec. 2.2; embeddings and output head shared).
- `--ffn` sets the routed experts' width (moe_intermediate_size).
"""
from __future__ import annotations

from memplan.errors import MemplanError
from memplan.families import _decoder as d
from memplan.families.config import ConfigReader
from memplan.families.registry import Family
from memplan.spec.model import MTP, Attention, Head, LayerSpec, Model

NAMES = {"shared": "mlp.shared_experts.", "q_a_norm": "self_attn.q_a_layernorm",
         "kv_a_norm": "self_attn.kv_a_layernorm"}


def mla(c: ConfigReader, hidden: int) -> Attention:
    heads = c.integer("num_attention_heads")
    if "q_lora_rank" not in c.data:
        raise MemplanError(f"{c.path}: missing key '{c.where}q_lora_rank' (MLA's query rank; null for a full "
                           "q_proj), needed for a deepseek_v3 config")
    q_rank = c.integer("q_lora_rank", default=None)
    kv_rank = c.integer("kv_lora_rank")
    rope, nope = c.integer("qk_rope_head_dim"), c.integer("qk_nope_head_dim")
    v = c.integer("v_head_dim")
    bias = c.flag("attention_bias", default=False)
    return d.safe(c, lambda: Attention(heads=heads, kv_heads=heads, head_dim=nope + rope, v_head_dim=v,
                                       q_lora_rank=q_rank, kv_lora_rank=kv_rank, qk_rope_head_dim=rope,
                                       rotary_fraction=rope / (nope + rope), qkv_bias=bias, out_bias=bias,
                                       dropout=c.probability("attention_dropout")))


def read(c: ConfigReader) -> Model:
    hidden = c.integer("hidden_size")
    count = d.n_layers(c)
    if c.integer("moe_layer_freq", default=1) != 1:
        raise c.refuse("moe_layer_freq", "transformers' DeepseekV3DecoderLayer makes every layer from "
                                         "first_k_dense_replace on a MoE layer and ignores it")
    experts, top_k = d.experts_top_k(c, ("n_routed_experts", "num_local_experts"), ("num_experts_per_tok",),
                                     experts_default=256, top_k_default=8)
    groups = c.integer("n_group", default=8)
    if experts % groups:
        raise c.bad("n_group", f"a divisor of n_routed_experts ({experts}) (DeepseekV3TopkRouter groups them)",
                    groups)
    first_dense = c.integer("first_k_dense_replace", default=3, minimum=0)
    attn = mla(c, hidden)
    shared = c.integer("n_shared_experts", default=1, minimum=0) * c.integer("moe_intermediate_size")
    moe = LayerSpec(attention=attn, ffn=d.gated_ffn(c, c.integer("moe_intermediate_size"), experts=experts,
                                                    top_k=top_k, shared_intermediate_size=shared))
    dense = LayerSpec(attention=attn, ffn=d.gated_ffn(c, c.integer("intermediate_size"))) \
        if first_dense else None
    layers = [dense if i < first_dense else moe for i in range(count)]
    depth = c.integer("num_nextn_predict_layers", "num_mtp_layers", default=1, minimum=0)
    return d.decoder(c, family="deepseek_v3", hidden=hidden, layers=layers, vocab=c.integer("vocab_size"),
                     max_positions=c.integer("max_position_embeddings", default=4096),
                     head=Head(tied=c.flag("tie_word_embeddings", default=False)), names=dict(NAMES),
                     mtp=MTP(depth=depth, layer=moe, trained=False) if depth else None)


FAMILY = Family(model_types=("deepseek_v3",), read=read,
                description="DeepSeek-V3: MLA, dense then MoE (routed + shared experts), declared MTP modules",
                peft_targets=None,  # peft 0.21.2 constants.py has no deepseek_v3 entry
                transformers_class="DeepseekV3ForCausalLM", flag_keys={"ffn": ("moe_intermediate_size",)})
