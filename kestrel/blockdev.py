"""Identify block devices by reading their superblocks directly.

No blkid in the loop: a handful of magic numbers is enough to tell a root disk
(ext4/xfs/btrfs) from a cloud-init seed (ISO9660 or FAT labelled ``cidata``) or
an unformatted data disk, and reading 70 KiB from a device is far cheaper than
spawning a helper under emulation. (stage 1 probes disks before the API listens, so
this module stays free of dataclasses and pathlib.)
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

ROOT_FILESYSTEMS = frozenset({"ext4", "ext3", "ext2", "xfs", "btrfs"})
SEED_LABELS = frozenset({"cidata"})
_PROBE_BYTES = 0x10140  # covers the btrfs superblock at 64 KiB
_SKIP_PREFIXES = ("loop", "ram", "zram", "nbd", "dm-", "md", "sr")


class Filesystem:
    __slots__ = ("label", "type")

    def __init__(self, type: str | None, label: str | None) -> None:
        self.type = type
        self.label = label

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Filesystem):
            return NotImplemented
        return (self.type, self.label) == (other.type, other.label)

    def __hash__(self) -> int:
        return hash((self.type, self.label))

    def __repr__(self) -> str:
        return f"Filesystem(type={self.type!r}, label={self.label!r})"

    @property
    def root_capable(self) -> bool:
        """A disk kestrel may switch_root into: a Linux filesystem that is not a seed."""
        return self.type in ROOT_FILESYSTEMS and not is_seed_label(self.label)


class BlockDevice:
    __slots__ = ("filesystem", "name", "path", "size_bytes")

    def __init__(self, name: str, path: str, size_bytes: int, filesystem: Filesystem) -> None:
        self.name = name
        self.path = path
        self.size_bytes = size_bytes
        self.filesystem = filesystem

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockDevice):
            return NotImplemented
        return (self.name, self.path, self.size_bytes, self.filesystem) == (
            other.name,
            other.path,
            other.size_bytes,
            other.filesystem,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.path, self.size_bytes, self.filesystem))

    def __repr__(self) -> str:
        return (
            f"BlockDevice(name={self.name!r}, path={self.path!r}, "
            f"size_bytes={self.size_bytes!r}, filesystem={self.filesystem!r})"
        )


def is_seed_label(label: str | None) -> bool:
    return label is not None and label.strip().lower() in SEED_LABELS


def _text(raw: bytes) -> str | None:
    value = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return value or None


def identify(header: bytes) -> Filesystem:
    """Filesystem type and label from the first bytes of a device or image."""
    if len(header) >= 1144 + 16 and header[1080:1082] == b"\x53\xef":
        incompat = int.from_bytes(header[1120:1124], "little")
        compat = int.from_bytes(header[1116:1120], "little")
        if incompat & 0x2C0:  # extents / 64bit / flex_bg
            kind = "ext4"
        elif compat & 0x4:  # has_journal
            kind = "ext3"
        else:
            kind = "ext2"
        return Filesystem(kind, _text(header[1144:1160]))
    if header[:4] == b"XFSB":
        return Filesystem("xfs", _text(header[108:120]))
    if len(header) >= 0x10040 + 8 and header[0x10040:0x10048] == b"_BHRfS_M":
        return Filesystem("btrfs", _text(header[0x1012B : 0x1012B + 256]))
    if len(header) >= 32774 and header[32769:32774] == b"CD001":
        return Filesystem("iso9660", _text(header[32808:32840]))
    if len(header) >= 512 and header[510:512] == b"\x55\xaa":
        if header[82:87] == b"FAT32":
            return Filesystem("vfat", _fat_label(header[71:82]))
        if header[54:57] == b"FAT":
            return Filesystem("vfat", _fat_label(header[43:54]))
    if header[:8] == b"EFI PART" or (len(header) >= 520 and header[512:520] == b"EFI PART"):
        return Filesystem("gpt", None)
    return Filesystem(None, None)


def _fat_label(raw: bytes) -> str | None:
    label = _text(raw)
    return None if label in (None, "NO NAME") else label


def probe(path: StrPath) -> Filesystem:
    """Read the superblock area of a device or image file."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(_PROBE_BYTES)
    except OSError:
        return Filesystem(None, None)
    return identify(header)


def list_block_devices(sys_root: StrPath, dev_root: StrPath) -> list[BlockDevice]:
    """Disks and their partitions from sysfs, each probed through its /dev node."""
    devices: list[BlockDevice] = []
    block = os.path.join(sys_root, "block")
    try:
        names = sorted(os.listdir(block))
    except OSError:
        return devices
    for disk in names:
        if disk.startswith(_SKIP_PREFIXES):
            continue
        disk_dir = os.path.join(block, disk)
        try:
            children = os.listdir(disk_dir)
        except OSError:
            children = []
        partitions = [
            child
            for child in children
            if child.startswith(disk) and os.path.exists(os.path.join(disk_dir, child, "partition"))
        ]
        for name in [disk, *sorted(partitions)]:
            sys_dir = disk_dir if name == disk else os.path.join(disk_dir, name)
            node = os.path.join(dev_root, name)
            devices.append(
                BlockDevice(name=name, path=node, size_bytes=_size(sys_dir), filesystem=probe(node))
            )
    return devices


def _size(sys_dir: str) -> int:
    try:
        with open(os.path.join(sys_dir, "size")) as handle:
            return int(handle.read().strip()) * 512
    except (OSError, ValueError):
        return 0
