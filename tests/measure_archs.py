"""Tiny architectures, one per Hugging Face family, for the measurement tests (fast on a CPU)."""
from __future__ import annotations

from memplan.spec.model import Architecture, ModelSpec
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import Workload, get_optimizer, get_recipe

V = 512
_DEC = dict(n_layers=2, hidden_size=64, n_heads=4, vocab_size=V, max_positions=64)
_GELU = dict(mlp="gelu", norm="layernorm", norm_bias=True, ffn_hidden_size=256)

ARCHS = {
    "llama": Architecture(family="llama", n_kv_heads=2, ffn_hidden_size=160, **_DEC),
    "mistral": Architecture(family="mistral", n_kv_heads=2, ffn_hidden_size=160, sliding_window=32, **_DEC),
    "qwen2": Architecture(family="qwen2", n_kv_heads=2, ffn_hidden_size=160, qkv_bias=True, tied_embeddings=True,
                          **_DEC),
    "mixtral": Architecture(family="mixtral", n_kv_heads=2, ffn_hidden_size=96, n_experts=4, experts_per_token=2,
                            **_DEC),
    "gpt2": Architecture(family="gpt2", activation="gelu_new", position="learned", tied_embeddings=True,
                         fused_qkv=True, qkv_bias=True, attn_out_bias=True, mlp_bias=True, **_GELU, **_DEC),
    "gpt_neox": Architecture(family="gpt_neox", activation="gelu", fused_qkv=True, qkv_bias=True, attn_out_bias=True,
                             mlp_bias=True, parallel_residual=True, rotary_fraction=0.25, **_GELU, **_DEC),
    "falcon": Architecture(family="falcon", n_kv_heads=1, activation="gelu", norms_per_layer=1, fused_qkv=True,
                           parallel_residual=True, tied_embeddings=True, **_GELU, **_DEC),
    "bert": Architecture(family="bert", activation="gelu", position="learned", qkv_bias=True, attn_out_bias=True,
                         mlp_bias=True, lm_head=False, token_type_vocab=2, embedding_norm=True, pooler=True,
                         causal=False, final_norm=False, **_GELU, **_DEC),
}


def setup(family: str = "llama", precision: str = "fp32", optimizer: str = "adamw", micro_batch: int = 2,
          seq: int = 32, **workload) -> TrainingSetup:
    return TrainingSetup(model=ModelSpec(name=f"tiny-{family}", architecture=ARCHS[family]),
                         recipe=get_recipe(precision), optimizer=get_optimizer(optimizer),
                         workload=Workload(micro_batch=micro_batch, seq=seq, **workload))
