"""Durable state: atomic JSON/TOML snapshots with schema versions and quarantine.

See ``volant.store.store`` for the layout and the one-writer-per-file rule.
"""

from volant.store.atomic import ensure_dir, fsync_dir, remove_file, remove_tree, write_atomic
from volant.store.errors import (
    InvalidStatePathError,
    SnapshotDecodeError,
    SnapshotEncodeError,
    SnapshotError,
    SnapshotMigrationError,
    SnapshotVersionError,
    StoreFullError,
    StoreReadError,
    StoreWriteError,
)
from volant.store.paths import validate_relpath
from volant.store.snapshot import (
    SCHEMA_KEY,
    Document,
    Migration,
    Snapshot,
    SnapshotCodec,
    dump_json,
    dump_toml,
    load_json,
    load_toml,
)
from volant.store.store import LAYOUT_DIRS, LoadResult, QuarantinedFile, RefusedFile, StateStore

__all__ = [
    "LAYOUT_DIRS",
    "SCHEMA_KEY",
    "Document",
    "InvalidStatePathError",
    "LoadResult",
    "Migration",
    "QuarantinedFile",
    "RefusedFile",
    "Snapshot",
    "SnapshotCodec",
    "SnapshotDecodeError",
    "SnapshotEncodeError",
    "SnapshotError",
    "SnapshotMigrationError",
    "SnapshotVersionError",
    "StateStore",
    "StoreFullError",
    "StoreReadError",
    "StoreWriteError",
    "dump_json",
    "dump_toml",
    "ensure_dir",
    "fsync_dir",
    "load_json",
    "load_toml",
    "remove_file",
    "remove_tree",
    "validate_relpath",
    "write_atomic",
]
