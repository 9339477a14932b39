"""Superblock probing and the initramfs/rootfs/auto decision on fake block devices."""

from __future__ import annotations

from pathlib import Path

import pytest
from kestrel_testutil import make_blank, make_ext4, make_fat16, make_fat32, make_iso, make_xfs

from kestrel.blockdev import list_block_devices, probe
from kestrel.bootmode import BootModeError, boot_mode, choose_root


def test_probe_real_ext4_image(tmp_path: Path) -> None:
    image = tmp_path / "root.img"
    make_ext4(image, "volant-root")
    found = probe(image)
    assert found.type == "ext4"
    assert found.label == "volant-root"
    assert found.root_capable


def test_probe_seed_and_other_formats(tmp_path: Path) -> None:
    make_iso(tmp_path / "iso", "cidata")
    make_fat32(tmp_path / "fat32", "CIDATA")
    make_fat16(tmp_path / "fat16", "DATA")
    make_xfs(tmp_path / "xfs", "root")
    make_blank(tmp_path / "blank")
    assert (probe(tmp_path / "iso").type, probe(tmp_path / "iso").label) == ("iso9660", "cidata")
    assert (probe(tmp_path / "fat32").type, probe(tmp_path / "fat32").label) == ("vfat", "CIDATA")
    assert (probe(tmp_path / "fat16").type, probe(tmp_path / "fat16").label) == ("vfat", "DATA")
    assert (probe(tmp_path / "xfs").type, probe(tmp_path / "xfs").label) == ("xfs", "root")
    assert probe(tmp_path / "blank").type is None
    assert probe(tmp_path / "missing").type is None
    assert not probe(tmp_path / "iso").root_capable
    assert probe(tmp_path / "xfs").root_capable


def test_ext4_labelled_cidata_is_not_root(tmp_path: Path) -> None:
    make_ext4(tmp_path / "vda", "cidata")
    assert probe(tmp_path / "vda").type == "ext4"
    assert not probe(tmp_path / "vda").root_capable
    assert choose_root({"volant.boot": "auto"}, tmp_path) is None


def test_boot_mode_parsing() -> None:
    assert boot_mode({}) == "auto"
    assert boot_mode({"volant.boot": "RootFS"}) == "rootfs"
    assert boot_mode({"volant.boot": "initramfs"}) == "initramfs"
    assert boot_mode({"volant.boot": "nonsense"}) == "auto"


def test_auto_with_only_a_seed_iso_stays_on_initramfs(tmp_path: Path) -> None:
    # The cloud-init seed is attached as the first disk: upstream would mount it as root.
    make_iso(tmp_path / "vda", "cidata")
    assert choose_root({}, tmp_path) is None


def test_auto_skips_seed_and_blank_data_disk_and_picks_the_root(tmp_path: Path) -> None:
    make_fat32(tmp_path / "vda", "CIDATA")
    make_blank(tmp_path / "vdb")
    make_ext4(tmp_path / "vdc", "volant-root")
    choice = choose_root({"volant.boot": "auto"}, tmp_path)
    assert choice is not None
    assert choice.device == str(tmp_path / "vdc")
    assert choice.fstype == "ext4"
    assert choice.label == "volant-root"


def test_auto_with_no_disks(tmp_path: Path) -> None:
    assert choose_root({"volant.boot": "auto"}, tmp_path) is None


def test_initramfs_mode_ignores_a_root_disk(tmp_path: Path) -> None:
    make_ext4(tmp_path / "vda", "volant-root")
    assert choose_root({"volant.boot": "initramfs"}, tmp_path) is None


def test_rootfs_mode_requires_a_root_disk(tmp_path: Path) -> None:
    make_iso(tmp_path / "vda", "cidata")
    with pytest.raises(BootModeError, match="no disk"):
        choose_root({"volant.boot": "rootfs"}, tmp_path)


def test_rootfs_mode_with_explicit_device_and_fstype(tmp_path: Path) -> None:
    make_ext4(tmp_path / "vdb", "anything")
    choice = choose_root(
        {
            "volant.boot": "rootfs",
            "volant.rootfs_device": "/dev/vdb",
            "volant.rootfs_fstype": "ext3",
        },
        tmp_path,
    )
    assert choice is not None
    assert choice.device == str(tmp_path / "vdb")
    assert choice.fstype == "ext3"


def test_explicit_device_that_is_a_seed_is_refused(tmp_path: Path) -> None:
    make_iso(tmp_path / "vda", "CIDATA")
    with pytest.raises(BootModeError, match="seed"):
        choose_root({"volant.boot": "rootfs", "volant.rootfs_device": "vda"}, tmp_path)


def test_explicit_missing_device(tmp_path: Path) -> None:
    with pytest.raises(BootModeError, match="does not exist"):
        choose_root({"volant.boot": "rootfs", "volant.rootfs_device": "vdz"}, tmp_path)
    assert choose_root({"volant.boot": "auto", "volant.rootfs_device": "vdz"}, tmp_path) is None


def test_list_block_devices_from_fake_sysfs(tmp_path: Path) -> None:
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    dev_root.mkdir()
    for name, sectors in (("vda", 8192), ("vdb", 80), ("loop0", 10)):
        (sys_root / "block" / name).mkdir(parents=True)
        (sys_root / "block" / name / "size").write_text(f"{sectors}\n")
    part = sys_root / "block" / "vda" / "vda1"
    part.mkdir()
    (part / "partition").write_text("1\n")
    (part / "size").write_text("4096\n")
    make_ext4(dev_root / "vda", "volant-root")
    make_iso(dev_root / "vdb", "cidata")
    devices = {d.name: d for d in list_block_devices(sys_root, dev_root)}
    assert set(devices) == {"vda", "vda1", "vdb"}  # loop devices are skipped
    assert devices["vda"].size_bytes == 8192 * 512
    assert devices["vda1"].size_bytes == 4096 * 512
    assert (devices["vda"].filesystem.type, devices["vda"].filesystem.label) == (
        "ext4",
        "volant-root",
    )
    assert devices["vdb"].filesystem.label == "cidata"
    assert devices["vda1"].filesystem.type is None  # no /dev node for it
