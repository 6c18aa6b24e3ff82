"""Re-run every example in README.md (and docs/*.md) and paste its real output, so the README never drifts from the program.

A fenced block whose first line starts with `$ ` is an example: each `$ command` line (continued by a trailing backslash) in it is run with bash
from the repository root and followed by what it printed (stdout + stderr). Other blocks are left alone.
Usage: python scripts/render_readme.py [README.md ...]   (writes the files in place, atomically)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```([a-z]*)\n(\$ .*?)^```$", re.MULTILINE | re.DOTALL)


def run(command: str) -> str:
    out = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "120"})
    return (out.stdout + out.stderr).rstrip("\n")


def render_block(match: re.Match) -> str:
    lang, body = match.group(1), match.group(2)
    commands: list[str] = []
    continuing = False
    for line in body.splitlines():
        if line.startswith("$ ") and not continuing:
            commands.append(line[2:])
        elif continuing:
            commands[-1] += "\n" + line
        else:
            continue
        continuing = line.endswith("\\")
    parts = []
    for cmd in commands:
        print(f"running: {cmd}", file=sys.stderr)
        parts.append(f"$ {cmd}\n{run(cmd)}")
    return f"```{lang}\n" + "\n\n".join(parts) + "\n```"


def render(path: Path) -> None:
    text = path.read_text()
    new = BLOCK.sub(render_block, text)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.replace(tmp, path)


if __name__ == "__main__":
    for name in sys.argv[1:] or ["README.md"]:
        render(ROOT / name)
