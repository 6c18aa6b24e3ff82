"""DeepSpeed ZeRO (`--engine deepspeed`): its own published estimators, reproduced by memory/states.py
`_deepspeed_states` (which still holds the arithmetic; this module holds the constants and sources)."""
from __future__ import annotations

from memplan.engines.base import EngineConventions

# deepspeed/runtime/zero/stage_1_and_2.py and stage3.py: `additional_buffer_factor=1.5` for CPU memory.
CPU_BUFFER_FACTOR = 1.5

# what the search may try under this engine: ZeRO stages (memplan's --zero) and optimizer offload
ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_OPTIMIZER = True

CONVENTIONS = EngineConventions(
    name="deepspeed",
    convention="deepspeed (reproduces deepspeed.runtime.zero estimate_zero2/zero3_model_states_mem_needs, "
               "incl. the fp32 gradient partition and the 1.5x CPU buffer factor)",
    sources=("deepspeed 0.19.8 deepspeed/runtime/zero/stage_1_and_2.py estimate_zero2_model_states_mem_needs",
             "deepspeed 0.19.8 deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs"))


def comm_buffers(grads_bytes: int, params: int, zero: int, table: dict) -> list[tuple[str, int, str]]:
    """ZeRO's reduce bucket (reduce_bucket_size elements of 16-bit gradients); (name, bytes, note)."""
    n = min(table["deepspeed_reduce_bucket_elements"], params)
    return [("ZeRO reduce bucket", 2 * n, table["deepspeed_source"])]
