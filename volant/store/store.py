"""The state directory: typed snapshot files, loading with quarantine.

Layout (DESIGN.md section 5)::

    <state_dir>/vms/<name>/state.json, vms/<name>/config.toml, vms/<name>/history/<n>.toml
    <state_dir>/deployments/<name>.toml
    <state_dir>/plugins/<name>.json
    <state_dir>/events/...
    <state_dir>/quarantine/<UTC timestamp>-<relpath with / as __>  (+ ``.reason``)

Concurrency rule: **one writer per file**. Each file has exactly one owner (an
actor) and only that owner writes or deletes it; the store itself takes no
locks. Atomic replacement makes concurrent *readers* safe: they see the old or
the new file. Two writers of one file would not corrupt it, but the last rename
would win silently, so the rule is kept by construction, not checked here.

Everything here is synchronous file I/O. From trio, use the ``a*`` wrappers,
which run the same call in a worker thread (``trio.to_thread.run_sync``).
The format of a file follows its extension: ``.json`` or ``.toml``.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from volant.logging import get_logger
from volant.store.atomic import (
    Writer,
    ensure_dir,
    fsync_dir,
    is_temp_name,
    remove_file,
    remove_tree,
    storage_error,
    write_atomic,
)
from volant.store.errors import (
    InvalidStatePathError,
    SnapshotDecodeError,
    SnapshotError,
    SnapshotVersionError,
    StoreReadError,
)
from volant.store.paths import validate_relpath
from volant.store.snapshot import FORMATS, Document, Format, Snapshot, SnapshotCodec

LAYOUT_DIRS = ("vms", "deployments", "plugins", "events", "quarantine")
QUARANTINE_DIR = "quarantine"
DEFAULT_MAX_FILE_SIZE = 16 * 1024 * 1024
_UNSAFE_IN_QUARANTINE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _log() -> FilteringBoundLogger:
    # Looked up per call: get_logger binds eagerly, and a module-level logger
    # created at import would ignore a configure_logging() that runs later.
    return get_logger("volant.store")


@attrs.frozen
class QuarantinedFile:
    """A file moved aside by ``load_all``; ``moved_to`` is None if even moving it failed."""

    relpath: str
    reason: str
    moved_to: Path | None


@attrs.frozen
class RefusedFile:
    """A file left in place because it is newer than this code (see ``SnapshotVersionError``)."""

    relpath: str
    reason: str


@attrs.define
class LoadResult:
    """What ``load_all`` found. ``documents`` is keyed by path relative to the state dir."""

    documents: dict[str, Document] = attrs.field(factory=dict)
    migrated: list[str] = attrs.field(factory=list)
    quarantined: list[QuarantinedFile] = attrs.field(factory=list)
    refused: list[RefusedFile] = attrs.field(factory=list)


def format_of(relpath: PurePosixPath) -> Format:
    fmt = FORMATS.get(relpath.suffix)
    if fmt is None:
        raise InvalidStatePathError(
            f"state path {str(relpath)!r}: snapshots are .json or .toml files", field="path"
        )
    return fmt


class StateStore:
    """Reads and writes snapshot files under one state directory."""

    def __init__(
        self,
        state_dir: Path,
        *,
        dir_mode: int = 0o700,
        file_mode: int = 0o600,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        writer: Writer | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.max_file_size = max_file_size
        self._writer = writer
        ensure_dir(self.state_dir, mode=dir_mode)
        for name in LAYOUT_DIRS:
            ensure_dir(self.state_dir / name, mode=dir_mode)

    @property
    def quarantine_dir(self) -> Path:
        return self.state_dir / QUARANTINE_DIR

    def path_of(self, relpath: str) -> Path:
        """Absolute path for a validated relative path."""
        return self.state_dir.joinpath(*validate_relpath(relpath).parts)

    # ---- single files -------------------------------------------------------------------

    def write(self, relpath: str, codec: SnapshotCodec, doc: Mapping[str, Any]) -> None:
        """Atomically replace ``relpath`` with ``doc`` stamped with the codec's version.

        Raises ``SnapshotEncodeError`` before touching the disk if ``doc`` cannot
        be serialised, ``StoreFullError``/``StoreWriteError`` if the disk refuses.
        """
        rel = validate_relpath(relpath)
        data = codec.encode(doc, format_of(rel))
        path = self.state_dir.joinpath(*rel.parts)
        ensure_dir(path.parent, mode=self.dir_mode)
        write_atomic(path, data, mode=self.file_mode, writer=self._writer)

    def read_snapshot(self, relpath: str, codec: SnapshotCodec) -> Snapshot | None:
        """Decode ``relpath``; None when absent. Raises ``SnapshotError`` or ``StoreReadError``."""
        rel = validate_relpath(relpath)
        fmt = format_of(rel)
        path = self.state_dir.joinpath(*rel.parts)
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreReadError(
                f"cannot read {path}: {exc.strerror or exc}", path=str(path), errno=exc.errno
            ) from exc
        try:
            return codec.decode(data, fmt)
        except SnapshotError as exc:
            exc.details.setdefault("path", relpath)
            raise

    def read(self, relpath: str, codec: SnapshotCodec) -> Document | None:
        """The document at ``relpath`` (migrated to the current version), or None when absent."""
        snapshot = self.read_snapshot(relpath, codec)
        return None if snapshot is None else snapshot.document

    def exists(self, relpath: str) -> bool:
        return self.path_of(relpath).exists()

    def delete(self, relpath: str) -> bool:
        """Remove one file (durably); returns whether it existed."""
        return remove_file(self.path_of(relpath))

    def delete_tree(self, relpath: str) -> bool:
        """Remove a directory such as ``vms/<name>`` with everything in it."""
        rel = validate_relpath(relpath)
        if len(rel.parts) < 2:
            raise InvalidStatePathError(
                f"refusing to delete the top-level directory {relpath!r}", field="path"
            )
        return remove_tree(self.state_dir.joinpath(*rel.parts))

    def list_dir(self, subdir: str) -> list[str]:
        """Sorted entry names of ``subdir`` (valid names only, no temp files); [] when absent."""
        directory = self.path_of(subdir)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreReadError(
                f"cannot list {directory}: {exc.strerror or exc}", path=str(directory)
            ) from exc
        return sorted(name for name in names if _is_valid_child(subdir, name))

    # ---- bulk load with quarantine ------------------------------------------------------

    def load_all(self, subdir: str, pattern: str, codec: SnapshotCodec) -> LoadResult:
        """Load every file under ``subdir`` matching the glob ``pattern`` (e.g. ``*/state.json``).

        Never raises for a bad file: unreadable or undecodable ones are moved to
        the quarantine (with a ``.reason`` file and a logged warning), files newer
        than the codec are left in place and listed in ``refused``.
        """
        base = self.path_of(subdir)
        if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
            raise InvalidStatePathError(f"invalid pattern {pattern!r}", field="pattern")
        result = LoadResult()
        if not base.is_dir():
            return result
        for path in sorted(base.glob(pattern)):
            if is_temp_name(path.name) or (path.is_dir() and not path.is_symlink()):
                continue
            relpath = path.relative_to(self.state_dir).as_posix()
            self._load_one(path, relpath, codec, result)
        return result

    def _load_one(self, path: Path, relpath: str, codec: SnapshotCodec, result: LoadResult) -> None:
        try:
            rel = validate_relpath(relpath)
            fmt = format_of(rel)
        except InvalidStatePathError as exc:
            self._quarantine_into(result, path, relpath, f"invalid file name: {exc.message}", codec)
            return
        try:
            data = self._read_bytes(path)
        except FileNotFoundError:
            return  # removed since the listing: nothing to load
        except OSError as exc:
            self._quarantine_into(
                result, path, relpath, f"unreadable: {exc.strerror or exc}", codec
            )
            return
        except SnapshotDecodeError as exc:
            self._quarantine_into(result, path, relpath, exc.reason, codec)
            return
        try:
            snapshot = codec.decode(data, fmt)
        except SnapshotVersionError as exc:
            _log().warning("snapshot_refused", path=relpath, kind=codec.kind, reason=exc.reason)
            result.refused.append(RefusedFile(relpath=relpath, reason=exc.reason))
            return
        except SnapshotError as exc:
            self._quarantine_into(result, path, relpath, exc.reason, codec)
            return
        result.documents[relpath] = snapshot.document
        if snapshot.migrated:
            result.migrated.append(relpath)

    def _quarantine_into(
        self, result: LoadResult, path: Path, relpath: str, reason: str, codec: SnapshotCodec
    ) -> None:
        moved_to: Path | None
        try:
            moved_to = self._move_to_quarantine(path, relpath, reason, codec.kind)
        except Exception as exc:  # a failing disk must not stop loading the rest
            moved_to = None
            _log().exception(
                "snapshot_quarantine_failed",
                path=relpath,
                kind=codec.kind,
                reason=reason,
                error=str(exc),
            )
        else:
            _log().warning(
                "snapshot_quarantined",
                path=relpath,
                kind=codec.kind,
                reason=reason,
                moved_to=str(moved_to),
            )
        result.quarantined.append(
            QuarantinedFile(relpath=relpath, reason=reason, moved_to=moved_to)
        )

    def quarantine(self, relpath: str, reason: str, *, kind: str = "snapshot") -> Path:
        """Move one file aside (for owners that find a bad file outside ``load_all``)."""
        path = self.path_of(relpath)
        moved_to = self._move_to_quarantine(path, relpath, reason, kind)
        _log().warning(
            "snapshot_quarantined", path=relpath, kind=kind, reason=reason, moved_to=str(moved_to)
        )
        return moved_to

    def _move_to_quarantine(self, path: Path, relpath: str, reason: str, kind: str) -> Path:
        now = datetime.now(UTC)
        flat = _UNSAFE_IN_QUARANTINE_NAME.sub("_", relpath.replace("/", "__"))
        base = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{flat}"[:200]
        target = self.quarantine_dir / base
        counter = 0
        while target.exists() or _reason_path(target).exists():
            counter += 1
            target = self.quarantine_dir / f"{base}-{counter}"
        ensure_dir(self.quarantine_dir, mode=self.dir_mode)
        try:
            os.rename(path, target)
            fsync_dir(path.parent)
        except OSError as exc:
            raise storage_error(exc, path, "quarantine") from exc
        text = (
            f"path: {_one_line(relpath)}\nkind: {_one_line(kind)}\n"
            f"quarantined_at: {now.isoformat()}\nreason: {_one_line(reason)}\n"
        )
        write_atomic(_reason_path(target), text.encode("utf-8"), mode=self.file_mode)
        return target

    def _read_bytes(self, path: Path) -> bytes:
        # O_NOFOLLOW: a symlink planted in the state dir is never followed out of it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SnapshotDecodeError("not a regular file")
            if info.st_size > self.max_file_size:
                raise SnapshotDecodeError(
                    f"file too large ({info.st_size} bytes > {self.max_file_size})"
                )
            chunks: list[bytes] = []
            remaining = self.max_file_size + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            if remaining <= 0:
                raise SnapshotDecodeError(f"file too large (> {self.max_file_size} bytes)")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files left by writes interrupted by a crash. Call at startup only,
        before any writer runs (a live writer's temp file looks the same)."""
        removed: list[Path] = []
        for root, _dirs, files in os.walk(self.state_dir):
            for name in files:
                if is_temp_name(name):
                    path = Path(root) / name
                    if remove_file(path):
                        removed.append(path)
        if removed:
            _log().info("stale_temp_files_removed", count=len(removed))
        return removed

    # ---- trio wrappers ------------------------------------------------------------------

    async def awrite(self, relpath: str, codec: SnapshotCodec, doc: Mapping[str, Any]) -> None:
        """``write`` in a worker thread. Cancellation waits for the write to finish or fail
        cleanly (the thread is not abandoned), so a cancelled caller never races its next write."""
        await trio.to_thread.run_sync(functools.partial(self.write, relpath, codec, doc))

    async def aread(self, relpath: str, codec: SnapshotCodec) -> Document | None:
        return await trio.to_thread.run_sync(functools.partial(self.read, relpath, codec))

    async def aread_snapshot(self, relpath: str, codec: SnapshotCodec) -> Snapshot | None:
        return await trio.to_thread.run_sync(functools.partial(self.read_snapshot, relpath, codec))

    async def adelete(self, relpath: str) -> bool:
        return await trio.to_thread.run_sync(functools.partial(self.delete, relpath))

    async def aload_all(self, subdir: str, pattern: str, codec: SnapshotCodec) -> LoadResult:
        return await trio.to_thread.run_sync(
            functools.partial(self.load_all, subdir, pattern, codec)
        )


def _reason_path(target: Path) -> Path:
    return target.with_name(target.name + ".reason")


def _is_valid_child(subdir: str, name: str) -> bool:
    try:
        validate_relpath(f"{subdir}/{name}")
    except InvalidStatePathError:
        return False
    return True


def _one_line(text: str) -> str:
    """Escape control characters and undecodable bytes so each field stays on one line."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape", "backslashreplace").decode()
        for char in text
    )
