"""What full training and LoRA both count as model states: the ModelStates answer (components per location)
and the optimizer's state bytes for the parameters on a GPU.  Its own module, so states.py (which hands a LoRA
setup to lora.py) and lora.py (which counts the adapters' states) share them without importing each other."""
from __future__ import annotations

from pydantic import BaseModel

from memplan.memory.layout import LocalParameters
from memplan.results.memory import Component, HostMemory
from memplan.spec.training import OptimizerSpec, Recipe


class ModelStates(BaseModel):
    components: list[Component]
    local: LocalParameters
    convention: str
    notes: list[str] = []

    def gpu_bytes(self, category: str) -> int:
        return sum(c.bytes for c in self.components if c.location == "gpu" and c.category == category)

    def host(self, location: str) -> HostMemory:
        h = HostMemory()
        for c in self.components:
            if c.location == location and c.category in HostMemory.model_fields:
                setattr(h, c.category, getattr(h, c.category) + c.bytes)
        h.total = sum(c.bytes for c in self.components if c.location == location)
        return h


def optimizer_state_bytes(opt: OptimizerSpec, recipe: Recipe, local: LocalParameters) -> tuple[float, str, str]:
    """Bytes of optimizer state for the parameters on this GPU (before ZeRO), its dtype label and a note."""
    n = local.params
    state_dtype_bytes = opt.state_bytes if opt.state_bytes is not None else recipe.optimizer_states.bytes
    label = "uint8" if opt.state_bytes == 1 else recipe.optimizer_states.value
    if opt.factored:
        # Adafactor (Shazeer & Stern 2018, Alg. 4; transformers.Adafactor with beta1=None): a row and a column
        # accumulator per matrix, a full accumulator per vector; (+ beta1 momentum when configured: not here).
        if local.tensor_numels:
            elems = sum(k * ((r + c) if c > 1 else r) for r, c, k in local.tensor_numels)
            return elems * state_dtype_bytes, label, "factored second moment: rows + cols per matrix"
        elems = 2 * n / 4096
        return elems * state_dtype_bytes, label, "approximate: no architecture, matrices assumed 4096 wide"
    if opt.block_size:
        # bitsandbytes Optimizer2State: uint8 states + one fp32 absmax per block; small tensors stay fp32.
        small = sum(r * c * k for r, c, k in local.tensor_numels if r * c < opt.min_quantized_numel)
        big = n - small
        per_state = big * (state_dtype_bytes + opt.block_scale_bytes / opt.block_size) + small * 4
        note = f"{opt.states} x (1 B + {opt.block_scale_bytes} B per {opt.block_size}-element block)"
        if small:
            note += f"; {small:,} params in tensors < {opt.min_quantized_numel} elements keep fp32 states"
        return opt.states * per_state, label, note
    return opt.states * n * state_dtype_bytes, label, f"{opt.states} state(s) x {state_dtype_bytes:g} B"
