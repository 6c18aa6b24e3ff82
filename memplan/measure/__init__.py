"""Measurement: the only part of memplan that imports torch (and pynvml).

Entry point: `memplan.measure.runner.measure_training_step(setup, device, model_source, ...) -> MeasuredStep`.
"""
