"""Writing a file memplan makes (a result, a record, a setup, a profile): complete or not at all, only regular
files, and never losing a record to another run.  (On the base floor: setups, setup files, measure/ and the views
all write files; memplan.report.files re-exports it.)

- What is written is a regular file.  An existing device, FIFO, socket or folder at the path is refused even
  with --force (os.replace onto /dev/null would swap the device node for a file).  --force onto a symlink writes
  the file the link points to (the link stays).
- Complete or not at all: the data goes to a temporary file in the target's folder (same file system), is
  fsync'ed, then published in one step.  The temporary file is removed on every exit we control (finally, and
  memplan.interrupt's Ctrl-C handler); one left by a killed run (SIGKILL, power loss) carries its host and pid
  in its name and is removed by the next write into that folder once that process is gone.
- Exclusive: without --force, publishing is os.link(temp, target), which fails if the target exists -- there is
  no window between "does it exist?" and "write it" in which another run's record could be overwritten.  A
  generated name (`unique=True`, the default folder) moves on to the next free name; an explicit path that
  appeared while this run measured is refused, and the record is kept under a free name beside it.  A file
  system without hard links gets the same exclusivity from claiming the name with O_CREAT|O_EXCL first.
- `check_writable` asks all of this up front, so a bad --out fails before minutes of measurement.
- A stream the process already holds -- /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N -- is written
  through (os.write on that descriptor): `--save-setup /dev/stdout >> log.txt` appends to the log.  Following
  the link to log.txt and replacing it (what --force did) threw the log away.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import memplan.interrupt as interrupt
from memplan.errors import MemplanError
from memplan.userfiles import file_kind, os_error_message

Writer = Callable[[Path], None]  # writes the whole content to the (temporary) path it is given
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
                  errno.EACCES}
_MAX_NAMES = 10_000  # free names tried after a collision before giving up
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname() or "host")[:40]
_TEMP = re.compile(r"^\..*\.memplan-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


class TargetRefused(MemplanError):
    """The path cannot be written (it exists without --force, or is not a regular file); `path` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def _refuse(path: Path, what: str, problem: str) -> TargetRefused:
    return TargetRefused(f"{what} {path}: {problem}", path)


_STREAM = re.compile(r"/dev/(?:std(?P<std>out|err)|fd/(?P<fd>[0-9]{1,6}))|/proc/(?:self|thread-self|(?P<pid>[0-9]+))"
                     r"/fd/(?P<pfd>[0-9]{1,6})")


def stream_fd(path: str | os.PathLike) -> int | None:
    """The descriptor a path names when it is one of this process's open streams (/dev/stdout, /dev/stderr,
    /dev/fd/N, /proc/self/fd/N), else None: such a path is written through, never replaced."""
    try:
        text = os.fspath(path)
    except TypeError:
        return None
    m = _STREAM.fullmatch(text) if isinstance(text, str) else None
    if m is None or (m.group("pid") and int(m.group("pid")) != os.getpid()):
        return None
    if m.group("std"):
        return 1 if m.group("std") == "out" else 2
    return int(m.group("fd") or m.group("pfd"))


def _check_stream(fd: int, path: str, what: str) -> None:
    try:
        os.fstat(fd)
    except OSError:
        raise MemplanError(f"{what} {path}: descriptor {fd} is not open in this process") from None


def _write_through(fd: int, path: str, writer: Writer, what: str) -> Path:
    """The writer's content, written to the open descriptor (appended where the shell opened it with >>)."""
    import tempfile

    _check_stream(fd, path, what)
    with tempfile.TemporaryDirectory(prefix="memplan-") as tmpdir:
        tmp = Path(tmpdir) / "out"
        with interrupt.on_abort(lambda: _unlink(tmp)):
            writer(tmp)
            data = tmp.read_bytes()
    view = memoryview(data)
    try:
        for stream in (sys.stdout, sys.stderr):  # what Python buffered for the same descriptor goes first
            try:
                if stream is not None and stream.fileno() == fd:
                    stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise MemplanError(f"{what} {path}: cannot write ({os_error_message(exc, writing=True)})") from None
    return Path(path)


