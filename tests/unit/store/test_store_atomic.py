"""write_atomic: replacement, crash safety, typed errors on EIO/ENOSPC."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from store_helpers import failing_writer, fill_disk, temp_files

from volant.errors import OutOfSpaceError, UnavailableError
from volant.store import atomic
from volant.store.atomic import ensure_dir, remove_file, remove_tree, write_atomic
from volant.store.errors import StoreFullError, StoreWriteError


def test_write_creates_and_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"first\n")
    assert target.read_bytes() == b"first\n"
    write_atomic(target, b"second, longer content\n")
    assert target.read_bytes() == b"second, longer content\n"
    write_atomic(target, b"")
    assert target.read_bytes() == b""
    assert temp_files(tmp_path) == []


def test_write_applies_mode_despite_umask(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"x", mode=0o644)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, b"y", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_write_is_a_rename_not_an_in_place_update(tmp_path: Path) -> None:
    """A reader holding the old file keeps seeing the old bytes: the inode was swapped."""
    target = tmp_path / "state.json"
    write_atomic(target, b"old")
    with target.open("rb") as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        write_atomic(target, b"new")
        assert reader.read() == b"old"
    assert target.stat().st_ino != old_inode
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS, errno.EACCES])
def test_failure_mid_write_keeps_previous_content(tmp_path: Path, code: int) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"previous snapshot")
    with pytest.raises(StoreWriteError) as caught:
        write_atomic(target, b"a new snapshot that never lands", writer=failing_writer(code))
    assert target.read_bytes() == b"previous snapshot"
    assert temp_files(tmp_path) == []
    error = caught.value
    assert isinstance(error, UnavailableError)
    assert error.status == 503
    assert error.details["errno"] == code
    assert error.details["path"] == str(target)
    assert error.details["errno_name"] == errno.errorcode[code]


def test_monkeypatched_module_writer_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"kept")
    monkeypatch.setattr(atomic, "write_all", failing_writer(errno.EIO, after=2))
    with pytest.raises(StoreWriteError):
        write_atomic(target, b"lost")
    assert target.read_bytes() == b"kept"
    assert temp_files(tmp_path) == []


def test_injected_enospc_is_store_full(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"previous")
    with pytest.raises(StoreFullError) as caught:
        write_atomic(target, b"next", writer=failing_writer(errno.ENOSPC))
    assert isinstance(caught.value, OutOfSpaceError)
    assert caught.value.status == 507
    assert target.read_bytes() == b"previous"
    assert temp_files(tmp_path) == []


def test_fsync_failure_keeps_previous_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"previous")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreWriteError):
        write_atomic(target, b"next")
    monkeypatch.undo()
    assert target.read_bytes() == b"previous"
    assert temp_files(tmp_path) == []


def test_non_oserror_in_writer_still_removes_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"previous")

    def buggy_writer(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"next", writer=buggy_writer)
    assert target.read_bytes() == b"previous"
    assert temp_files(tmp_path) == []


def test_real_enospc_on_tiny_tmpfs(tiny_tmpfs: Path) -> None:
    target = tiny_tmpfs / "state.json"
    write_atomic(target, b'{"schema_version": 1, "status": "running"}\n')
    fill_disk(tiny_tmpfs)
    with pytest.raises(StoreFullError) as caught:
        write_atomic(target, b"x" * 16384)
    assert caught.value.details["errno"] == errno.ENOSPC
    assert target.read_bytes() == b'{"schema_version": 1, "status": "running"}\n'
    assert temp_files(tiny_tmpfs) == []


def test_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(StoreWriteError) as caught:
        write_atomic(tmp_path / "absent" / "state.json", b"x")
    assert caught.value.details["errno"] == errno.ENOENT


def test_ensure_dir_creates_parents_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    ensure_dir(target, mode=0o750)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert directory.is_dir()
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    ensure_dir(target)  # idempotent


def test_ensure_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"file")
    with pytest.raises(StoreWriteError):
        ensure_dir(tmp_path / "a")
    with pytest.raises(StoreWriteError):
        ensure_dir(tmp_path / "a" / "b")


def test_remove_file_and_tree_tolerate_absence(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"x")
    assert remove_file(target) is True
    assert not target.exists()
    assert remove_file(target) is False

    tree = tmp_path / "vms" / "web-1"
    (tree / "history").mkdir(parents=True)
    (tree / "history" / "1.toml").write_bytes(b"a = 1\n")
    assert remove_tree(tree) is True
    assert not tree.exists()
    assert (tmp_path / "vms").is_dir()
    assert remove_tree(tree) is False
