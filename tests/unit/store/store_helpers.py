"""Helpers shared by the state store tests (a unique module name: tests have no packages)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from volant.store.atomic import Writer, write_all


def fill_disk(directory: Path) -> Path:
    """Write a filler file until the filesystem is full; return its path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def temp_files(directory: Path) -> list[Path]:
    """Leftover temp files of write_atomic anywhere under ``directory``."""
    return [path for path in directory.rglob(".*.tmp") if path.is_file()]


def failing_writer(fail_errno: int, after: int = 10) -> Writer:
    """A writer that writes ``after`` bytes for real, then fails like a dying disk."""

    def write(fd: int, data: bytes) -> None:
        write_all(fd, data[:after])
        raise OSError(fail_errno, os.strerror(fail_errno))

    return write
