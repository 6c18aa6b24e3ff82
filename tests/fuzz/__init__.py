"""A seeded fuzzer of `memplan` invocations (issue 13, item 7).

- values.py: the odd numbers, names and sizes a flag can be given;
- files.py: the file edge cases (empty, non-UTF-8, deep, huge, FIFO, folder, symlink loop, ...) and the tiny and
  inconsistent model configs, created in a temporary folder, never a real device;
- cases.py: one generator per command turning a seed into an argument list (+ the files it names);
- runner.py: runs a case in-process through memplan.cli.main with a time limit (a hang is a failure);
- invariants.py: what must hold of the outcome: exit 2 with one `memplan: error:` line, or exit 0 with output that
  makes sense (JSON parses, byte fields are non-negative integers, fits == required <= memory, ...).

tests/test_fuzz.py runs it under pytest; `python -m tests.fuzz --cases 5000` runs it as a script and groups the
failures (README.md, Development).
"""
