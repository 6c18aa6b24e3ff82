"""Reading a user's file (memplan.userfiles): bounded, regular files only, UTF-8, depth-limited, one-line errors.

Every case is created in a temporary folder (FIFOs, symlinks, loops) except reads of /dev/zero and /proc, which
are harmless to read and are the cases a user hits.
"""
from __future__ import annotations

import json
import os
import signal

import pytest

from memplan.errors import MemplanError
from memplan.userfiles import json_depth, parse_user_json, read_user_json, read_user_text


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if a read blocks: a FIFO must be refused before open()."""
    def boom(*_):
        raise AssertionError("the read blocked")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _error(path, **kw) -> str:
    with pytest.raises(MemplanError) as info:
        read_user_json(path, "--measured", **kw)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_a_fifo_is_refused_without_blocking(tmp_path, no_hang):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    assert _error(fifo) == f"--measured file {fifo} is a FIFO (named pipe), not a regular file"


def test_devices_folders_and_sockets_are_refused(tmp_path, no_hang):
    assert "is a character device, not a regular file" in _error("/dev/zero")
    assert f"--measured file {tmp_path} is a folder, not a regular file" == _error(tmp_path)
    import socket

    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        assert "is a socket" in _error(sock_path)


def test_os_errors_are_plain_words(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    assert "is a symlink loop" in _error(a)
    long = _error(tmp_path / ("x" * 300))
    assert "has a name too long for the file system (255 bytes per component)" in long
    assert f"({len(str(tmp_path)) + 301} characters)" in long and len(long) < 250  # the name shortened
    assert _error("") == "--measured: no file name given (an empty path)"
    assert "does not exist" in _error(tmp_path / "missing.json")
    (tmp_path / "f").write_text("{}")
    assert "has a path component that is not a folder" in _error(tmp_path / "f" / "x.json")


def test_encoding_size_and_depth(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b'{"a": "\xff"}')
    assert _error(p) == f"--measured file {p} is not UTF-8 text (byte 0xff at offset 7); save it as UTF-8"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}')  # a byte-order mark is fine
    assert read_user_json(p) == {"a": 1}
    p.write_text(json.dumps({"a": "x" * 2000}))
    assert "the limit is 0.000976562 MiB" in _error(p, max_bytes=1024)
    p.write_text("[" * 100_000 + "]" * 100_000)  # json.loads would raise RecursionError
    assert _error(p) == f"--measured file {p} nests JSON 100000 levels deep; the limit is 64"
    p.write_text("{not json")
    assert "is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)" in _error(p)


def test_top_level_kinds_and_non_finite_numbers_use_json_words(tmp_path):
    p = tmp_path / "x.json"
    for text, kind in (("[1]", "a list"), ("null", "null"), ("3", "a number"), ('"s"', "a string"),
                       ("true", "a boolean")):
        p.write_text(text)
        msg = _error(p)
        assert msg == f"--measured file {p} holds {kind}, not an object", msg
        assert "NoneType" not in msg
    p.write_text('{"cuda": {"achieved_tflops": NaN}, "x": [1, Infinity]}')
    assert _error(p) == f"--measured file {p}: field cuda.achieved_tflops is NaN; give a finite number"
    assert read_user_json(p, allow_non_finite=True)["x"][1] == float("inf")


def test_depth_counts_brackets_outside_strings_only():
    assert json_depth('{"a": [1, {"b": []}]}') == 4
    assert json_depth('{"a": "[[[[[[[[", "b": "\\"[[["}') == 1  # brackets and escaped quotes inside strings
    assert json_depth("3") == 0
    assert parse_user_json('{"k": "]]]]"}', "file x") == {"k": "]]]]"}


def test_proc_files_report_size_zero_but_are_read(no_hang):
    text = read_user_text("/proc/self/status", "status")
    assert "Pid:" in text
