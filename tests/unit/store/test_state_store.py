"""StateStore: layout, typed read/write, load_all with quarantine, failure behaviour."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from store_helpers import failing_writer, fill_disk, temp_files
from structlog.testing import capture_logs

from volant.store import (
    LAYOUT_DIRS,
    SnapshotCodec,
    SnapshotDecodeError,
    SnapshotVersionError,
    StateStore,
    StoreFullError,
    StoreWriteError,
)


def _rename_restart_count(doc: dict[str, Any]) -> dict[str, Any]:
    doc["restarts"] = doc.pop("restart_count", 0)
    return doc


VM_STATE = SnapshotCodec("vm-state", 2, {1: _rename_restart_count})
DEPLOYMENT = SnapshotCodec("deployment", 1)


def _vm_doc(name: str) -> dict[str, Any]:
    return {"name": name, "status": "running", "pid": 4242, "ip": "10.0.0.2", "restarts": 0}


def test_layout_is_created_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "lib" / "volant"
    store = StateStore(state_dir)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in LAYOUT_DIRS:
        assert (state_dir / name).is_dir()
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o700
    assert store.quarantine_dir == state_dir / "quarantine"
    StateStore(state_dir)  # reopening an existing layout is fine


def test_write_read_round_trip_json_and_toml(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write("vms/web-1/state.json", VM_STATE, _vm_doc("web-1"))
    assert store.read("vms/web-1/state.json", VM_STATE) == {"schema_version": 2, **_vm_doc("web-1")}
    on_disk = json.loads((tmp_path / "vms" / "web-1" / "state.json").read_text())
    assert on_disk["schema_version"] == 2
    assert stat.S_IMODE((tmp_path / "vms" / "web-1" / "state.json").stat().st_mode) == 0o600

    config = {"replicas": 3, "plugin": "nginx", "note": None, "config": {"cpu": 2}}
    store.write("deployments/api.toml", DEPLOYMENT, config)
    text = (tmp_path / "deployments" / "api.toml").read_text()
    assert text.startswith("schema_version = 1\n")
    assert store.read("deployments/api.toml", DEPLOYMENT) == {
        "schema_version": 1,
        "replicas": 3,
        "plugin": "nginx",
        "config": {"cpu": 2},
    }


def test_read_absent_is_none_and_delete_tolerates_absence(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.read("vms/none/state.json", VM_STATE) is None
    assert store.delete("vms/none/state.json") is False
    store.write("plugins/nginx.json", DEPLOYMENT, {"enabled": True})
    assert store.exists("plugins/nginx.json")
    assert store.delete("plugins/nginx.json") is True
    assert store.read("plugins/nginx.json", DEPLOYMENT) is None


def test_delete_tree_removes_a_vm_directory(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write("vms/web-1/state.json", VM_STATE, _vm_doc("web-1"))
    store.write("vms/web-1/history/1.toml", DEPLOYMENT, {"cpu": 1})
    store.write("vms/web-2/state.json", VM_STATE, _vm_doc("web-2"))
    assert store.delete_tree("vms/web-1") is True
    assert store.list_dir("vms") == ["web-2"]
    assert store.delete_tree("vms/web-1") is False


def test_read_reports_migration_and_raises_on_corruption(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    path = tmp_path / "vms" / "old" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema_version": 1, "name": "old", "restart_count": 4}))
    snapshot = store.read_snapshot("vms/old/state.json", VM_STATE)
    assert snapshot is not None
    assert snapshot.migrated
    assert snapshot.document == {"schema_version": 2, "name": "old", "restarts": 4}
    # The owner rewrites it; afterwards it is current.
    store.write("vms/old/state.json", VM_STATE, snapshot.document)
    again = store.read_snapshot("vms/old/state.json", VM_STATE)
    assert again is not None
    assert not again.migrated

    path.write_bytes(b"{not json")
    with pytest.raises(SnapshotDecodeError) as caught:
        store.read("vms/old/state.json", VM_STATE)
    assert caught.value.details["path"] == "vms/old/state.json"
    assert path.exists()  # a single read never moves files


def _write_raw(root: Path, relpath: str, data: bytes) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


CORRUPTIONS: dict[str, tuple[bytes, str]] = {
    "invalid-json": (b'{"schema_version": 2, "name": ', "invalid JSON"),
    "truncated": (b'{"schema_version": 2, "name": "trunc", "status": "runn', "invalid JSON"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
    "not-a-dict": (b'[{"schema_version": 2}]', "expected a table"),
    "no-version": (b'{"name": "x", "status": "running"}', "missing schema_version"),
    "bad-version": (b'{"schema_version": "two"}', "invalid schema_version"),
    "failed-migration": (b'{"schema_version": 1, "name": "x"}', "migration"),
    "empty": (b"", "invalid JSON"),
}


def test_load_all_quarantines_each_corruption_and_loads_the_rest(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for name in ("good-1", "good-2"):
        store.write(f"vms/{name}/state.json", VM_STATE, _vm_doc(name))
    _write_raw(tmp_path, "vms/old/state.json", b'{"schema_version": 1, "restart_count": 2}')
    for name, (data, _) in CORRUPTIONS.items():
        _write_raw(tmp_path, f"vms/{name}/state.json", data)
    # The migration needs restart_count: "old" has it, "failed-migration" does not.
    failing = SnapshotCodec("vm-state", 2, {1: lambda doc: {**doc, "x": doc["restart_count"]}})

    with capture_logs() as logs:
        result = store.load_all("vms", "*/state.json", failing)

    warned = {entry["path"] for entry in logs if entry["event"] == "snapshot_quarantined"}
    assert warned == {f"vms/{name}/state.json" for name in CORRUPTIONS}
    assert all(entry["log_level"] == "warning" for entry in logs)
    assert set(result.documents) == {
        "vms/good-1/state.json",
        "vms/good-2/state.json",
        "vms/old/state.json",
    }
    assert result.documents["vms/good-1/state.json"]["name"] == "good-1"
    assert result.migrated == ["vms/old/state.json"]
    assert result.refused == []
    by_path = {item.relpath: item for item in result.quarantined}
    assert set(by_path) == {f"vms/{name}/state.json" for name in CORRUPTIONS}
    for name, (data, fragment) in CORRUPTIONS.items():
        item = by_path[f"vms/{name}/state.json"]
        assert fragment in item.reason, (name, item.reason)
        assert item.moved_to is not None
        assert item.moved_to.parent == tmp_path / "quarantine"
        assert item.moved_to.name.endswith(f"-vms__{name}__state.json")
        assert item.moved_to.read_bytes() == data  # moved, not rewritten
        reason_text = item.moved_to.with_name(item.moved_to.name + ".reason").read_text()
        assert f"path: vms/{name}/state.json" in reason_text
        assert fragment in reason_text
        assert not (tmp_path / "vms" / name / "state.json").exists()

    # A second pass finds only the good files: quarantine is not re-scanned or re-moved.
    second = store.load_all("vms", "*/state.json", failing)
    assert second.quarantined == []
    assert len(second.documents) == 3


def test_load_all_quarantines_invalid_toml(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write("deployments/api.toml", DEPLOYMENT, {"replicas": 2})
    _write_raw(tmp_path, "deployments/broken.toml", b"schema_version = 1\nreplicas = [1,\n")
    _write_raw(tmp_path, "deployments/dup.toml", b"schema_version = 1\na = 1\na = 2\n")
    result = store.load_all("deployments", "*.toml", DEPLOYMENT)
    assert list(result.documents) == ["deployments/api.toml"]
    assert sorted(item.relpath for item in result.quarantined) == [
        "deployments/broken.toml",
        "deployments/dup.toml",
    ]
    assert all("invalid TOML" in item.reason for item in result.quarantined)
    quarantined = sorted(path.name for path in (tmp_path / "quarantine").iterdir())
    assert len(quarantined) == 4
    assert sum(name.endswith(".reason") for name in quarantined) == 2


def test_load_all_refuses_newer_versions_without_moving_them(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    _write_raw(tmp_path, "plugins/future.json", b'{"schema_version": 9, "name": "future"}')
    store.write("plugins/now.json", DEPLOYMENT, {"name": "now"})
    result = store.load_all("plugins", "*.json", DEPLOYMENT)
    assert list(result.documents) == ["plugins/now.json"]
    assert [item.relpath for item in result.refused] == ["plugins/future.json"]
    assert result.quarantined == []
    assert (tmp_path / "plugins" / "future.json").exists()
    with pytest.raises(SnapshotVersionError):
        store.read("plugins/future.json", DEPLOYMENT)


def test_load_all_quarantines_bad_names_and_symlinks_and_skips_temp_files(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    store.write("plugins/ok.json", DEPLOYMENT, {"name": "ok"})
    _write_raw(tmp_path, "plugins/Bad Name.json", b'{"schema_version": 1}')
    with open(os.path.join(os.fsencode(tmp_path), b"plugins", b"bad\xff\n.json"), "wb") as raw:
        raw.write(b'{"schema_version": 1}')
    secret = tmp_path / "secret.json"
    secret.write_text('{"schema_version": 1, "token": "s3cret"}')
    os.symlink(secret, tmp_path / "plugins" / "link.json")
    _write_raw(tmp_path, "plugins/.ok.json.123.abcdef.tmp", b"half a wri")
    (tmp_path / "plugins" / "dir.json").mkdir()

    result = store.load_all("plugins", "*.json", DEPLOYMENT)

    assert list(result.documents) == ["plugins/ok.json"]
    reasons = {item.relpath: item.reason for item in result.quarantined}
    undecodable = "plugins/" + os.fsdecode(b"bad\xff\n.json")
    assert set(reasons) == {"plugins/Bad Name.json", "plugins/link.json", undecodable}
    assert "invalid file name" in reasons["plugins/Bad Name.json"]
    assert "unreadable" in reasons["plugins/link.json"]
    assert secret.exists()  # the symlink was moved, never followed
    names = os.listdir(tmp_path / "quarantine")
    assert any(name.endswith("plugins__Bad_Name.json") for name in names)
    assert any(name.endswith("plugins__bad__.json") for name in names)
    reason_files = [name for name in names if name.endswith("bad__.json.reason")]
    reason_lines = (tmp_path / "quarantine" / reason_files[0]).read_text().splitlines()
    assert reason_lines[0] == "path: plugins/bad\\udcff\\n.json"
    assert len(reason_lines) == 4
    assert (tmp_path / "plugins" / ".ok.json.123.abcdef.tmp").exists()

    assert store.remove_stale_temp_files() == [tmp_path / "plugins" / ".ok.json.123.abcdef.tmp"]
    assert temp_files(tmp_path) == []


def test_load_all_on_missing_subdir_is_empty(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    result = store.load_all("vms/web-1/history", "*.toml", DEPLOYMENT)
    assert result.documents == {} and result.quarantined == []


def test_load_all_survives_a_failing_quarantine(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    _write_raw(tmp_path, "plugins/bad.json", b"garbage")
    (tmp_path / "quarantine").rmdir()
    (tmp_path / "quarantine").write_bytes(b"a file where the quarantine dir should be")
    result = store.load_all("plugins", "*.json", DEPLOYMENT)
    assert len(result.quarantined) == 1
    assert result.quarantined[0].moved_to is None
    assert (tmp_path / "plugins" / "bad.json").exists()


def test_quarantine_names_do_not_collide(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    targets = []
    for _ in range(3):
        _write_raw(tmp_path, "plugins/x.json", b"bad")
        targets.append(store.quarantine("plugins/x.json", "operator said so"))
    assert len(set(targets)) == 3
    assert all(target.read_bytes() == b"bad" for target in targets)


def test_injected_eio_leaves_previous_snapshot(tmp_path: Path) -> None:
    good = StateStore(tmp_path)
    good.write("vms/web-1/state.json", VM_STATE, _vm_doc("web-1"))
    broken = StateStore(tmp_path, writer=failing_writer(errno.EIO, after=20))
    with pytest.raises(StoreWriteError):
        broken.write("vms/web-1/state.json", VM_STATE, {**_vm_doc("web-1"), "status": "stopped"})
    assert good.read("vms/web-1/state.json", VM_STATE) == {"schema_version": 2, **_vm_doc("web-1")}
    assert temp_files(tmp_path) == []


def test_enospc_on_tiny_tmpfs_keeps_previous_snapshot(tiny_tmpfs: Path) -> None:
    store = StateStore(tiny_tmpfs / "state")
    store.write("vms/web-1/state.json", VM_STATE, _vm_doc("web-1"))
    fill_disk(tiny_tmpfs)
    big = {**_vm_doc("web-1"), "status": "stopped", "padding": "x" * 20000}
    with pytest.raises(StoreFullError) as caught:
        store.write("vms/web-1/state.json", VM_STATE, big)
    assert caught.value.status == 507
    assert store.read("vms/web-1/state.json", VM_STATE) == {"schema_version": 2, **_vm_doc("web-1")}
    assert temp_files(tiny_tmpfs) == []


async def test_async_wrappers_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    await store.awrite("vms/web-1/state.json", VM_STATE, _vm_doc("web-1"))
    assert await store.aread("vms/web-1/state.json", VM_STATE) == {
        "schema_version": 2,
        **_vm_doc("web-1"),
    }
    result = await store.aload_all("vms", "*/state.json", VM_STATE)
    assert list(result.documents) == ["vms/web-1/state.json"]
    assert await store.adelete("vms/web-1/state.json") is True
    assert await store.aread("vms/web-1/state.json", VM_STATE) is None


def test_list_dir_hides_temp_files_and_invalid_names(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write("vms/web-2/state.json", VM_STATE, _vm_doc("web-2"))
    store.write("vms/web-1/state.json", VM_STATE, _vm_doc("web-1"))
    (tmp_path / "vms" / "Not Valid").mkdir()
    (tmp_path / "vms" / ".web-3.json.1.abc.tmp").write_bytes(b"")
    assert store.list_dir("vms") == ["web-1", "web-2"]
    assert store.list_dir("vms/web-1") == ["state.json"]
    assert store.list_dir("vms/absent") == []
