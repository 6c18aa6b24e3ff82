"""Pipelines as they run: 1F1B and interleaved 1F1B over stages of unequal work.

Narayanan et al. 2021 (sec. 2.2): with p stages and m micro-batches the 1F1B schedule keeps each device busy for
its m forward+backward passes and idles for p-1 chunk-steps while the pipeline fills and drains; interleaving v
model chunks per device divides that bubble by v (each chunk-step is 1/v of a device's work), at the price of v
times as many point-to-point sends.  Stages need not be equal: the first holds the embeddings, the last the LM
head and the loss, and uneven splits (`Layout.first_stage_layers` / `last_stage_layers`, Megatron's
--decoder-first/last-pipeline-num-layers) move layers off them.  In steady state the busiest device sets the pace
(every micro-batch waits for it); the fill and drain cost p-1 chunk-steps of the mean device (+ a send each way).

    step = first(busiest) + (m-1) x work(busiest) + m x 2v x send  +  (p-1) x (mean work / v + 2 x send)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    seconds: float          # the pipeline's part of the step (all micro-batches, fill and drain)
    steady_seconds: float
    bubble_seconds: float
    p2p_seconds: float       # sends on the critical path (steady state and fill/drain)
    busiest: int


def one_f_one_b(work: list[float], work_first: list[float], micro_batches: int, virtual_stages: int,
                send_seconds: float) -> Schedule:
    """`work[d]`: forward + backward of one micro-batch on device d (all its chunks); `work_first[d]` the same for
    the first micro-batch (no gradient accumulation yet); `send_seconds`: one activation send between stages."""
    p, m, v = len(work), micro_batches, virtual_stages
    busiest = work.index(max(work))
    if p == 1:
        steady = work_first[0] + (m - 1) * work[0]
        return Schedule(steady, steady, 0.0, 0.0, 0)
    steady = work_first[busiest] + (m - 1) * work[busiest]
    bubble = (p - 1) * sum(work) / p / v
    sends = m * 2 * v * send_seconds + (p - 1) * 2 * send_seconds
    return Schedule(steady + bubble + sends, steady, bubble, sends, busiest)
