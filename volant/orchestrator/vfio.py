"""The VFIO binding actor (one per passed-through device, a child of the VM's runner),
the ownership registry, and startup cleanup.

Start (``on_start``): claim the device for this VM (409 if another VM owns it),
validate it (address, existence, allowlist), check its IOMMU group is viable,
learn its current driver and **persist it through the VM's callback before
touching anything**, then bind it to vfio-pci. A crash at any point therefore
leaves either an untouched device or a recorded original driver.

Stop (``on_stop``, graceful only): release the device (vfio-pci unbound,
``driver_override`` cleared, original driver bound again) and drop ownership —
unless volantd itself is detaching, when the VM keeps running with its device.

Ownership is in memory (``VfioOwnership``) and rebuilt at startup from the VM
records by :func:`recover_vfio`, which also releases the devices of VMs that are
gone (e.g. a volantd crash in the middle of a destroy).

All sysfs work runs in worker threads (blocking writes; the kernel may take a
while to unbind a GPU).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Final

import attrs
import trio

from volant.actors import Actor
from volant.devices.vfio import BindPlan, VfioManager, normalize_address
from volant.errors import ConflictError, VolantError
from volant.logging import get_logger
from volant.orchestrator.events import EventBus
from volant.orchestrator.lifecycle import DaemonLifecycle

__all__ = [
    "NOT_RECORDED",
    "RecordOriginal",
    "VfioBindingActor",
    "VfioOwnership",
    "VfioRecovery",
    "check_assignment",
    "recover_vfio",
]

#: ``record_original(address, driver)``: persist the device's original driver
#: (``None``: it had none) in the VM's state before the device is touched.
RecordOriginal = Callable[[str, str | None], Awaitable[None]]


class _NotRecorded:
    def __repr__(self) -> str:
        return "NOT_RECORDED"


NOT_RECORDED: Final = _NotRecorded()


class VfioOwnership:
    """Which VM owns which PCI device; one owner per device across the daemon.

    Plain methods, no locks: every actor runs on the one trio thread, so each
    call is atomic.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def owner(self, address: str) -> str | None:
        return self._owners.get(normalize_address(address))

    def claim(self, address: str, vm: str) -> bool:
        """Take ``address`` for ``vm``; True if newly claimed, 409 if another VM owns it."""
        value = normalize_address(address)
        current = self._owners.get(value)
        if current is not None and current != vm:
            raise ConflictError(f"PCI device {value} is already assigned to vm {current}",
                                pci_address=value, owner=current)
        self._owners[value] = vm
        return current is None

    def release(self, address: str, vm: str) -> bool:
        """Drop ``vm``'s claim; False (and nothing changes) if it did not own the device."""
        value = normalize_address(address)
        if self._owners.get(value) != vm:
            return False
        del self._owners[value]
        return True

    def devices_of(self, vm: str) -> list[str]:
        return sorted(addr for addr, owner in self._owners.items() if owner == vm)

    def snapshot(self) -> dict[str, str]:
        return dict(self._owners)

    def rebuild(self, assignments: Mapping[str, Iterable[str]]) -> list[tuple[str, str, str]]:
        """Replace the registry with ``{vm: addresses}``. Returns ``(address, kept, refused)``
        for devices claimed by two records (the alphabetically first VM keeps it)."""
        self._owners.clear()
        conflicts: list[tuple[str, str, str]] = []
        for vm in sorted(assignments):
            for address in assignments[vm]:
                try:
                    self.claim(address, vm)
                except ConflictError:
                    conflicts.append((normalize_address(address), self._owners[
                        normalize_address(address)], vm))
        return conflicts


def check_assignment(manager: VfioManager, ownership: VfioOwnership, vm: str,
                     addresses: Iterable[str], allowlist: Iterable[str] = ()) -> list[str]:
    """Everything ``on_start`` checks, without side effects (for a 4xx before a start).

    Returns the normalised addresses. Blocking sysfs reads: call from a thread.
    """
    wanted = manager.validate(list(addresses), list(allowlist))
    for address in wanted:
        owner = ownership.owner(address)
        if owner is not None and owner != vm:
            raise ConflictError(f"PCI device {address} is already assigned to vm {owner}",
                                pci_address=address, owner=owner)
    manager.check_viability(wanted)
    return wanted


