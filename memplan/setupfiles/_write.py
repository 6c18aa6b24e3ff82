"""Writing an emitted config: never over an existing file without force, atomically, and never over anything
that is not a regular file (a folder, a device, a FIFO, a symlink).

The atomic write itself is memplan.report.files.write_new_file; this adds the regular-file check it lacks
(os.replace would swap a symlink or a device node for the new file).  To fold into write_new_file.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from memplan.errors import MemplanError


def write_text_safely(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    from memplan.report.files import write_new_file

    path = Path(path).expanduser()
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode) else \
            "not a regular file"
        raise MemplanError(f"{path} is {kind}; memplan only writes regular files (choose another path)")
    if info is not None and not force:
        raise MemplanError(f"{path} exists; pass --force to overwrite it or choose another path")
    return write_new_file(path, text, force=force)
