"""Relative state paths: only DNS-label components, one optional extension at the end."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from volant.errors import ValidationError
from volant.store import StateStore, validate_relpath
from volant.store.errors import InvalidStatePathError
from volant.store.snapshot import SnapshotCodec


@pytest.mark.parametrize(
    "relpath",
    [
        "vms/web-1/state.json",
        "vms/web-1/config.toml",
        "vms/web-1/history/3.toml",
        "deployments/api.toml",
        "plugins/nginx.json",
        "vms/web-1",
        "vms",
        "vms/" + "a" * 63 + "/state.json",
    ],
)
def test_valid_paths(relpath: str) -> None:
    assert validate_relpath(relpath) == PurePosixPath(relpath)


@pytest.mark.parametrize(
    "relpath",
    [
        "",
        "/etc/passwd",
        "/vms/web-1/state.json",
        "vms/../etc/state.json",
        "..",
        "vms/./web-1/state.json",
        "vms//web-1/state.json",
        "vms/web-1/",
        "vms/web\x00-1/state.json",
        "vms/web-1/state.json\x00",
        "vms/web\n1/state.json",
        "vms/web\x1b1/state.json",
        "vms/web\x7f1/state.json",
        "vms/web 1/state.json",
        "vms/Web-1/state.json",
        "vms/web_1/state.json",
        "vms/-web/state.json",
        "vms/" + "a" * 300 + "/state.json",
        "vms/" + "a" * 64 + "/state.json",
        "vms/web-1/" + "s" * 300 + ".json",
        "vms/web.1/state.json",
        "vms/web-1/state.tar.gz",
        "vms/web-1/state.",
        "vms/web-1/.json",
        "vms/web-1/state.JSON",
        "vms\\web-1\\state.json",
        "vms/wéb/state.json",
    ],
)
def test_invalid_paths_are_rejected(relpath: str) -> None:
    with pytest.raises(InvalidStatePathError) as caught:
        validate_relpath(relpath)
    assert isinstance(caught.value, ValidationError)
    assert caught.value.status == 400
    assert "\x00" not in caught.value.message
    assert "\n" not in caught.value.message


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidStatePathError):
        validate_relpath(None)
    with pytest.raises(InvalidStatePathError):
        validate_relpath(b"vms/a.json")


def test_store_refuses_invalid_paths_before_touching_disk(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    codec = SnapshotCodec("k", 1)
    outside = tmp_path / "escape.json"
    for relpath in ("../escape.json", "/tmp/escape.json", "vms/../../escape.json"):
        with pytest.raises(InvalidStatePathError):
            store.write(relpath, codec, {"a": 1})
        with pytest.raises(InvalidStatePathError):
            store.read(relpath, codec)
        with pytest.raises(InvalidStatePathError):
            store.delete(relpath)
    assert not outside.exists()
    with pytest.raises(InvalidStatePathError):
        store.write("vms/web-1/state.yaml", codec, {"a": 1})
    with pytest.raises(InvalidStatePathError):
        store.delete_tree("vms")
