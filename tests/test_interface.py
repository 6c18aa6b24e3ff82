"""The CLI flag set of every command and the JSON field paths of every result are frozen (tests/interface.py):
nothing is removed or renamed; an addition is made on purpose by updating the snapshot."""
from __future__ import annotations

import json

import pytest

from tests.interface import SNAPSHOT, current

FROZEN = json.loads(SNAPSHOT.read_text())
NOW = current()


@pytest.mark.parametrize("kind", ["flags", "fields"])
def test_nothing_is_removed_or_renamed(kind):
    for name, frozen in FROZEN[kind].items():
        assert name in NOW[kind], f"{kind}: {name!r} is gone"
        gone = sorted(set(frozen) - set(NOW[kind][name]))
        assert not gone, f"{name}: {kind} removed or renamed: {gone} (add aliases; never rename)"


@pytest.mark.parametrize("kind", ["flags", "fields"])
def test_additions_are_in_the_snapshot(kind):
    for name, now in NOW[kind].items():
        new = sorted(set(now) - set(FROZEN[kind].get(name, [])))
        assert not new, (f"{name}: new {kind} {new}: if intended, `python -m tests.interface --update` and commit "
                         "tests/interface.json")
