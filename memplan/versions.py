"""The library releases memplan's traced data describes, and the installed ones, compared without importing them.

The traced activation rows (profiles/implementations/hf-<family>.json, made by `memplan trace` /
scripts/trace_profiles.py) are what transformers' modeling code saved at one release: another release can keep
other tensors (falcon's decoder under 5.25 keeps 52% more at full width than under 5.24).  `pip install
'memplan[trace]'` pins that release (pyproject.toml); an estimate that reads the rows says so in one line when the
installed transformers differs.  `estimate` never imports transformers or torch: the installed version is read
from the distribution's metadata folder name on sys.path (importlib.metadata.version costs ~70 ms of start-up).
"""
from __future__ import annotations

import os
import re
import sys

# The release every shipped traced profile was made with (their `description` names it too); pyproject.toml's
# `trace` and `dev` extras pin the same.
TRACED_WITH = {"transformers": "5.24.0", "torch": "2.13.0"}


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution` (e.g. 'transformers'), or None: the first `NAME-VERSION.dist-info`
    folder on sys.path, as importlib.metadata would find it."""
    prefix = re.sub(r"[-_.]+", "_", distribution).lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip, a missing folder, no permission
            continue
        for name in names:
            if name.endswith(".dist-info") and name.lower().startswith(prefix):
                return name[len(prefix):-len(".dist-info")]
    return None


def traced_release(traced_with: dict[str, str] | None, description: str = "",
                   distribution: str = "transformers") -> str | None:
    """The `distribution` release one traced profile was made under: its `traced_with` (what `memplan trace`
    records), else the release its description names ("Hugging Face transformers 5.24.0 ..."), else None."""
    if traced_with and traced_with.get(distribution):
        return traced_with[distribution]
    m = re.search(rf"\b{re.escape(distribution)} (\d+\.\d+[\w.+-]*)", description or "")
    return m.group(1) if m else None


def release_drift(distribution: str = "transformers", traced: str | None = None, rows: str = "") -> str | None:
    """One line when the installed `distribution` differs from the release the traced rows (`rows`: the profile's
    name) were made with (`traced`, default TRACED_WITH); None when they agree or it is not installed (the run
    happens elsewhere)."""
    want = traced or TRACED_WITH.get(distribution)
    have = installed_version(distribution)
    if want is None or have is None or have == want:
        return None
    if want == TRACED_WITH.get(distribution):  # the shipped rows' release
        return (f"activation rows traced with {distribution} {want}; {have} is installed, whose modeling code may "
                f"keep other tensors: `pip install 'memplan[trace]'` pins {want}, `memplan trace` re-traces with "
                "yours")
    return (f"activation rows{f' {rows}' if rows else ''} traced with {distribution} {want}; {have} is installed, "
            f"whose modeling code may keep other tensors: `pip install {distribution}=={want}` is the release they "
            "describe, `memplan trace` re-traces with yours")
