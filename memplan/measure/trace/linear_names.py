"""The names transformers' modeling files give a layer's linears, by role (the last part of the module path):
read by the module-tree reader (module_tree.py) and the MoE block reader (moe_tree.py) alike."""
from __future__ import annotations

Q = ("q_proj", "query", "wq", "q")
K = ("k_proj", "key", "wk", "k")
V = ("v_proj", "value", "wv", "v")
QKV = ("qkv_proj", "query_key_value", "Wqkv", "c_attn", "qkv", "W_pack")
O = ("o_proj", "out_proj", "dense", "wo", "c_proj", "o")
GATE = ("gate_proj", "w1")
UP = ("up_proj", "w3", "fc1", "c_fc", "dense_h_to_4h", "fc_in")
DOWN = ("down_proj", "w2", "fc2", "c_proj", "dense_4h_to_h", "fc_out", "output_linear")
GATE_UP = ("gate_up_proj", "input_linear")  # GraniteMoeHybridMLP.input_linear: h -> 2f, chunked into gate and up


def last(name: str) -> str:
    """'mlp.experts.down_proj' -> 'down_proj'."""
    return name.rsplit(".", 1)[-1]
