"""Durable, never-overwriting file writes (keys, the local evidence store).

A file is written under a temporary name in the same directory, fsynced,
given its final mode, then hard-linked to its name (``link`` fails if the
name exists, so nothing is ever replaced), and the directory is fsynced so
the new name survives a power cut.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["WriteOnceViolation", "write_once", "fsync_dir"]


class WriteOnceViolation(FileExistsError):
    """A file of that name exists with different content."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_once(path: Path, data: bytes, *, mode: int = 0o444, same_ok: bool = True) -> bool:
    """Write ``data`` to ``path`` durably with ``mode``, never replacing a
    file. An existing file with the same bytes is fine when ``same_ok``
    (returns False: a redelivery); any other existing file raises
    :class:`WriteOnceViolation`. Returns True when the file is new."""
    path = Path(path)

    def existing_is_same() -> bool:
        try:
            same = path.read_bytes() == data
        except FileNotFoundError:
            return False
        if not (same and same_ok):
            raise WriteOnceViolation(f"{path}: exists{' with different content' if same_ok else ''}; "
                                     "refusing to overwrite")
        return True

    if existing_is_same():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            if existing_is_same():  # a concurrent writer got there first with the same bytes
                return False
            raise
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True
