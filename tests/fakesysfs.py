"""A fake sysfs tree with a tiny "kernel" that reacts to writes, for VFIO tests.

``FakeSysfsTree(root)`` builds the same files and symlinks the real kernel
exposes (see ``volant.devices.sysfs``). Writing a plain file cannot move a
symlink, so ``tree.sysfs()`` returns a ``Sysfs`` whose single write primitive
first records the write (``tree.writes``) and then does what the kernel would:

- ``<dev>/driver_override``: stored (empty clears; reads back ``(null)``);
- ``drivers/<d>/unbind``: removes ``<dev>/driver`` (ENODEV if not bound to ``d``);
- ``drivers/<d>/bind``: EBUSY if bound; ENODEV if ``driver_override`` names
  another driver or ``d`` does not match the device (its native driver, a
  ``new_id`` entry, or the override);
- ``drivers_probe``: binds an unbound device to its override if that driver is
  loaded, else (no override) to its native driver if loaded;
- ``drivers/<d>/new_id``: adds the ids and probes unbound matching devices.

Real paths and real order are what the production adapter writes; the tests
assert on ``writes`` to check the order.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import attrs

from volant.devices.sysfs import Sysfs


@attrs.define
class FakeDevice:
    address: str
    vendor: str
    device: str
    native_driver: str | None
    group: str


class FakeSysfsTree:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.devices: dict[str, FakeDevice] = {}
        self.new_ids: dict[str, set[tuple[str, str]]] = {}
        self.writes: list[tuple[str, str]] = []
        #: relpath -> errno: the next write to that file fails (fault injection).
        self.fail_next: dict[str, int] = {}
        for sub in ("bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "bus/pci/drivers_probe").write_text("")

    # ---- building ---------------------------------------------------------------------

    def add_driver(self, name: str) -> FakeSysfsTree:
        directory = self.root / "bus/pci/drivers" / name
        directory.mkdir(parents=True, exist_ok=True)
        for attr in ("bind", "unbind", "new_id", "remove_id"):
            (directory / attr).write_text("")
        self.new_ids.setdefault(name, set())
        return self

    def remove_driver(self, name: str) -> None:
        """Like ``rmmod``: unbinds its devices, then the driver directory goes."""
        for dev in self.devices.values():
            if self.driver_of(dev.address) == name:
                self._unlink_driver(dev.address)
        directory = self.root / "bus/pci/drivers" / name
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()

    def add_device(self, address: str, vendor: str, device: str, *, driver: str | None,
                   group: str, numa_node: int = 0) -> FakeSysfsTree:
        dev_dir = self.dev_dir(address)
        dev_dir.mkdir(parents=True)
        (dev_dir / "vendor").write_text(f"0x{vendor}\n")
        (dev_dir / "device").write_text(f"0x{device}\n")
        (dev_dir / "numa_node").write_text(f"{numa_node}\n")
        (dev_dir / "driver_override").write_text("(null)\n")
        group_dir = self.root / "kernel/iommu_groups" / group / "devices"
        group_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../../../bus/pci/devices/{address}", group_dir / address)
        os.symlink(f"../../../../kernel/iommu_groups/{group}", dev_dir / "iommu_group")
        self.devices[address] = FakeDevice(address=address, vendor=vendor, device=device,
                                           native_driver=driver, group=group)
        if driver is not None:
            self.add_driver(driver)
            self._link_driver(address, driver)
        return self

    def sysfs(self) -> Sysfs:
        return _KernelSysfs(self)

    # ---- state ------------------------------------------------------------------------

    def dev_dir(self, address: str) -> Path:
        return self.root / "bus/pci/devices" / address

    def driver_of(self, address: str) -> str | None:
        try:
            return os.path.basename(os.readlink(self.dev_dir(address) / "driver"))
        except FileNotFoundError:
            return None

    def override_of(self, address: str) -> str | None:
        text = (self.dev_dir(address) / "driver_override").read_text().strip()
        return None if text in ("", "(null)") else text

    def _link_driver(self, address: str, driver: str) -> None:
        os.symlink(f"../../drivers/{driver}", self.dev_dir(address) / "driver")

    def _unlink_driver(self, address: str) -> None:
        (self.dev_dir(address) / "driver").unlink()

    def _loaded(self, driver: str) -> bool:
        return (self.root / "bus/pci/drivers" / driver).is_dir()

    def _matches(self, dev: FakeDevice, driver: str) -> bool:
        override = self.override_of(dev.address)
        if override is not None:
            return override == driver
        return driver == dev.native_driver or (dev.vendor, dev.device) in self.new_ids.get(
            driver, set())

    # ---- the "kernel" -----------------------------------------------------------------

    def kernel_write(self, path: Path, value: str) -> None:
        """Apply one write; raises ``OSError`` the way the kernel would."""
        rel = path.relative_to(self.root).as_posix()
        self.writes.append((rel, value))
        if rel in self.fail_next:
            code = self.fail_next.pop(rel)
            raise OSError(code, os.strerror(code))
        parts = rel.split("/")
        if not path.exists():
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if parts[:3] == ["bus", "pci", "devices"] and parts[-1] == "driver_override":
            text = value.strip()
            path.write_text((text or "(null)") + "\n")
            return
        if rel == "bus/pci/drivers_probe":
            self._probe(self._device(value))
            return
        if parts[:3] == ["bus", "pci", "drivers"] and len(parts) == 5:
            driver, action = parts[3], parts[4]
            if action == "new_id":
                vendor, device = value.split()[:2]
                self.new_ids.setdefault(driver, set()).add((vendor, device))
                for dev in self.devices.values():
                    if self.driver_of(dev.address) is None:
                        self._probe(dev)
                return
            dev = self._device(value)
            if action == "unbind":
                if self.driver_of(dev.address) != driver:
                    raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
                self._unlink_driver(dev.address)
                return
            if action == "bind":
                if self.driver_of(dev.address) is not None:
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
                if not self._matches(dev, driver):
                    raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
                self._link_driver(dev.address, driver)
                return
        raise OSError(errno.EPERM, f"fake sysfs: no kernel behaviour for {rel}")

    def _device(self, value: str) -> FakeDevice:
        dev = self.devices.get(value.strip())
        if dev is None:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return dev

    def _probe(self, dev: FakeDevice) -> None:
        if self.driver_of(dev.address) is not None:
            return
        override = self.override_of(dev.address)
        candidates = [override] if override is not None else [
            dev.native_driver, *sorted(d for d, ids in self.new_ids.items()
                                       if (dev.vendor, dev.device) in ids)]
        for driver in candidates:
            if driver is not None and self._loaded(driver):
                self._link_driver(dev.address, driver)
                return


class _KernelSysfs(Sysfs):
    def __init__(self, tree: FakeSysfsTree) -> None:
        super().__init__(tree.root)
        self.tree = tree

    def write(self, path: Path, value: str) -> None:
        try:
            self.tree.kernel_write(path, value)
        except OSError as exc:
            raise self._error(path, value, exc) from exc


#: The standard tree's devices (see standard_tree).
GPU, AUDIO, NIC, VIRTIO = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:03:00.0"


def standard_tree(root: Path) -> FakeSysfsTree:
    """A GPU + its audio function in group 1, a NIC alone in group 2, vfio-pci loaded.

    ``0000:01:00.0`` 10de:2204 nvidia, ``0000:01:00.1`` 10de:1aef snd_hda_intel (group 1);
    ``0000:02:00.0`` 8086:1533 igb (group 2); ``0000:03:00.0`` 1af4:1000 driverless (group 3).
    """
    tree = FakeSysfsTree(root)
    tree.add_driver("vfio-pci")
    tree.add_device(GPU, "10de", "2204", driver="nvidia", group="1", numa_node=0)
    tree.add_device(AUDIO, "10de", "1aef", driver="snd_hda_intel", group="1")
    tree.add_device(NIC, "8086", "1533", driver="igb", group="2", numa_node=1)
    tree.add_device(VIRTIO, "1af4", "1000", driver=None, group="3")
    return tree
