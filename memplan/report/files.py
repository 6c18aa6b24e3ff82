"""Writing result files: atomically (temp file + os.replace), never over an existing file without force."""
from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from memplan.errors import MemplanError


def write_new_file(path: str | os.PathLike, data: str | bytes, force: bool = False) -> Path:
    """Write `data` to `path` atomically; refuse to replace an existing file unless `force`."""
    path = Path(path).expanduser()
    if path.exists() and not force:
        raise MemplanError(f"{path} exists; pass --force to overwrite it or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def timestamped_path(folder: Path, *parts: str, suffix: str = ".json") -> Path:
    """folder/<parts joined>-<UTC time>.json, a name that does not exist yet."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", p).strip("_") for p in parts if p)
    path = folder / f"{stem}-{stamp}{suffix}"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{stamp}-{n}{suffix}"
        n += 1
    return path


def check_writable(path: str | os.PathLike, force: bool = False) -> None:
    """Refuse up front what write_new_file would refuse after the work: an existing file without --force, a
    folder that cannot be written.  (Kept minimal here; the reliability work hardens it.)"""
    p = Path(path).expanduser()
    if p.exists() and not force:
        raise MemplanError(f"{p} exists; pass --force to overwrite it or choose another file")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise MemplanError(f"cannot write into {parent} (permission denied)")
