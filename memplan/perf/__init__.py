"""Time: FLOPs per token (flops.py), communication (comm.py), step time and cost (time.py), strategy search
(plan.py).  Pure arithmetic on spec objects; no torch."""
