"""The cloud-init seed as kestrel sees it: found by label, mounted read-only, summarised."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kestrel_testutil import make_ext4, make_fat32

from kestrel import syscalls
from kestrel.blockdev import BlockDevice, Filesystem, list_block_devices
from kestrel.config import AgentConfig
from kestrel.seed import SeedMount, find_seed, summarize_documents
from volant.cloudinit import SeedDocuments, build_iso


def _device(name: str, fstype: str | None, label: str | None) -> BlockDevice:
    return BlockDevice(name, f"/dev/{name}", 1 << 20, Filesystem(fstype, label))


def _fake_root(tmp_path: Path, disks: dict[str, Path]) -> Path:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    for name, image in disks.items():
        (root / "sys/block" / name).mkdir(parents=True)
        (root / "sys/block" / name / "size").write_text("2048\n")
        image.rename(root / "dev" / name)
    return root


def test_find_seed_wants_a_seed_filesystem_and_label() -> None:
    devices = [
        _device("vda", "ext4", "cidata"),  # a root disk that happens to carry the label
        _device("vdb", "vfat", "DATA"),
        _device("vdc", "iso9660", "cidata"),
    ]
    assert find_seed(devices) == devices[2]
    assert find_seed(devices[:2]) is None
    assert find_seed([_device("vdd", "vfat", "CIDATA")]) is not None


def test_summarize_documents_hashes_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(b"#cloud-config\nhostname: a\n")
    (tmp_path / "meta-data").write_bytes(b"instance-id: i-1\n")
    found = summarize_documents(tmp_path)
    assert set(found) == {"user-data", "meta-data"}
    assert found["user-data"] == {
        "size_bytes": 26,
        "sha256": hashlib.sha256(b"#cloud-config\nhostname: a\n").hexdigest(),
    }


def test_a_real_seed_image_is_found_and_mounted_read_only(tmp_path: Path) -> None:
    """volantd's own ISO builder output, probed from a fake /dev, mounted with a fake mount."""
    iso = tmp_path / "seed.img"
    build_iso(iso, SeedDocuments(user_data="#cloud-config\n", meta_data="instance-id: x\n"))
    root_image = tmp_path / "root.img"
    make_ext4(root_image, "volant-root")
    root = _fake_root(tmp_path, {"vda": root_image, "vdb": iso})
    config = AgentConfig(sys=root / "sys", dev=root / "dev", pid1=True)
    mountpoint = tmp_path / "seed-mount"
    calls: list[tuple[str, str, str, int, str]] = []

    def fake_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
        calls.append((source, target, fstype, flags, data))
        (Path(target) / "user-data").write_text("#cloud-config\n")  # what the kernel would show

    seed = SeedMount(config, mountpoint=mountpoint, mount=fake_mount)
    info = seed.describe()
    assert info is not None
    assert info["device"] == str(root / "dev/vdb")
    assert (info["fstype"], info["label"]) == ("iso9660", "cidata")
    assert info["error"] is None
    expected = hashlib.sha256(b"#cloud-config\n").hexdigest()
    assert info["documents"]["user-data"]["sha256"] == expected
    (source, target, fstype, flags, _) = calls[0]
    assert (source, target, fstype) == (str(root / "dev/vdb"), str(mountpoint), "iso9660")
    assert flags & syscalls.MS_RDONLY and flags & syscalls.MS_NOEXEC and flags & syscalls.MS_NOSUID
    seed.describe(list_block_devices(config.sys, config.dev))
    assert len(calls) == 1  # mounted once


def test_no_seed_means_none_and_no_mount(tmp_path: Path) -> None:
    root_image = tmp_path / "root.img"
    make_ext4(root_image, "volant-root")
    root = _fake_root(tmp_path, {"vda": root_image})
    config = AgentConfig(sys=root / "sys", dev=root / "dev", pid1=True)

    def refuse(*_args: object) -> None:
        raise AssertionError("nothing to mount")

    assert SeedMount(config, mountpoint=tmp_path / "m", mount=refuse).describe() is None


def test_a_failed_mount_is_reported_and_retried(tmp_path: Path) -> None:
    fat = tmp_path / "fat.img"
    make_fat32(fat, "CIDATA")
    root = _fake_root(tmp_path, {"vdb": fat})
    config = AgentConfig(sys=root / "sys", dev=root / "dev", pid1=True)
    attempts: list[str] = []

    def failing(source: str, *_rest: object) -> None:
        attempts.append(source)
        raise OSError(19, "No such device")

    seed = SeedMount(config, mountpoint=tmp_path / "m", mount=failing)
    info = seed.describe()
    assert info is not None and info["fstype"] == "vfat"
    assert "No such device" in info["error"] and info["documents"] == {}
    seed.describe()
    assert len(attempts) == 2


def test_outside_pid1_nothing_is_mounted(tmp_path: Path) -> None:
    iso = tmp_path / "seed.img"
    build_iso(iso, SeedDocuments(user_data="#cloud-config\n", meta_data="instance-id: x\n"))
    root = _fake_root(tmp_path, {"vdb": iso})
    config = AgentConfig(sys=root / "sys", dev=root / "dev", pid1=False)

    def refuse(*_args: object) -> None:
        raise AssertionError("kestrel must not mount on a host")

    info = SeedMount(config, mountpoint=tmp_path / "m", mount=refuse).describe()
    assert info is not None and info["documents"] == {} and info["error"] is None


def test_the_first_mount_waits_for_the_seed_modules(tmp_path: Path) -> None:
    """isofs/vfat are loaded after the API listens; an early info request waits for them."""
    import threading
    import time

    from kestrel.latch import Latch

    iso = tmp_path / "seed.img"
    build_iso(iso, SeedDocuments(user_data="#cloud-config\n", meta_data="instance-id: x\n"))
    root = _fake_root(tmp_path, {"vdb": iso})
    config = AgentConfig(sys=root / "sys", dev=root / "dev", pid1=True)
    loaded = Latch()
    mounted_at: list[float] = []

    def fake_mount(*_args: object) -> None:
        mounted_at.append(time.monotonic())

    seed = SeedMount(config, mountpoint=tmp_path / "m", mount=fake_mount, modules_loaded=loaded)
    answers: list[object] = []
    reader = threading.Thread(target=lambda: answers.append(seed.describe()))
    reader.start()
    time.sleep(0.2)
    assert mounted_at == [] and answers == []  # still waiting for the modules
    released = time.monotonic()
    loaded.set()
    reader.join(5)
    assert len(mounted_at) == 1 and mounted_at[0] >= released
    assert isinstance(answers[0], dict) and answers[0]["error"] is None