def resolve_target(path: str | os.PathLike, force: bool = False, what: str = "--out") -> tuple[Path, bool]:
    """(the path to write, whether a regular file is there now); refusals as MemplanError.

    A symlink is followed only with `force` (its target is what gets written).  A stream this process holds
    (`stream_fd`) is returned as it is: it is written through.
    """
    text = os.fspath(path)
    fd = stream_fd(text)
    if fd is not None:
        _check_stream(fd, text, what)
        return Path(text), False
    p = _file_name(text, what)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p, False
    except NotADirectoryError:
        _existing_ancestor(p.parent)  # names the component that is a file
        raise _refuse(p, what, "has a path component that is not a folder") from None
    except OSError as exc:
        raise _refuse(p, what, os_error_message(exc)) from None
    if stat.S_ISLNK(st.st_mode):
        if not force:
            raise _refuse(p, what, "exists (a symlink); pass --force to write the file it points to, or choose "
                                   "another path")
        try:
            st = os.stat(p)
        except FileNotFoundError:  # a dangling link: write the file it names
            return Path(os.path.realpath(p)), False
        except OSError as exc:
            raise _refuse(p, what, os_error_message(exc)) from None
        real = Path(os.path.realpath(p))
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(p, what, f"is a symlink to {real}, which is {file_kind(st.st_mode)}; memplan writes only "
                                   "regular files: choose another path")
        return real, True
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(p, what, f"is {file_kind(st.st_mode)}; memplan writes only regular files (even with --force): "
                               "choose another path")
    if not force:
        raise _refuse(p, what, "exists; pass --force to overwrite it or choose another path")
    return p, True


def _file_name(text: str, what: str) -> Path:
    """The path as a Path, refused unless its last part can name a file: not empty, not '.' or '..', not ending
    in a separator (pathlib drops that '/', and 'out/' would become a file named out)."""
    if not str(text).strip():
        raise MemplanError(f"{what}: no file name given (an empty path)")
    p = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or p.name in ("", ".", ".."):
        raise MemplanError(f"{what} {text}: names a folder, not a file; give a file name in it, e.g. "
                           f"{os.path.join(text, 'memplan-out.json')}")
    return p


def _existing_ancestor(folder: Path) -> Path:
    while True:
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            if folder.parent == folder:
                return folder
            folder = folder.parent
            continue
        except OSError as exc:
            raise MemplanError(f"folder {folder} {os_error_message(exc)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise MemplanError(f"{folder} is {file_kind(st.st_mode)}, not a folder: it cannot hold a file")
        return folder


def check_writable(path: str | os.PathLike, force: bool = False, what: str = "--out") -> Path:
    """Up front: refuse what `write_new_file` would refuse, and prove the folder takes a new file.

    Root ignores permission bits, and /proc or a read-only mount refuse what `os.access` allows, so the test is
    to create (and remove) a probe file in the nearest existing folder.  Returns the path that will be written.
    """
    target, _ = resolve_target(path, force, what)
    if stream_fd(path) is not None:
        return target
    folder = _existing_ancestor(target.parent)
    try:
        fd, probe = _create_temp(folder, "write-check")
    except OSError as exc:
        raise MemplanError(f"{what} {target}: cannot create files in {folder} "
                           f"({os_error_message(exc, writing=True)})") from None
    os.close(fd)
    os.unlink(probe)
    return target


def check_folder_writable(folder: str | os.PathLike, what: str = "--out") -> Path:
    """Up front, for a generated name: the folder (or its nearest existing parent) takes a new file."""
    folder = Path(os.fspath(folder)).expanduser()
    base = _existing_ancestor(folder)
    try:
        fd, probe = _create_temp(base, "write-check")
    except OSError as exc:
        raise MemplanError(f"{what}: cannot create files in {base} ({os_error_message(exc, writing=True)})") \
            from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    stem = name[:100]  # the temp name must stay under the 255-byte limit whatever the target's length
    for _ in range(100):
        tmp = folder / f".{stem}.memplan-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no free temporary name")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Temporary files this host's killed runs left in `folder` (their pid is gone): removed, and returned."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _names(target: Path) -> Iterator[Path]:
    """target, then stem-1.ext, stem-2.ext, ...: where a generated name goes after a collision."""
    yield target
    suffix = "".join(target.suffixes[-1:])
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    for n in range(1, _MAX_NAMES):
        yield target.with_name(f"{stem}-{n}{suffix}")


