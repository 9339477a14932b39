"""Snapshot documents: JSON/TOML codecs and schema versions with step-wise migration.

Every snapshot is a table (dict) with an integer ``schema_version`` at the top
level. A ``SnapshotCodec`` knows one kind of document: its current version and
the migrations ``n -> n+1``. Loading an older document runs the chain and says
so (``Snapshot.migrated``) so the file's single owner can rewrite it; a newer
document is refused with ``SnapshotVersionError`` and left alone, so running an
older daemon never destroys what a newer one wrote.

Formats: JSON for machine state (sorted keys, two-space indent, trailing
newline, no NaN/Infinity: stable bytes, readable diffs); TOML for files people
read and edit. TOML has no null, so ``dump_toml`` drops every key whose value
is ``None`` (at any depth); ``None`` inside a list cannot be represented and is
an error. Loading such a file gives the key back as absent, so owners should
treat "absent" and "None" the same.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import tomli_w

from volant.store.errors import (
    SnapshotDecodeError,
    SnapshotEncodeError,
    SnapshotMigrationError,
    SnapshotVersionError,
)

Document = dict[str, Any]
Migration = Callable[[Document], Document]
Format = Literal["json", "toml"]

SCHEMA_KEY = "schema_version"
FORMATS: dict[str, Format] = {".json": "json", ".toml": "toml"}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def dump_json(doc: Mapping[str, Any]) -> bytes:
    """Serialise to UTF-8 JSON with stable key order and a trailing newline."""
    try:
        text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:  # unsupported type, NaN, lone surrogate
        raise SnapshotEncodeError(f"cannot encode JSON: {exc}") from exc


def load_json(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly (no NaN/Infinity); raises ``SnapshotDecodeError``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotDecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise SnapshotDecodeError(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise SnapshotDecodeError("invalid JSON: nested too deeply") from exc


def _drop_none(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {
            key: _drop_none(item, f"{where}.{key}")
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, list | tuple):
        if any(item is None for item in value):
            raise SnapshotEncodeError(f"cannot encode TOML: None inside the list at {where}")
        return [_drop_none(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def dump_toml(doc: Mapping[str, Any]) -> bytes:
    """Serialise to TOML, dropping keys whose value is None (TOML has no null)."""
    cleaned = _drop_none(doc, "$")
    try:
        return tomli_w.dumps(cleaned).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SnapshotEncodeError(f"cannot encode TOML: {exc}") from exc


def load_toml(data: bytes) -> Document:
    """Parse UTF-8 TOML; raises ``SnapshotDecodeError``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotDecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SnapshotDecodeError(f"invalid TOML: {exc}") from exc
    except RecursionError as exc:
        raise SnapshotDecodeError("invalid TOML: nested too deeply") from exc


def dump(doc: Mapping[str, Any], fmt: Format) -> bytes:
    return dump_json(doc) if fmt == "json" else dump_toml(doc)


def load(data: bytes, fmt: Format) -> Any:
    return load_json(data) if fmt == "json" else load_toml(data)


@attrs.frozen
class Snapshot:
    """A decoded document (always at the codec's current version, ``schema_version`` included)."""

    document: Document
    stored_version: int
    current_version: int

    @property
    def migrated(self) -> bool:
        """True when the file held an older version: its owner should rewrite it."""
        return self.stored_version != self.current_version


class SnapshotCodec:
    """Encodes and decodes one kind of snapshot, migrating old versions on load.

    ``migrations[n]`` takes a version-``n`` document and returns the version
    ``n+1`` content; the codec stamps ``schema_version`` itself after each step.
    """

    def __init__(
        self,
        kind: str,
        current_version: int,
        migrations: Mapping[int, Migration] | None = None,
    ) -> None:
        if isinstance(current_version, bool) or current_version < 1:
            raise ValueError("current_version must be an integer >= 1")
        steps = dict(migrations or {})
        unknown = [version for version in steps if not 1 <= version < current_version]
        if unknown:
            raise ValueError(
                f"{kind}: migrations for versions {unknown} cannot lead to "
                f"version {current_version}"
            )
        self.kind = kind
        self.current_version = current_version
        self.migrations: dict[int, Migration] = steps

    def __repr__(self) -> str:
        return f"SnapshotCodec({self.kind!r}, v{self.current_version})"

    def stamp(self, doc: Mapping[str, Any]) -> Document:
        """Return ``doc`` with ``schema_version`` set to the current version (placed first)."""
        stored = doc.get(SCHEMA_KEY, self.current_version)
        if stored != self.current_version or isinstance(stored, bool):
            raise SnapshotEncodeError(
                f"{self.kind}: refusing to write schema_version {stored!r}; "
                f"this code writes version {self.current_version}",
                kind=self.kind,
            )
        rest = {key: value for key, value in doc.items() if key != SCHEMA_KEY}
        return {SCHEMA_KEY: self.current_version, **rest}

    def encode(self, doc: Mapping[str, Any], fmt: Format) -> bytes:
        return dump(self.stamp(doc), fmt)

    def decode(self, data: bytes, fmt: Format) -> Snapshot:
        """Parse, validate and migrate; raises a ``SnapshotError`` subclass on any problem."""
        return self.upgrade(load(data, fmt))

    def upgrade(self, raw: Any) -> Snapshot:
        """Validate an already parsed document and migrate it to the current version."""
        if not isinstance(raw, dict):
            raise SnapshotDecodeError(
                f"{self.kind}: expected a table at top level, got {type(raw).__name__}",
                kind=self.kind,
            )
        if SCHEMA_KEY not in raw:
            raise SnapshotDecodeError(f"{self.kind}: missing schema_version", kind=self.kind)
        stored = raw[SCHEMA_KEY]
        if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
            raise SnapshotDecodeError(
                f"{self.kind}: invalid schema_version {stored!r} (expected an integer >= 1)",
                kind=self.kind,
            )
        if stored > self.current_version:
            raise SnapshotVersionError(
                f"{self.kind}: schema_version {stored} is newer than this code understands "
                f"(up to {self.current_version}); left untouched",
                kind=self.kind,
                stored_version=stored,
                current_version=self.current_version,
            )
        doc: Document = raw
        for version in range(stored, self.current_version):
            doc = self._step(doc, version)
        return Snapshot(document=doc, stored_version=stored, current_version=self.current_version)

    def _step(self, doc: Document, version: int) -> Document:
        migration = self.migrations.get(version)
        if migration is None:
            raise SnapshotMigrationError(
                f"{self.kind}: no migration from schema_version {version} to {version + 1}",
                kind=self.kind,
                from_version=version,
            )
        try:
            result = migration(dict(doc))
        except Exception as exc:
            raise SnapshotMigrationError(
                f"{self.kind}: migration {version}->{version + 1} failed: "
                f"{type(exc).__name__}: {exc}",
                kind=self.kind,
                from_version=version,
            ) from exc
        if not isinstance(result, dict):
            raise SnapshotMigrationError(
                f"{self.kind}: migration {version}->{version + 1} returned "
                f"{type(result).__name__}, not a table",
                kind=self.kind,
                from_version=version,
            )
        rest = {key: value for key, value in result.items() if key != SCHEMA_KEY}
        return {SCHEMA_KEY: version + 1, **rest}
