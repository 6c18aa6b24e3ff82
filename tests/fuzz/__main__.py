"""`python -m tests.fuzz --cases 5000 [--seed S] [--only estimate]`: run the fuzzer without pytest and group the
failures by command and kind (the long run of README.md's Development section; tests/test_fuzz.py is the CI run)."""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def main() -> int:
    from tests.fuzz.cases import make_case
    from tests.fuzz.invariants import problems
    from tests.fuzz.runner import run_case

    ap = argparse.ArgumentParser(prog="python -m tests.fuzz")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None, help="default: MEMPLAN_FUZZ_SEED or 13")
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--only", default=None, help="run only the cases of this command")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failing case in full")
    ap.add_argument("--errors", action="store_true", help="also count the error messages (exit 2) per command")
    ns = ap.parse_args()
    seed = ns.seed if ns.seed is not None else int(os.environ.get("MEMPLAN_FUZZ_SEED", "13"))
    groups: dict[tuple, list] = collections.defaultdict(list)
    counts = collections.Counter()
    seconds = collections.Counter()
    slowest: list[tuple[float, str]] = []
    messages = collections.Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memplan-fuzz-") as tmp:
        for i in range(ns.start, ns.start + ns.cases):
            case = make_case(seed, i)
            if ns.only and case.command != ns.only:
                continue
            run = run_case(case, Path(tmp))
            counts[(case.command, run.outcome.code)] += 1
            seconds[case.command] += run.outcome.seconds
            slowest = sorted(slowest + [(run.outcome.seconds, f"[{case.id}] {case.describe()}")], reverse=True)[:8]
            if run.outcome.code == 2 and ns.errors:
                line = next((x for x in run.outcome.err.splitlines() if x.startswith("memplan: error:")), "?")
                messages[(case.command, re.sub(r"'[^']*'|\d[\d,.]*", "_", line)[16:110])] += 1
            for p in problems(run):
                kind = re.sub(r"\d[\d,]*", "N", p.split(":")[0])[:60]
                groups[(case.command, kind)].append((case, p))
    print(f"seed {seed}: {sum(counts.values())} cases in {time.perf_counter() - start:.1f} s")
    for (cmd, code), n in sorted(counts.items(), key=lambda x: (x[0][0], str(x[0][1]))):
        print(f"  {cmd:14s} exit {code}: {n}")
    print("  seconds per command: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.most_common()))
    print("  slowest:\n" + "\n".join(f"    {t:5.1f} s {d}".replace("\n", "\n      ") for t, d in slowest))
    if ns.errors:
        print("\nerror messages:")
        for (cmd, line), n in sorted(messages.items()):
            print(f"  {n:4d} {cmd}: {line}")
    for (cmd, kind), items in sorted(groups.items(), key=lambda x: -len(x[1])):
        print(f"\n== {cmd}: {kind} ({len(items)} cases)")
        for case, p in items[: (len(items) if ns.verbose else 3)]:
            print(f"  [{case.id}] {p}\n    {case.describe()}".replace("\n", "\n    "))
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