def _publish_exclusive(tmp: Path, target: Path) -> None:
    """Make `tmp` appear as `target` only if `target` does not exist (FileExistsError otherwise)."""
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    # no hard links here (FAT, some network file systems): claim the name, then replace our own claim
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    os.replace(tmp, target)


def write_new_file_with(path: str | os.PathLike, writer: Writer, force: bool = False, unique: bool = False,
                        what: str = "--out") -> Path:
    """Write a file through `writer` (given the temporary path) and publish it as `path`; returns where it went.

    `force`: replace an existing regular file (or the file a symlink points to).  `unique`: the name was
    generated (a timestamp): on a collision take the next free name instead of refusing.
    """
    fd = None if unique else stream_fd(path)
    if fd is not None:
        return _write_through(fd, os.fspath(path), writer, what)
    if unique:
        target, exists = _file_name(os.fspath(path), what), False
    else:
        try:
            target, exists = resolve_target(path, force, what)
        except TargetRefused as refused:
            # it was checked up front (check_writable); what is there now appeared while this run worked:
            # refuse it, and keep the result under a free name beside it
            saved = write_new_file_with(refused.path, writer, unique=True, what=what)
            raise MemplanError(f"{refused} (it appeared while this run was working?); this result is in "
                               f"{saved}") from None
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MemplanError(f"{what} {target}: cannot create the folder {folder} "
                           f"({os_error_message(exc, writing=True)})") from None
    remove_stale_temps(folder)
    try:
        fd, tmp = _create_temp(folder, target.name)
    except OSError as exc:
        raise MemplanError(f"{what} {target}: cannot create files in {folder} "
                           f"({os_error_message(exc, writing=True)})") from None
    os.close(fd)
    with interrupt.on_abort(lambda: _unlink(tmp)):
        try:
            writer(tmp)
            _fsync(tmp)
            return _publish(tmp, target, force and exists, unique, what)
        except OSError as exc:
            raise MemplanError(f"{what} {target}: cannot write ({os_error_message(exc, writing=True)})") from None
        finally:
            _unlink(tmp)


def _publish(tmp: Path, target: Path, replace: bool, unique: bool, what: str) -> Path:
    if replace:
        st = os.lstat(target) if os.path.lexists(target) else None
        if st is not None and not stat.S_ISREG(st.st_mode):  # swapped for something else while we measured
            raise _refuse(target, what, f"is now {file_kind(st.st_mode)}; not replaced")
        os.replace(tmp, target)
        return target
    names = _names(target)
    first = next(names)
    try:
        _publish_exclusive(tmp, first)
        return first
    except FileExistsError:
        pass
    for candidate in names:
        try:
            _publish_exclusive(tmp, candidate)
        except FileExistsError:
            continue
        if unique:
            return candidate
        raise _refuse(first, what, f"appeared while this run was working (another run?) and was not overwritten; "
                                   f"this result is in {candidate} (pass --force to overwrite instead)")
    raise _refuse(first, what, f"and {_MAX_NAMES} names after it exist; choose another path")


def write_new_file(path: str | os.PathLike, data: str | bytes, force: bool = False, unique: bool = False,
                   what: str = "--out") -> Path:
    """Write `data` (text is UTF-8) as `path`; see `write_new_file_with`."""
    payload = data.encode("utf-8") if isinstance(data, str) else data

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(payload)

    return write_new_file_with(path, write, force=force, unique=unique, what=what)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def timestamped_path(folder: Path, *parts: str, suffix: str = ".json") -> Path:
    """folder/<parts joined>-<UTC time>.json: a generated name (write it with unique=True)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", p).strip("_") for p in parts if p)
    path = folder / f"{stem}-{stamp}{suffix}"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{stamp}-{n}{suffix}"
        n += 1
    return path

