"""Decide whether stage 1 stays on the initramfs or switch_roots into a disk.

``volant.boot``:
  initramfs  stay.
  rootfs     switch into ``volant.rootfs_device`` (or the first root-capable disk);
             an error if there is none.
  auto       switch only into a disk that carries ext4/xfs/btrfs and is not labelled
             ``cidata`` -- a cloud-init seed or a blank data disk is never mounted as root
             (upstream switched into whatever ``vda`` was).
"""

from __future__ import annotations

import os

from kestrel.blockdev import Filesystem, is_seed_label, probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

CANDIDATES = ("vda", "vdb", "vdc", "vdd", "sda", "sdb")
MODES = ("initramfs", "rootfs", "auto")


class BootModeError(Exception):
    """``volant.boot=rootfs`` but no usable root disk."""


class RootChoice:
    __slots__ = ("device", "fstype", "label")

    def __init__(self, device: str, fstype: str, label: str | None) -> None:
        self.device = device
        self.fstype = fstype
        self.label = label

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RootChoice):
            return NotImplemented
        return (self.device, self.fstype, self.label) == (other.device, other.fstype, other.label)

    def __hash__(self) -> int:
        return hash((self.device, self.fstype, self.label))

    def __repr__(self) -> str:
        return f"RootChoice(device={self.device!r}, fstype={self.fstype!r}, label={self.label!r})"


def boot_mode(cmdline: dict[str, str]) -> str:
    mode = cmdline.get("volant.boot", "auto").strip().lower()
    return mode if mode in MODES else "auto"


def _device_path(dev_root: StrPath, name: str) -> str:
    name = name.strip()
    if name.startswith("/dev/"):
        return os.path.join(dev_root, name[len("/dev/") :])
    return os.path.join(dev_root, name)


def choose_root(cmdline: dict[str, str], dev_root: StrPath) -> RootChoice | None:
    """The disk to switch_root into, or None to stay on the initramfs."""
    mode = boot_mode(cmdline)
    if mode == "initramfs":
        return None
    requested = cmdline.get("volant.rootfs_device", "").strip()
    fstype_override = cmdline.get("volant.rootfs_fstype", "").strip() or None

    if requested:
        path = _device_path(dev_root, requested)
        if not os.path.exists(path):
            if mode == "rootfs":
                raise BootModeError(f"volant.rootfs_device {requested} does not exist")
            return None
        found = probe(path)
        if is_seed_label(found.label):
            raise BootModeError(f"{requested} is a cloud-init seed (label {found.label!r})")
        if mode == "auto" and not found.root_capable:
            return None
        fstype = fstype_override or found.type or "ext4"
        return RootChoice(path, fstype, found.label)

    for name in CANDIDATES:
        path = os.path.join(dev_root, name)
        if not os.path.exists(path):
            continue
        candidate: Filesystem = probe(path)
        if candidate.root_capable:
            fstype = fstype_override or candidate.type or "ext4"
            return RootChoice(path, fstype, candidate.label)
    if mode == "rootfs":
        raise BootModeError(
            "volant.boot=rootfs but no disk with an ext4/xfs/btrfs root filesystem was found"
        )
    return None
