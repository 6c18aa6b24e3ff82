from __future__ import annotations

import pytest

from memplan.errors import MemplanError
from memplan.spec.units import Units, format_bytes, parse_bytes, parse_count


@pytest.mark.parametrize("text,expected", [
    ("7B", 7_000_000_000), ("7.5B", 7_500_000_000), ("124M", 124_000_000), ("350m", 350_000_000),
    ("1.3e9", 1_300_000_000), ("70000000000", 70_000_000_000), ("1T", 10**12), ("13b", 13_000_000_000),
])
def test_parse_count(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize("text", ["7Q", "", "B", "-7B", "0", "7BB"])
def test_parse_count_rejects(text):
    with pytest.raises(MemplanError):
        parse_count(text)


def test_bytes_units():
    assert parse_bytes("80GB") == 80 * 10**9
    assert parse_bytes("80GiB") == 80 * 2**30
    assert format_bytes(2**30) == "1.00 GiB"
    assert format_bytes(10**9, Units.GB) == "1.00 GB"
    assert format_bytes(2**30, Units.GB) == "1.07 GB"
