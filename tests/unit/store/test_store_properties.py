"""Property tests: arbitrary bytes never escape load_all; JSON-able documents round-trip."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from volant.store import SnapshotCodec, StateStore, dump_toml, load_toml

CODEC = SnapshotCodec("prop", 2, {1: lambda doc: {**doc, "migrated": True}})

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_documents = st.dictionaries(
    st.text(max_size=8).filter(lambda key: key != "schema_version"), json_values, max_size=6
)

SEEDS = [
    b'{"schema_version": 2, "a": 1}',
    b'{"schema_version": 1}',
    b'{"schema_version": 3}',
    b"schema_version = 2\n",
    b"schema_version = 1\n[t]\nx = 1\n",
    b"\xef\xbb\xbf{}",
]
# Valid documents (current, old, newer), cut anywhere and followed by random bytes.
mutated_seeds = st.sampled_from(SEEDS).flatmap(
    lambda seed: st.tuples(st.integers(0, len(seed)), st.binary(max_size=8)).map(
        lambda cut: seed[: cut[0]] + cut[1]
    )
)
file_contents = st.binary(max_size=200) | st.sampled_from(SEEDS) | mutated_seeds
extensions = st.sampled_from(["json", "toml"])


def _scratch_dir() -> Path:
    """tmpfs when available: these properties are about parsing, and fsync there is free."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="volant-prop-", dir=shm if shm.is_dir() else None))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=st.lists(st.tuples(file_contents, extensions), min_size=1, max_size=4))
def test_arbitrary_bytes_never_escape_load_all(contents: list[tuple[bytes, str]]) -> None:
    root = _scratch_dir()
    try:
        store = StateStore(root)
        for index, (data, ext) in enumerate(contents):
            (root / "plugins" / f"p{index}.{ext}").write_bytes(data)
        json_result = store.load_all("plugins", "*.json", CODEC)
        toml_result = store.load_all("plugins", "*.toml", CODEC)
        for result in (json_result, toml_result):
            seen = (
                set(result.documents)
                | {item.relpath for item in result.quarantined}
                | {item.relpath for item in result.refused}
            )
            # Every file is accounted for exactly once, in exactly one bucket.
            assert len(seen) == len(result.documents) + len(result.quarantined) + len(
                result.refused
            )
            for document in result.documents.values():
                assert document["schema_version"] == 2
        expected = {f"plugins/p{index}.{ext}" for index, (_, ext) in enumerate(contents)}
        accounted = (
            set(json_result.documents)
            | set(toml_result.documents)
            | {item.relpath for item in json_result.quarantined + toml_result.quarantined}
            | {item.relpath for item in json_result.refused + toml_result.refused}
        )
        assert accounted == expected
        # What was quarantined left the directory; what loaded or was refused stayed.
        for item in json_result.quarantined + toml_result.quarantined:
            assert item.moved_to is not None and item.moved_to.exists()
            assert not (root / item.relpath).exists()
        for relpath in set(json_result.documents) | set(toml_result.documents):
            assert (root / relpath).exists()
    finally:
        shutil.rmtree(root)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_documents, ext=extensions)
def test_documents_round_trip_through_the_store(doc: dict[str, Any], ext: str) -> None:
    root = _scratch_dir()
    try:
        store = StateStore(root)
        relpath = f"plugins/doc.{ext}"
        # TOML cannot carry None inside a list (a unit test covers the refusal).
        assume(ext == "json" or not _has_none_in_list(doc))
        store.write(relpath, CODEC, doc)
        expected = {"schema_version": 2, **(_drop_none(doc) if ext == "toml" else doc)}
        assert store.read(relpath, CODEC) == expected
    finally:
        shutil.rmtree(root)


@given(doc=json_documents)
def test_toml_dump_load_is_identity_without_none(doc: dict[str, Any]) -> None:
    assume(not _has_none_in_list(doc))
    assert load_toml(dump_toml(doc)) == _drop_none(doc)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value


def _has_none_in_list(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_none_in_list(item) for item in value.values())
    if isinstance(value, list):
        return any(item is None or _has_none_in_list(item) for item in value)
    return False
