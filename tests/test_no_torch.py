"""`memplan estimate` must never import torch: it answers in a blink on a laptop without it."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from memplan.cli import main
for argv in (["estimate", "7B"], ["estimate", "llama-2-7b", "--gpu", "a100-80gb", "--zero", "3", "--gpus", "8"],
             ["estimate", "gpt2", "--compare"], ["models", "llama-2-7b"], ["gpus"]):
    assert main(argv) == 0, argv
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "pynvml")
assert not bad, bad
print("no torch")
"""


def test_estimate_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch")
