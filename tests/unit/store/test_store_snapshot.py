"""Snapshot codecs: JSON/TOML encoding, schema_version validation and migration chains."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from volant.store.errors import (
    SnapshotDecodeError,
    SnapshotEncodeError,
    SnapshotMigrationError,
    SnapshotVersionError,
)
from volant.store.snapshot import SnapshotCodec, dump_json, dump_toml, load_json, load_toml


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    # v2 renamed "state" to "status".
    doc["status"] = doc.pop("state")
    return doc


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    # v3 split "ip" into ip + prefix length.
    address, _, prefix = doc.pop("ip").partition("/")
    return {**doc, "ip": address, "prefix": int(prefix or 32)}


VM_V3 = SnapshotCodec("vm-state", 3, {1: _v1_to_v2, 2: _v2_to_v3})


def test_dump_json_is_stable_sorted_and_newline_terminated() -> None:
    a = dump_json({"b": 1, "a": {"z": 1, "y": [1, 2]}, "ü": "é"})
    b = dump_json({"ü": "é", "a": {"y": [1, 2], "z": 1}, "b": 1})
    assert a == b
    assert a.endswith(b"}\n")
    text = a.decode()
    assert text.index('"a"') < text.index('"b"')
    assert "é" in text  # UTF-8, not \u escapes: readable
    assert load_json(a) == {"b": 1, "a": {"z": 1, "y": [1, 2]}, "ü": "é"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1, 2}])
def test_dump_json_rejects_what_json_cannot_carry(value: object) -> None:
    with pytest.raises(SnapshotEncodeError):
        dump_json({"x": value})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"a": 1', "invalid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"a": NaN}', "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_load_json_errors_are_typed(data: bytes, fragment: str) -> None:
    with pytest.raises(SnapshotDecodeError) as caught:
        load_json(data)
    assert fragment in caught.value.reason


def test_toml_drops_none_keys_at_any_depth() -> None:
    data = dump_toml({"name": "web", "gone": None, "cpu": {"cores": 2, "pin": None}})
    parsed = tomllib.loads(data.decode())
    assert parsed == {"name": "web", "cpu": {"cores": 2}}


def test_toml_refuses_none_in_a_list() -> None:
    with pytest.raises(SnapshotEncodeError) as caught:
        dump_toml({"ports": [80, None]})
    assert "$.ports" in caught.value.message


def test_load_toml_errors_are_typed() -> None:
    with pytest.raises(SnapshotDecodeError) as caught:
        load_toml(b"name = \n")
    assert "invalid TOML" in caught.value.reason
    with pytest.raises(SnapshotDecodeError):
        load_toml(b"\xc3\x28 = 1")


def test_encode_stamps_current_version_first() -> None:
    for fmt in ("json", "toml"):
        data = VM_V3.encode({"status": "running", "ip": "10.0.0.2", "prefix": 24}, fmt)
        decoded = VM_V3.decode(data, fmt)
        assert decoded.document == {
            "schema_version": 3,
            "status": "running",
            "ip": "10.0.0.2",
            "prefix": 24,
        }
        assert not decoded.migrated
    toml_text = VM_V3.encode({"status": "x"}, "toml").decode()
    assert toml_text.startswith("schema_version = 3\n")


def test_encode_refuses_a_foreign_version() -> None:
    with pytest.raises(SnapshotEncodeError):
        VM_V3.encode({"schema_version": 2, "status": "x"}, "json")
    with pytest.raises(SnapshotEncodeError):
        VM_V3.encode({"schema_version": True, "status": "x"}, "json")
    # The current version is accepted (owners re-write what they read).
    assert json.loads(VM_V3.encode({"schema_version": 3}, "json")) == {"schema_version": 3}


def test_migration_chain_v1_to_v3() -> None:
    v1 = json.dumps({"schema_version": 1, "state": "running", "ip": "10.1.0.5/16"}).encode()
    snapshot = VM_V3.decode(v1, "json")
    assert snapshot.migrated
    assert snapshot.stored_version == 1
    assert snapshot.document == {
        "schema_version": 3,
        "status": "running",
        "ip": "10.1.0.5",
        "prefix": 16,
    }


def test_migration_from_v2_runs_only_the_last_step() -> None:
    calls: list[int] = []

    def step(n: int) -> Any:
        def migrate(doc: dict[str, Any]) -> dict[str, Any]:
            calls.append(n)
            assert doc["schema_version"] == n  # each step sees its own input version
            return {**doc, f"step{n}": True}

        return migrate

    codec = SnapshotCodec("k", 4, {1: step(1), 2: step(2), 3: step(3)})
    snapshot = codec.decode(b'{"schema_version": 2}', "json")
    assert calls == [2, 3]
    assert snapshot.document == {"schema_version": 4, "step2": True, "step3": True}


def test_newer_version_is_refused() -> None:
    with pytest.raises(SnapshotVersionError) as caught:
        VM_V3.decode(b'{"schema_version": 4, "status": "running"}', "json")
    assert caught.value.details["stored_version"] == 4
    assert "newer" in caught.value.reason


@pytest.mark.parametrize(
    "doc",
    [
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"schema_version": "1"}',
        b'{"schema_version": 0}',
        b'{"schema_version": true}',
        b'{"schema_version": 1.0}',
    ],
)
def test_invalid_documents_are_decode_errors(doc: bytes) -> None:
    with pytest.raises(SnapshotDecodeError):
        VM_V3.decode(doc, "json")


def test_missing_or_failing_migration_is_a_migration_error() -> None:
    gap = SnapshotCodec("k", 3, {2: _v2_to_v3})
    with pytest.raises(SnapshotMigrationError) as caught:
        gap.decode(b'{"schema_version": 1, "state": "x"}', "json")
    assert "no migration from schema_version 1" in caught.value.reason

    with pytest.raises(SnapshotMigrationError) as caught:
        VM_V3.decode(b'{"schema_version": 1, "ip": "10.0.0.1"}', "json")  # no "state"
    assert "KeyError" in caught.value.reason

    def returns_a_list(doc: dict[str, Any]) -> Any:
        return [doc]

    not_a_dict = SnapshotCodec("k", 2, {1: returns_a_list})
    with pytest.raises(SnapshotMigrationError):
        not_a_dict.decode(b'{"schema_version": 1}', "json")


def test_codec_rejects_impossible_migrations() -> None:
    with pytest.raises(ValueError):
        SnapshotCodec("k", 2, {2: _v1_to_v2})
    with pytest.raises(ValueError):
        SnapshotCodec("k", 0)
