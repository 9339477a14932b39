"""VFIO passthrough logic over the sysfs adapter (upstream section 9, its [GAP]s fixed).

- Addresses are full PCI addresses (``0000:01:00.0``, case-insensitive; stored
  lower-case). Malformed is 400, absent from sysfs is 404.
- Allowlist entries are ``vendor:device`` or ``vendor:*`` (hex, case-insensitive);
  a device outside a non-empty allowlist is 422.
- **Group viability** (upstream never checked it): VFIO hands a whole IOMMU group
  to the guest, so every *other* device of a requested device's group must be
  bound to ``vfio-pci``, bound to a harmless driver (``pci-stub``, or ``pcieport``
  of a bridge, which the kernel tolerates) or driverless. Otherwise 409 naming
  the blocking device and its driver.
- **Bind** uses ``driver_override`` (the kernel's supported way, no ``new_id``
  that would grab every device with the same ids): write ``vfio-pci`` to
  ``driver_override``, unbind from the current driver, ``drivers_probe``.
  The caller learns the original driver *before* anything changes (``plan_bind``)
  so it can persist it first; a failed bind is rolled back.
- **Release** restores: unbind from ``vfio-pci``, clear ``driver_override``, bind
  the original driver (falling back to ``drivers_probe``). A device that had no
  driver is left driverless, as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from volant.devices.sysfs import Sysfs, SysfsWriteError
from volant.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    UnprocessableError,
    ValidationError,
    VolantError,
)

__all__ = [
    "HARMLESS_DRIVERS",
    "VFIO_DRIVER",
    "BindPlan",
    "DeviceInfo",
    "IommuGroup",
    "VfioManager",
    "allowlist_matches",
    "normalize_address",
]

VFIO_DRIVER = "vfio-pci"
#: Drivers that may hold other members of a passed-through group.
HARMLESS_DRIVERS = frozenset({VFIO_DRIVER, "pci-stub", "pcieport"})
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_ALLOW_ENTRY = re.compile(r"^[0-9a-f]{4}:(?:[0-9a-f]{4}|\*)$")


def normalize_address(address: Any, field: str = "pci_address") -> str:
    """The lower-case address, or 400 when it is not ``DDDD:BB:DD.F``."""
    if not isinstance(address, str):
        raise ValidationError(f"{field}: expected a string", field=field)
    value = address.strip().lower()
    if not _PCI_ADDRESS.fullmatch(value):
        raise ValidationError(
            f"{field}: invalid PCI address {address!r} (expected DDDD:BB:DD.F, "
            "e.g. 0000:01:00.0)", field=field)
    return value


def _hex_id(raw: str | None) -> str:
    value = (raw or "").strip().lower()
    return value[2:] if value.startswith("0x") else value


def allowlist_matches(vendor: str, device: str, allowlist: Iterable[str]) -> bool:
    """Whether ``vendor:device`` is allowed; an empty allowlist allows everything."""
    entries = [entry.strip().lower() for entry in allowlist if entry.strip()]
    if not entries:
        return True
    for entry in entries:
        allowed_vendor, _, allowed_device = entry.partition(":")
        if allowed_vendor == vendor.lower() and allowed_device in ("*", device.lower()):
            return True
    return False


@attrs.frozen(kw_only=True)
class DeviceInfo:
    address: str
    vendor: str
    device: str
    driver: str
    iommu_group: str
    numa_node: int

    def to_json(self) -> dict[str, Any]:
        """Upstream's ``/devices/info`` shape."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class IommuGroup:
    id: str
    devices: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "devices": list(self.devices)}


@attrs.frozen(kw_only=True)
class BindPlan:
    """What a bind will do, known before anything changes."""

    address: str
    original_driver: str | None  # None: driverless, or already vfio-pci (nothing to restore)
    already_bound: bool


