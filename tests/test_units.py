from __future__ import annotations

import pytest

from memplan.errors import MemplanError
from memplan.spec.units import Units, format_bytes, format_number, parse_bytes, parse_count


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


@pytest.mark.parametrize("nbytes, gib, gb", [
    (0, "0.00 GiB", "0.00 GB"),
    (8, "8 B", "8 B"),
    (4096, "4 KiB", "4 KB"),
    (2**20, "1.0 MiB", "1.0 MB"),
    (2 * 2**20, "2.0 MiB", "2.1 MB"),
    (7.45e-09 * 2**30, "8 B", "8 B"),
    (896 * 2**10, "896 KiB", "918 KB"),
    (0.0099 * 2**30, "10.1 MiB", "10.6 MB"),
    (0.05 * 2**30, "51.2 MiB", "53.7 MB"),
    (0.1 * 2**30, "0.10 GiB", "0.11 GB"),
])
def test_small_sizes_use_a_smaller_unit_never_scientific_notation(nbytes, gib, gb):
    assert format_bytes(nbytes) == gib
    assert format_bytes(nbytes, Units.GB) == gb
    assert "e-" not in format_bytes(nbytes) and "e-" not in format_number(nbytes)


def test_a_number_in_a_column_headed_by_its_unit():
    assert format_number(2**30) == "1.00"
    assert format_number(6.15e-05 * 2**30) == "<0.01"
    assert format_number(0) == "0.00"
    assert format_number(-2**20) == "-<0.01"
