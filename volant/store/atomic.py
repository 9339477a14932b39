"""Crash-safe file replacement, the only way the store puts bytes on disk.

``write_atomic`` writes into a uniquely named temp file in the target's own
directory (so ``os.replace`` never crosses a filesystem), fsyncs it, renames
it over the target and fsyncs the directory so the rename itself survives a
power cut. Readers therefore see either the old file or the new one, never a
mix. On failure the temp file is removed and the old file is untouched.

The low-level write is looked up at call time (``write_all``) or passed as
``writer=`` so tests can inject EIO/ENOSPC in the middle of a write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from volant.errors import VolantError
from volant.store.errors import StoreFullError, StoreWriteError

Writer = Callable[[int, bytes], None]

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def is_temp_name(name: str) -> bool:
    """True for names ``write_atomic`` uses for its temp files (left over only by a crash)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def storage_error(exc: OSError, path: Path, action: str) -> VolantError:
    """Translate an OSError into the store's typed error (507 when full, else 503)."""
    code = exc.errno
    details = {
        "path": str(path),
        "errno": code,
        "errno_name": errno.errorcode.get(code, "?") if code is not None else None,
    }
    reason = exc.strerror or str(exc)
    if code in _FULL_ERRNOS:
        return StoreFullError(f"no space left to {action} {path}: {reason}", **details)
    return StoreWriteError(f"cannot {action} {path}: {reason}", **details)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that entries created, renamed or removed in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    # pid + random token: unique across processes and threads without a lock.
    token = secrets.token_hex(6)
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{token}{TEMP_SUFFIX}")


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, writer: Writer | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Raises ``StoreFullError`` (ENOSPC/EDQUOT) or ``StoreWriteError`` (any other
    OSError). If the error happens before the rename, ``path`` still holds its
    previous content; if only the final directory fsync fails the new content
    is in place but may not survive a power cut, which is still reported.
    """
    write = writer if writer is not None else write_all
    temp = _temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise storage_error(exc, path, "write") from exc
    try:
        try:
            os.fchmod(fd, mode)  # os.open's mode is filtered by the umask
            write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise storage_error(exc, path, "write") from exc
    except BaseException:
        # Cancellation or a bug in an injected writer: still never leave the temp file.
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise storage_error(exc, path, "sync directory of") from exc


def ensure_dir(path: Path, *, mode: int = 0o700) -> None:
    """Create ``path`` (and missing parents) with ``mode``, fsyncing each new entry's parent."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=mode)
            except FileExistsError:
                continue  # created concurrently: fine, it exists now
            os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
            fsync_dir(directory.parent)
    except OSError as exc:
        raise storage_error(exc, path, "create directory") from exc
    if not path.is_dir():
        raise StoreWriteError(
            f"cannot create directory {path}: a file is in the way", path=str(path)
        )


def _sync_parent(path: Path) -> None:
    """Make a removal durable: fsync the directory that held ``path``."""
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise storage_error(exc, path, "sync directory of") from exc


def remove_file(path: Path) -> bool:
    """Remove ``path`` if present and fsync its directory; returns whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, path, "remove") from exc
    _sync_parent(path)
    return True


def remove_tree(path: Path) -> bool:
    """Remove the tree ``path`` if present and fsync its parent; returns whether it existed."""
    if not path.exists() and not path.is_symlink():
        return False
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, path, "remove") from exc
    _sync_parent(path)
    return True