class VfioManager:
    """Validation, viability, bind and release of PCI devices for VFIO."""

    def __init__(self, sysfs: Sysfs, *, driver: str = VFIO_DRIVER,
                 device_path_root: str | None = None) -> None:
        self.sysfs = sysfs
        self.driver = driver
        #: The sysfs root as the VMM sees it (``--device path=`` / ``sysfsdev=``).
        self.device_path_root = device_path_root or str(sysfs.root)

    # ---- inspection ---------------------------------------------------------------------

    def require(self, address: Any, field: str = "pci_address") -> str:
        value = normalize_address(address, field)
        if not self.sysfs.exists(value):
            raise NotFoundError(f"PCI device {value} not found", pci_address=value)
        return value

    def info(self, address: Any) -> DeviceInfo:
        value = self.require(address)
        numa_raw = self.sysfs.read_attr(value, "numa_node")
        try:
            numa = int(numa_raw) if numa_raw is not None else -1
        except ValueError:
            numa = -1
        return DeviceInfo(
            address=value,
            vendor=_hex_id(self.sysfs.read_attr(value, "vendor")),
            device=_hex_id(self.sysfs.read_attr(value, "device")),
            driver=self.sysfs.current_driver(value) or "",
            iommu_group=self.sysfs.iommu_group(value) or "",
            numa_node=numa,
        )

    def validate(self, addresses: Sequence[Any], allowlist: Iterable[str] = ()) -> list[str]:
        """Check form, existence, readable ids and allowlist; returns the normalised addresses.

        Raises 400 (form), 404 (absent), 422 (ids unreadable or not allowed).
        """
        allow = list(allowlist)
        for index, entry in enumerate(allow):
            if not isinstance(entry, str) or not _ALLOW_ENTRY.fullmatch(entry.strip().lower()):
                raise ValidationError(
                    f"allowlist[{index}]: expected vendor:device or vendor:* in hex "
                    f"(e.g. 10de:*), got {entry!r}", field=f"allowlist[{index}]")
        result: list[str] = []
        for index, address in enumerate(addresses):
            value = self.require(address, f"pci_addresses[{index}]")
            info = self.info(value)
            if not info.vendor or not info.device:
                raise UnprocessableError(f"PCI device {value}: vendor/device ids unreadable",
                                         pci_address=value)
            if not allowlist_matches(info.vendor, info.device, allow):
                raise UnprocessableError(
                    f"PCI device {value} ({info.vendor}:{info.device}) is not in the allowlist",
                    pci_address=value, vendor=info.vendor, device=info.device)
            if value in result:
                raise ValidationError(f"PCI device {value} is listed twice",
                                      field=f"pci_addresses[{index}]")
            result.append(value)
        return result

    def validation_errors(self, addresses: Sequence[Any], allowlist: Iterable[str] = ()
                          ) -> list[str]:
        """Every problem, one message per device (upstream's ``validate`` route)."""
        errors: list[str] = []
        allow = list(allowlist)
        for address in addresses:
            try:
                self.validate([address], allow)
            except VolantError as exc:
                errors.append(exc.message)
        return errors

    def group_of(self, address: str) -> str:
        group = self.sysfs.iommu_group(address)
        if group is None:
            raise UnprocessableError(
                f"PCI device {address} has no IOMMU group (IOMMU may not be enabled: "
                "intel_iommu=on / amd_iommu=on)", pci_address=address)
        return group

    def iommu_groups(self, addresses: Sequence[Any]) -> list[IommuGroup]:
        """Groups of the requested devices, listing the requested devices only (as upstream)."""
        groups: dict[str, list[str]] = {}
        for index, address in enumerate(addresses):
            value = self.require(address, f"pci_addresses[{index}]")
            groups.setdefault(self.group_of(value), []).append(value)
        return [IommuGroup(id=gid, devices=tuple(devs)) for gid, devs in groups.items()]

    def check_viability(self, addresses: Sequence[Any], *, also_passed: Iterable[str] = ()
                        ) -> None:
        """409 unless every other member of each group is vfio-pci, harmless or driverless.

        ``also_passed`` are devices the same VM passes through as well (they will be
        bound to vfio-pci too, so they do not block).
        """
        requested = {self.require(a, f"pci_addresses[{i}]") for i, a in enumerate(addresses)}
        passing = requested | {normalize_address(a) for a in also_passed}
        for address in sorted(requested):
            group = self.group_of(address)
            for member in self.sysfs.group_devices(group):
                if member in passing:
                    continue
                driver = self.sysfs.current_driver(member)
                if driver is None or driver in HARMLESS_DRIVERS:
                    continue
                raise ConflictError(
                    f"IOMMU group {group} of {address} is not viable: {member} is bound to "
                    f"{driver}; unbind it or pass it through too (a group goes to one VM "
                    "as a whole)",
                    pci_address=address, iommu_group=group, blocking_device=member,
                    blocking_driver=driver)

    # ---- bind / release -----------------------------------------------------------------

    def plan_bind(self, address: Any) -> BindPlan:
        value = self.require(address)
        driver = self.sysfs.current_driver(value)
        if driver == self.driver:
            return BindPlan(address=value, original_driver=None, already_bound=True)
        return BindPlan(address=value, original_driver=driver, already_bound=False)

    def bind(self, address: Any) -> BindPlan:
        """Bind to vfio-pci via driver_override; returns the plan (original driver)."""
        plan = self.plan_bind(address)
        value = plan.address
        if plan.already_bound:
            if self.sysfs.driver_override(value) != self.driver:
                # Bound by someone else's new_id: pin it so a re-probe cannot steal it.
                self.sysfs.set_driver_override(value, self.driver)
            return plan
        if not self.sysfs.driver_loaded(self.driver):
            raise UnavailableError(
                f"the {self.driver} driver is not loaded (modprobe {self.driver})",
                pci_address=value)
        self.group_of(value)
        try:
            self.sysfs.set_driver_override(value, self.driver)
            if plan.original_driver is not None:
                self.sysfs.unbind(value, plan.original_driver)
            self.sysfs.probe(value)
        except SysfsWriteError:
            self._restore(value, plan.original_driver)
            raise
        now = self.sysfs.current_driver(value)
        if now != self.driver:
            self._restore(value, plan.original_driver)
            raise ConflictError(
                f"PCI device {value} did not bind to {self.driver} (bound to {now or 'nothing'})",
                pci_address=value)
        return plan

    def release(self, address: Any, original_driver: str | None) -> None:
        """Give the device back: unbind vfio-pci, clear the override, rebind the original."""
        value = self.require(address)
        self._restore(value, original_driver)

    def _restore(self, address: str, original_driver: str | None) -> None:
        current = self.sysfs.current_driver(address)
        if current == self.driver:
            self.sysfs.unbind(address, self.driver)
        if self.sysfs.driver_override(address) is not None:
            self.sysfs.set_driver_override(address, None)
        if original_driver is None or self.sysfs.current_driver(address) is not None:
            return
        try:
            self.sysfs.bind(address, original_driver)
        except SysfsWriteError:
            self.sysfs.probe(address)  # let the kernel pick the best match

    def unbind_to_host(self, address: Any) -> None:
        """The API's unbind: release without a known original; the kernel re-probes."""
        value = self.require(address)
        if self.sysfs.current_driver(value) == self.driver:
            self.sysfs.unbind(value, self.driver)
        if self.sysfs.driver_override(value) is not None:
            self.sysfs.set_driver_override(value, None)
        if self.sysfs.current_driver(value) is None:
            self.sysfs.probe(value)

    def device_paths(self, addresses: Sequence[Any]) -> list[str]:
        """Device paths for the VMM (what upstream's "group-paths" returns); 409 if unbound."""
        paths: list[str] = []
        for index, address in enumerate(addresses):
            value = self.require(address, f"pci_addresses[{index}]")
            if self.sysfs.current_driver(value) != self.driver:
                raise ConflictError(f"PCI device {value} is not bound to {self.driver}",
                                    pci_address=value)
            paths.append(f"{self.device_path_root.rstrip('/')}/bus/pci/devices/{value}")
        return paths
