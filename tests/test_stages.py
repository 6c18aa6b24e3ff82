"""One per-stage parameter split (spec/stages.py) for memory and time: they cannot disagree again.

Before, the time model counted per-stage parameters with its own function and missed the vision tower and
projector (llama-4-scout: 871,932,416 parameters apart with no parallelism), BERT's pooler and MLM transform
(592,128), MTP modules and LayerNorm biases."""
from __future__ import annotations

import pytest

from memplan.catalog import models
from memplan.errors import MemplanError
from memplan.memory.layout import local_parameters
from memplan.perf.shards import stage_parameters
from memplan.spec.layout import Layout

LAYOUTS = [dict(), dict(tp=2), dict(pp=2), dict(tp=2, pp=4), dict(tp=4, pp=2, ep=2), dict(pp=3),
           dict(pp=4, first_stage_layers=1), dict(ep=4, etp=1)]


def _layouts(arch):
    for fields in LAYOUTS:
        gpus = fields.get("tp", 1) * fields.get("pp", 1) * fields.get("ep", 1)
        try:
            layout = Layout(gpus=gpus, **fields)
            yield layout
        except (MemplanError, ValueError):
            continue


@pytest.mark.parametrize("name", sorted(models()))
def test_time_and_memory_count_the_same_parameters_per_stage(name):
    spec = models()[name]
    arch = spec.architecture
    if arch is None:
        pytest.skip("a bare parameter count")
    checked = 0
    for layout in _layouts(arch):
        try:
            local = local_parameters(spec, layout)
        except (MemplanError, ValueError):
            continue  # heads or experts do not split this way
        stages = stage_parameters(arch, layout)
        assert max(s.total for s in stages) == local.params, (name, layout)
        assert next(s for s in stages if s.total == local.params).expert == local.expert_params
        if layout.tp == layout.ep == 1:
            # no split inside a layer: the stages hold the whole model, once (plus Megatron's tied copy)
            tied = sum(s.tied_copy for s in stages)
            assert sum(s.total for s in stages) - tied == spec.parameters.total, (name, layout)
        checked += 1
    assert checked >= 2
