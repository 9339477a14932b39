"""The sysfs adapter: every read and write of PCI/IOMMU state goes through here.

Layout used (relative to the sysfs root, ``/sys`` unless ``VOLANT_SYSFS_ROOT``)::

    bus/pci/devices/<addr>/{vendor,device,numa_node,driver_override}
    bus/pci/devices/<addr>/driver      -> .../bus/pci/drivers/<name>
    bus/pci/devices/<addr>/iommu_group -> .../kernel/iommu_groups/<n>
    bus/pci/drivers/<name>/{bind,unbind}
    bus/pci/drivers_probe
    kernel/iommu_groups/<n>/devices/<addr>

Reads follow the tree; writes go through :meth:`Sysfs.write`, the one
primitive a fake kernel overrides in tests (``tests/fakesysfs.py``). Kernel
write errors (``ENODEV``, ``EBUSY``...) surface as :class:`SysfsWriteError`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from volant.errors import VolantError

__all__ = ["DEFAULT_SYSFS_ROOT", "SYSFS_ROOT_ENV", "Sysfs", "SysfsWriteError", "sysfs_root"]

SYSFS_ROOT_ENV = "VOLANT_SYSFS_ROOT"
DEFAULT_SYSFS_ROOT = Path("/sys")


def sysfs_root(environ: dict[str, str] | None = None) -> Path:
    """``VOLANT_SYSFS_ROOT`` or ``/sys``."""
    env = os.environ if environ is None else environ
    value = env.get(SYSFS_ROOT_ENV, "").strip()
    return Path(value) if value else DEFAULT_SYSFS_ROOT


class SysfsWriteError(VolantError):
    """The kernel refused a sysfs write."""

    status = 500


class Sysfs:
    """PCI and IOMMU state under one sysfs root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else sysfs_root()

    # ---- paths ------------------------------------------------------------------------

    @property
    def devices_dir(self) -> Path:
        return self.root / "bus" / "pci" / "devices"

    @property
    def drivers_dir(self) -> Path:
        return self.root / "bus" / "pci" / "drivers"

    @property
    def groups_dir(self) -> Path:
        return self.root / "kernel" / "iommu_groups"

    def device_dir(self, address: str) -> Path:
        return self.devices_dir / address

    # ---- reads --------------------------------------------------------------------------

    def exists(self, address: str) -> bool:
        return self.device_dir(address).is_dir()

    def read_attr(self, address: str, name: str) -> str | None:
        """A device attribute's text (stripped), ``None`` when absent or unreadable."""
        try:
            return (self.device_dir(address) / name).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _link_name(self, path: Path) -> str | None:
        try:
            return os.path.basename(os.readlink(path))
        except OSError:
            return None

    def current_driver(self, address: str) -> str | None:
        """The bound driver's name, ``None`` when driverless."""
        return self._link_name(self.device_dir(address) / "driver")

    def iommu_group(self, address: str) -> str | None:
        return self._link_name(self.device_dir(address) / "iommu_group")

    def group_devices(self, group: str) -> list[str]:
        try:
            return sorted(os.listdir(self.groups_dir / group / "devices"))
        except OSError:
            return []

    def driver_loaded(self, driver: str) -> bool:
        return (self.drivers_dir / driver).is_dir()

    def driver_override(self, address: str) -> str | None:
        value = self.read_attr(address, "driver_override")
        return None if value in (None, "", "(null)") else value

    def list_devices(self) -> list[str]:
        try:
            return sorted(os.listdir(self.devices_dir))
        except OSError:
            return []

    # ---- writes -------------------------------------------------------------------------

    def write(self, path: Path, value: str) -> None:
        """One write(2) of ``value`` to a sysfs attribute (the kernel acts on each write)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._error(path, value, exc) from exc
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise self._error(path, value, exc) from exc
        finally:
            os.close(fd)

    def _error(self, path: Path, value: str, exc: OSError) -> SysfsWriteError:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return SysfsWriteError(
            f"writing {value.strip()!r} to {path} failed: {exc.strerror or exc} ({name})",
            path=str(path), errno=exc.errno or 0,
        )

    def set_driver_override(self, address: str, driver: str | None) -> None:
        """Restrict which driver may bind the device; ``None`` clears the override."""
        self.write(self.device_dir(address) / "driver_override", (driver or "") + "\n")

    def unbind(self, address: str, driver: str) -> None:
        self.write(self.drivers_dir / driver / "unbind", address)

    def bind(self, address: str, driver: str) -> None:
        self.write(self.drivers_dir / driver / "bind", address)

    def probe(self, address: str) -> None:
        """Ask the kernel to bind the device to a matching driver (honours driver_override)."""
        self.write(self.root / "bus" / "pci" / "drivers_probe", address)
