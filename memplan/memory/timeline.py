"""The training step as phases, and its peak.

v1 (model states only): the peak is the model states plus ZeRO-3's gathered parameters. Activations, logits
and the optimizer's temporaries are added by the activation model (issue 3).
"""
from __future__ import annotations

from pydantic import BaseModel

from memplan.memory.states import ModelStates
from memplan.results.memory import Component, Phase
from memplan.spec.setup import TrainingSetup


class Timeline(BaseModel):
    phases: list[Phase]
    components: list[Component] = []
    notes: list[str] = []


def step_timeline(setup: TrainingSetup, states: ModelStates) -> Timeline:
    held = {c: states.gpu_bytes(c) for c in ("weights", "gradients", "master_weights", "optimizer_states",
                                             "gathered_parameters")}
    phase = Phase(name="optimizer_step", bytes=held, total=sum(held.values()))
    return Timeline(phases=[phase])
