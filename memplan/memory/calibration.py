"""Calibration with a measured run: `memplan estimate --calibration RUN.json`.

RUN.json is what `memplan profile --out` writes (memplan.results.profile.ProfileRecord: {"measured": MeasuredStep,
...}) or a bare MeasuredStep.  The analytic model is re-run for the measured run's own setup; the ratio of the
measured saved activations (`activations_at_backward_start`, tensor-level) to the estimated ones is the one
number carried over, and it scales the activation bytes of the setup being estimated.  It corrects what the
implementation profile cannot know about the user's code (a custom layer, another kernel); it is only as good as
the similarity of the two setups, which the note says.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from memplan.errors import MemplanError
from memplan.field_errors import field_error_line
from memplan.results.memory import Phase
from memplan.spec.setup import TrainingSetup

# a ratio outside this range means the record describes something else than the analytic model (wrong setup,
# a leak in the measured loop): refuse rather than scale by it
PLAUSIBLE = (0.25, 4.0)


class Calibration(BaseModel):
    source: str
    model: str
    device: str
    implementation: str
    measured_activations: int
    estimated_activations: int

    @property
    def factor(self) -> float:
        return self.measured_activations / self.estimated_activations

    def apply(self, setup: TrainingSetup, phases: list[Phase]) -> tuple[list[Phase], str]:
        f = self.factor
        out = []
        for ph in phases:
            b = dict(ph.bytes)
            if "activations" in b:
                b["activations"] = int(round(b["activations"] * f))
            out.append(Phase(name=ph.name, bytes=b, total=sum(b.values())))
        same = setup.model.name == self.model and setup.workload.implementation == self.implementation
        return out, (f"calibrated with {self.source}: activations x {f:.4f} (measured {self.measured_activations:,} "
                     f"vs estimated {self.estimated_activations:,} B for {self.model} on {self.device})"
                     + ("" if same else "; the run is of another model/implementation: a rough transfer"))


def calibration_from_measured(measured, source: str) -> Calibration:
    """The calibration a MeasuredStep (or its dict) gives for `source` (the file name shown in notes)."""
    from memplan.memory.estimate import estimate_memory
    from memplan.results.profile import MeasuredStep

    if isinstance(measured, MeasuredStep):
        step = measured
    else:
        try:
            step = MeasuredStep.model_validate(measured)
        except ValidationError as exc:
            raise MemplanError(field_error_line(exc, f"{source}: not a memplan measurement")) from None
    if step.setup is None or step.setup.model.architecture is None:
        raise MemplanError(f"{source}: the record has no setup with an architecture; re-run `memplan profile --out`")
    if step.oom:
        raise MemplanError(f"{source}: the measured step ran out of memory; calibrate with a run that completed")
    kernels = "cuda" if step.device == "cuda" else "cpu"
    est = estimate_memory(step.setup, kernels=kernels)
    cal = Calibration(source=source, model=step.model, device=step.device,
                      implementation=step.setup.workload.implementation,
                      measured_activations=step.activations_at_backward_start,
                      estimated_activations=est.per_gpu.saved_activations)
    if not cal.estimated_activations or not PLAUSIBLE[0] <= cal.factor <= PLAUSIBLE[1]:
        raise MemplanError(f"{source}: measured activations {cal.measured_activations:,} B vs estimated "
                           f"{cal.estimated_activations:,} B is not a plausible correction; check the run's setup")
    return cal


def load_calibration(path: str | Path) -> Calibration:
    """A `memplan profile --out` record (or a bare MeasuredStep) file, validated field by field."""
    from memplan.results.records import load_measured_step

    step = load_measured_step(path, "--calibration")
    return calibration_from_measured(step, Path(path).name)
