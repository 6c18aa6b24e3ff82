"""Start-up cost of `memplan estimate` against the libraries it stands on (issue 12.8).

Goal: `memplan estimate` costs at most 1.5x the CPU time (user + sys, children's rusage) of
`python -c "import pydantic, click, tabulate"`.  Each sample is a fresh process; the figure is the median.
Run it against an installed wheel (what users have: pip compiles the bytecode at install time), e.g.

    python -m pip wheel --no-deps . -w /tmp/w && python -m venv /tmp/v && /tmp/v/bin/pip install /tmp/w/*.whl
    python benchmarks/bench_startup.py --python /tmp/v/bin/python

An editable install, or PYTHONDONTWRITEBYTECODE=1, compiles memplan's sources on every call and reads slower.
`--importtime` prints the ten slowest imports of one estimate (python -X importtime), self time first.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

COMMANDS = {
    "import pydantic, click, tabulate": ["-c", "import pydantic, click, tabulate"],
    # the floor of any program whose inputs and results are pydantic models: `import pydantic` is lazy, and the
    # first model class loads pydantic's internals (BaseModel, core schema, annotated_types, ...)
    "... and one pydantic model class": ["-c", "import pydantic, click, tabulate\nclass M(pydantic.BaseModel): x: int"],
    "memplan estimate llama-2-7b": ["-c", "from memplan.cli import run; import sys; "
                                          "sys.argv = ['memplan', 'estimate', 'llama-2-7b']; run()"],
    "memplan estimate llama-2-7b --gpu a100-80gb --gpus 8 --zero 3": [
        "-c", "from memplan.cli import run; import sys; sys.argv = ['memplan', 'estimate', 'llama-2-7b', '--gpu', "
              "'a100-80gb', '--gpus', '8', '--zero', '3']; run()"],
}


def cpu_seconds(python: str, args: list[str]) -> float:
    """User + sys CPU seconds of one fresh process running `python args`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([python, *args], check=True, capture_output=True, cwd="/", env=_env())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let the interpreter use (and write) compiled bytecode
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the install to time")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    for cmd in COMMANDS.values():  # warm the page cache and any bytecode cache
        cpu_seconds(args.python, cmd)
    medians = {}
    for name, cmd in COMMANDS.items():
        samples = [cpu_seconds(args.python, cmd) for _ in range(args.repeats)]
        medians[name] = statistics.median(samples)
    base = medians["import pydantic, click, tabulate"]
    print(f"{'command':<66} {'CPU ms (median)':>16} {'x base':>7}")
    for name, t in medians.items():
        print(f"{name:<66} {t * 1e3:>16.0f} {t / base:>7.2f}")
    print("goal: estimate <= 1.50 x base")
    if args.importtime:
        out = subprocess.run([args.python, "-X", "importtime", *COMMANDS["memplan estimate llama-2-7b"]],
                             capture_output=True, text=True, cwd="/", env=_env()).stderr
        rows = []
        for line in out.splitlines():
            if line.startswith("import time:") and "|" in line and "self" not in line:
                self_us, cum_us, name = line.removeprefix("import time:").split("|")
                rows.append((int(self_us), int(cum_us), name.strip()))
        for self_us, cum_us, name in sorted(rows, reverse=True)[:10]:
            print(f"  {name:<50} self {self_us / 1e3:6.1f} ms  cumulative {cum_us / 1e3:6.1f} ms")


if __name__ == "__main__":
    main()