class VfioBindingActor(Actor[Any]):
    """Holds one PCI device bound to vfio-pci for one VM while it lives."""

    mailbox_size = 4

    def __init__(
        self,
        vm_name: str,
        address: str,
        *,
        manager: VfioManager,
        ownership: VfioOwnership,
        lifecycle: DaemonLifecycle,
        record_original: RecordOriginal,
        recorded_original: str | _NotRecorded | None = NOT_RECORDED,
        allowlist: Collection[str] = (),
        passed_with: Collection[str] = (),
        events: EventBus | None = None,
    ) -> None:
        self.vm_name = vm_name
        self.address = normalize_address(address)
        self.manager = manager
        self.ownership = ownership
        self.lifecycle = lifecycle
        self.record_original = record_original
        self.original: str | _NotRecorded | None = recorded_original
        self.allowlist = tuple(allowlist)
        #: The VM's other passthrough devices: they do not block group viability.
        self.passed_with = tuple(passed_with)
        self.events = events
        self.log = get_logger("volant.vfio", vm=vm_name, pci_address=self.address)

    async def on_start(self) -> None:
        newly_claimed = self.ownership.claim(self.address, self.vm_name)
        try:
            await self._bind()
        except BaseException:
            if newly_claimed:
                self.ownership.release(self.address, self.vm_name)
            raise

    async def _bind(self) -> None:
        manager = self.manager

        def check() -> BindPlan:
            manager.validate([self.address], self.allowlist)
            manager.check_viability([self.address], also_passed=self.passed_with)
            return manager.plan_bind(self.address)

        plan = await trio.to_thread.run_sync(check)
        if not plan.already_bound and plan.original_driver != self.original:
            await self.record_original(self.address, plan.original_driver)
            self.original = plan.original_driver
        elif isinstance(self.original, _NotRecorded):
            # Already on vfio-pci and we never saw it on another driver.
            await self.record_original(self.address, None)
            self.original = None
        await trio.to_thread.run_sync(manager.bind, self.address)
        self.log.info("vfio_bound", original_driver=self.original)
        if self.events is not None:
            self.events.publish("VFIO_BOUND", self.vm_name, pci_address=self.address,
                                original_driver=self.original or "",
                                message=f"{self.address} bound to vfio-pci")

    async def handle(self, msg: Any) -> Any:
        if msg == "info":
            return await trio.to_thread.run_sync(self.manager.info, self.address)
        raise TypeError(f"unknown message {msg!r}")

    async def on_stop(self) -> None:
        if self.lifecycle.detaching:
            return  # the VM keeps running with its device; the next volantd adopts both
        original = None if isinstance(self.original, _NotRecorded) else self.original
        await trio.to_thread.run_sync(self.manager.release, self.address, original)
        self.ownership.release(self.address, self.vm_name)
        self.log.info("vfio_released", restored_driver=original)
        if self.events is not None:
            self.events.publish("VFIO_RELEASED", self.vm_name, pci_address=self.address,
                                restored_driver=original or "",
                                message=f"{self.address} returned to {original or 'no driver'}")


@attrs.frozen
class VfioRecovery:
    released: list[tuple[str, str]]  # (vm, address) given back to the host
    failed: list[tuple[str, str, str]]  # (vm, address, error)
    conflicts: list[tuple[str, str, str]]  # (address, kept by, refused for)


def recover_vfio(manager: VfioManager, ownership: VfioOwnership,
                 recorded: Mapping[str, Mapping[str, str | None]],
                 live_vms: Collection[str]) -> VfioRecovery:
    """At startup: rebuild ownership for live VMs, release devices of VMs that are gone.

    ``recorded`` is ``{vm: {address: original driver}}`` from the VM records
    (including VMs whose destroy was interrupted); ``live_vms`` are the VMs that
    stay. Blocking sysfs I/O: call from a thread, before any binding actor starts.
    """
    conflicts = ownership.rebuild(
        {vm: list(devices) for vm, devices in recorded.items() if vm in live_vms})
    released: list[tuple[str, str]] = []
    failed: list[tuple[str, str, str]] = []
    log = get_logger("volant.vfio")
    for vm in sorted(set(recorded) - set(live_vms)):
        for address, original in sorted(recorded[vm].items()):
            if ownership.owner(address) is not None:
                continue  # a live VM holds it now: not ours to give back
            try:
                if not manager.sysfs.exists(address):
                    continue
                manager.release(address, original)
            except VolantError as exc:
                failed.append((vm, address, exc.message))
                log.warning("vfio_orphan_release_failed", vm=vm, pci_address=address,
                            error=exc.message)
            else:
                released.append((vm, address))
                log.info("vfio_orphan_released", vm=vm, pci_address=address,
                         restored_driver=original)
    return VfioRecovery(released=released, failed=failed, conflicts=conflicts)
