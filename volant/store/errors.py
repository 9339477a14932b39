"""Typed errors of the state store.

Write failures map onto the shared HTTP-aware hierarchy: a full disk is 507
(``OutOfSpaceError``), any other I/O failure is 503 (the daemon cannot persist
right now, the caller may retry). Read failures are ``SnapshotError``: the file
exists but cannot be turned into a document of the expected kind.
"""

from __future__ import annotations

from typing import Any

from volant.errors import OutOfSpaceError, UnavailableError, ValidationError, VolantError


class StoreFullError(OutOfSpaceError):
    """ENOSPC/EDQUOT while persisting; the previous snapshot is intact."""


class StoreWriteError(UnavailableError):
    """Any other OSError while persisting (EIO, EROFS, EACCES...); previous snapshot intact."""


class InvalidStatePathError(ValidationError):
    """A relative state path is absolute, escapes the state dir, or holds an invalid name."""


class SnapshotEncodeError(VolantError):
    """A document cannot be serialised (unsupported type, NaN in JSON, None inside a TOML list)."""


class SnapshotError(VolantError):
    """A snapshot file exists but cannot be loaded; ``reason`` is a one-line explanation."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason, **details)
        self.reason = reason


class SnapshotDecodeError(SnapshotError):
    """Bytes are not a valid document: bad encoding/syntax, not a table, bad ``schema_version``."""


class SnapshotMigrationError(SnapshotError):
    """An older document could not be migrated (missing step, or the step failed)."""


class SnapshotVersionError(SnapshotError):
    """The document is newer than this code understands; it is left untouched."""


class StoreReadError(UnavailableError):
    """An OSError while reading a snapshot (EIO, EACCES...): the file could not be read at all."""
