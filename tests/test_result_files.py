"""Writing result files (memplan.report.files): only regular files, --force follows symlinks, exclusive creation
(concurrent runs never lose a record), no temporary file left behind, and writability checked up front.

Every target is created in a temporary folder (a device node made with mknod points at /dev/null), never a
real device.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from memplan.errors import MemplanError
from memplan.report.files import check_writable, remove_stale_temps, write_new_file, write_new_file_with


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _refusal(fn, *args, **kw) -> str:
    with pytest.raises(MemplanError) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_non_regular_targets_are_refused_even_with_force(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.json"
    folder.mkdir()
    nodes = [(fifo, "a FIFO (named pipe)"), (folder, "a folder")]
    try:
        dev = tmp_path / "null.json"
        os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        nodes.append((dev, "a character device"))
    except (PermissionError, OSError):
        pass  # no CAP_MKNOD here: the FIFO and the folder still cover the check
    for path, kind in nodes:
        for force in (False, True):
            up_front = _refusal(check_writable, path, force)
            assert f"is {kind}; memplan writes only regular files" in up_front
            # found only at write time (it appeared while the run measured): refused, the result kept beside it
            at_write = _refusal(write_new_file, path, f"{path.name} {force}", force=force)
            assert at_write.startswith(up_front) and at_write.endswith(".json")
            saved = Path(at_write.rsplit("this result is in ", 1)[1])
            assert saved.parent == tmp_path and saved.read_text() == f"{path.name} {force}"
        assert not stat.S_ISREG(os.lstat(path).st_mode)  # the node is still what it was
    assert _leftovers(tmp_path) == []


def test_force_onto_a_symlink_writes_its_target(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert "exists (a symlink); pass --force" in _refusal(write_new_file, link, "new")
    assert write_new_file(link, "new", force=True) == real
    assert link.is_symlink() and real.read_text() == "new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-fifo.json"
    to_fifo.symlink_to(fifo)
    assert "which is a FIFO (named pipe); memplan writes only regular files" in _refusal(
        write_new_file, to_fifo, "x", force=True)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "made.json")
    assert write_new_file(dangling, "made", force=True) == tmp_path / "made.json"
    assert (tmp_path / "made.json").read_text() == "made"
    loop_a, loop_b = tmp_path / "a", tmp_path / "b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    assert "symlink loop" in _refusal(write_new_file, loop_a, "x", force=True)
    assert _leftovers(tmp_path) == []


def test_unwritable_places_fail_up_front(tmp_path):
    assert "cannot create files in /proc" in _refusal(check_writable, "/proc/memplan-test.json")
    blocker = tmp_path / "existing.json"
    blocker.write_text("{}")
    assert f"{blocker} is a regular file, not a folder" in _refusal(check_writable, blocker / "x.json")
    assert "no file name given" in _refusal(check_writable, "")
    if os.geteuid() != 0:  # root ignores permission bits; /proc above covers it there
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            assert "permission denied" in _refusal(check_writable, ro / "x.json")
        finally:
            ro.chmod(0o755)
    # a folder that does not exist yet is fine when its parent takes files (it is created at write time)
    assert check_writable(tmp_path / "new" / "deeper" / "x.json") == tmp_path / "new" / "deeper" / "x.json"
    assert not (tmp_path / "new").exists()


def test_concurrent_writers_on_one_explicit_path_lose_nothing(tmp_path):
    target = tmp_path / "run.json"
    start = threading.Barrier(8)
    results: dict[int, object] = {}

    def writer(i: int) -> None:
        start.wait()
        try:
            results[i] = write_new_file(target, json.dumps({"writer": i}))
        except MemplanError as exc:
            results[i] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == target]
    refused = {i: str(r) for i, r in results.items() if isinstance(r, MemplanError)}
    assert len(winners) == 1 and len(refused) == 7
    for msg in refused.values():  # whether it lost at the link or found the winner's file already there
        assert "appeared while this run was working" in msg and "this result is in" in msg
    records = sorted(json.loads(p.read_text())["writer"] for p in tmp_path.glob("run*.json"))
    assert records == list(range(8))  # every record kept, each in its own file
    assert _leftovers(tmp_path) == []


def test_concurrent_processes_with_a_generated_name_each_get_their_own_file(tmp_path):
    code = ("import sys; from memplan.report.files import write_new_file; "
            "print(write_new_file(sys.argv[1], sys.argv[2], unique=True))")
    target = tmp_path / "auto-20250101T000000Z.json"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), f"record {i}"], stdout=subprocess.PIPE,
                              text=True) for i in range(4)]
    written = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(written)) == 4 and str(target) in written
    assert sorted(Path(w).read_text() for w in written) == [f"record {i}" for i in range(4)]
    assert _leftovers(tmp_path) == []


def test_temporary_files_are_removed_on_errors_interrupts_and_after_a_kill(tmp_path):
    def fails(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_new_file_with(tmp_path / "x.json", fails)
    assert list(tmp_path.iterdir()) == []
    # a run killed mid-write (SIGKILL) leaves its temporary file: the next write into the folder removes it
    # once that process is gone, and leaves a live process's alone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    from memplan.report.files import _HOST

    stale = tmp_path / f".x.json.memplan-{_HOST}-{dead}-0123abcd.tmp"
    live = tmp_path / f".x.json.memplan-{_HOST}-{os.getppid()}-0123abcd.tmp"
    stale.write_text("partial")
    live.write_text("in progress")
    write_new_file(tmp_path / "y.json", "{}")
    assert not stale.exists() and live.exists()
    assert remove_stale_temps(tmp_path) == []


def test_force_replaces_a_regular_file_atomically_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "r.json"
    write_new_file(target, "one")
    assert "exists; pass --force" in _refusal(write_new_file, target, "two")
    write_new_file(target, "two", force=True)
    assert target.read_text() == "two" and _leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
