"""The VFIO binding actor (one per passed-through device, a child of the VM's runner),
the ownership registry, and startup cleanup.

Start (``on_start``): claim the device for this VM (409 if another VM owns it),
validate it (address, existence, allowlist), check its IOMMU group is viable,
learn its current driver and **persist it before touching anything** — in the
VM's record (through the VM's callback), then in the daemon-wide VFIO ledger
(``vfioledger.py``) — then bind it to vfio-pci. A crash at any point therefore
leaves either an untouched device or a recorded original driver.

Stop (``on_stop``, graceful only): release the device (vfio-pci unbound,
``driver_override`` cleared, original driver bound again), drop its ledger
entry and ownership — unless volantd itself is detaching, when the VM keeps
running with its device.

Ownership is in memory (``VfioOwnership``, which also carries the ledger) and
rebuilt at startup by :func:`recover_vfio` from the VM records and the ledger.
It releases every device no live VM record holds: devices of VMs being
destroyed (a volantd crash in the middle of a destroy) and, through the ledger,
devices of VMs whose record is gone outright or was quarantined.

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
from volant.orchestrator.events import EventBus, utc_now
from volant.orchestrator.lifecycle import DaemonLifecycle
from volant.orchestrator.vfioledger import LedgerEntry, VfioLedger

__all__ = [
    "NOT_RECORDED",
    "RecordOriginal",
    "VfioBindingActor",
    "VfioLedger",
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

    def __init__(self, ledger: VfioLedger | None = None) -> None:
        self._owners: dict[str, str] = {}
        #: The durable record of bound devices, opened by the VM manager at startup
        #: (``None``: memory only, as in tests of the actor alone).
        self.ledger = ledger

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
        except BaseException as exc:
            if newly_claimed:
                self.ownership.release(self.address, self.vm_name)
            if isinstance(exc, Exception):
                await self._forget_unless_bound()
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
        await self._note_in_ledger()
        await trio.to_thread.run_sync(manager.bind, self.address)
        self.log.info("vfio_bound", original_driver=self.original)
        if self.events is not None:
            self.events.publish("VFIO_BOUND", self.vm_name, pci_address=self.address,
                                original_driver=self.original or "",
                                message=f"{self.address} bound to vfio-pci")

    def _original_or_none(self) -> str | None:
        return None if isinstance(self.original, _NotRecorded) else self.original

    async def _note_in_ledger(self) -> None:
        """The ledger entry, after the VM record and before the bind (a failed write: no bind)."""
        ledger = self.ownership.ledger
        if ledger is not None:
            await ledger.record(self.address, self.vm_name, self._original_or_none())

    async def _forget_unless_bound(self) -> None:
        """After a failed start: drop our ledger entry if the device is not on vfio-pci
        (the bind was rolled back or never happened); a bound device keeps it."""
        ledger = self.ownership.ledger
        entry = ledger.get(self.address) if ledger is not None else None
        if ledger is None or entry is None or entry.vm != self.vm_name:
            return
        manager = self.manager
        try:
            driver = await trio.to_thread.run_sync(manager.sysfs.current_driver, self.address)
            if driver != manager.driver:
                await ledger.remove(self.address, self.vm_name)
        except VolantError as exc:
            self.log.warning("vfio_ledger_cleanup_failed", error=exc.message)

    async def handle(self, msg: Any) -> Any:
        if msg == "info":
            return await trio.to_thread.run_sync(self.manager.info, self.address)
        raise TypeError(f"unknown message {msg!r}")

    async def on_stop(self) -> None:
        if self.lifecycle.detaching:
            return  # the VM keeps running with its device; the next volantd adopts both
        original = self._original_or_none()
        await trio.to_thread.run_sync(self.manager.release, self.address, original)
        self.ownership.release(self.address, self.vm_name)
        ledger = self.ownership.ledger
        if ledger is not None:
            try:
                await ledger.remove(self.address, self.vm_name)
            except VolantError as exc:  # the device is back; the next startup drops the entry
                self.log.warning("vfio_ledger_remove_failed", error=exc.message)
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
    #: (vm, address, what disagreed and how it was resolved): ledger vs records.
    mismatches: list[tuple[str, str, str]] = attrs.field(factory=list)
    #: Why the reconciled ledger could not be written ("" if it was, or nothing changed).
    ledger_error: str = ""


def _valid_addresses(vm: str, devices: Mapping[str, str | None]) -> dict[str, str | None]:
    """``devices`` keyed by normalised address; a malformed one (a hand-edited record)
    is logged and skipped rather than stopping recovery."""
    valid: dict[str, str | None] = {}
    for address, original in devices.items():
        try:
            valid[normalize_address(address)] = original
        except VolantError:
            get_logger("volant.vfio").warning("vfio_record_address_invalid", vm=vm,
                                              pci_address=repr(address))
    return valid


def _driver(name: str | None) -> str:
    return name or "no driver"


def recover_vfio(manager: VfioManager, ownership: VfioOwnership,
                 recorded: Mapping[str, Mapping[str, str | None]],
                 live_vms: Collection[str]) -> VfioRecovery:
    """At startup: rebuild ownership for live VMs, give back every device none of them holds.

    ``recorded`` is ``{vm: {address: original driver}}`` from the VM records
    (including VMs whose destroy was interrupted); ``live_vms`` are the VMs that
    stay. The ledger (``ownership.ledger``, when set) adds the devices whose VM
    record is gone outright or was quarantined. Where both know a device, the
    record wins: a live record keeps its device (the ledger is corrected), a
    dead record's original driver is the one restored. Disagreements are
    reported in ``mismatches``. The ledger is then rewritten to hold exactly the
    devices live VMs hold plus those whose release failed (retried next time).

    Blocking sysfs and file I/O: call from a thread, before any binding actor
    starts or with ``ownership.ledger.lock`` held. In the latter case (a restarted
    VM manager) a device claimed in memory by a live VM's running binding actor
    stays with it even if the records read earlier do not show it yet.
    """
    ledger = ownership.ledger
    # Non-empty only for a restarted VM manager: claims of binding actors running now,
    # which may have bound a device after the records passed in here were read.
    claimed_now = ownership.snapshot()
    records = {vm: _valid_addresses(vm, devices) for vm, devices in recorded.items()}
    live = {vm: devices for vm, devices in records.items() if vm in live_vms}
    conflicts = ownership.rebuild(live)
    entries = ledger.entries() if ledger is not None else {}
    now = utc_now()
    log = get_logger("volant.vfio")
    mismatches: list[tuple[str, str, str]] = []
    keep: dict[str, LedgerEntry] = {}

    # Devices a live record holds stay bound; that record wins over the ledger.
    for address, owner in sorted(ownership.snapshot().items()):
        original = live[owner][address]
        entry = entries.get(address)
        if entry is None:
            mismatches.append((owner, address, f"{address} was missing from the vfio ledger; "
                               f"added from the record of vm {owner}"))
            keep[address] = LedgerEntry(vm=owner, original_driver=original, bound_at=now)
        elif entry.vm != owner:
            mismatches.append((owner, address, f"the vfio ledger had {address} for vm "
                               f"{entry.vm}; the live record of vm {owner} wins"))
            keep[address] = LedgerEntry(vm=owner, original_driver=original, bound_at=now)
        elif entry.original_driver != original:
            mismatches.append((owner, address, f"the vfio ledger had original driver "
                               f"{_driver(entry.original_driver)} for {address}; the record "
                               f"of vm {owner} says {_driver(original)} and wins"))
            keep[address] = attrs.evolve(entry, original_driver=original)
        else:
            keep[address] = entry

    # Everything else goes back to the host: devices of records being destroyed, then
    # ledger entries whose VM has no record holding them (deleted, quarantined).
    orphans: dict[str, tuple[str, str | None]] = {}
    for vm in sorted(set(records) - set(live)):
        for address, original in sorted(records[vm].items()):
            if ownership.owner(address) is None:
                orphans.setdefault(address, (vm, original))
    for address, entry in sorted(entries.items()):
        if ownership.owner(address) is not None:
            continue
        known = orphans.get(address)
        if known is None and entry.vm in live_vms and claimed_now.get(address) == entry.vm:
            ownership.claim(address, entry.vm)  # its binding actor holds it right now
            keep[address] = entry
            continue
        if known is None:
            if entry.vm in live_vms:
                mismatches.append((entry.vm, address, f"the vfio ledger had {address} for vm "
                                   f"{entry.vm} but its record does not hold it; given back"))
            orphans[address] = (entry.vm, entry.original_driver)
        elif known != (entry.vm, entry.original_driver):
            mismatches.append((known[0], address, f"the vfio ledger had {address} for vm "
                               f"{entry.vm} with original driver "
                               f"{_driver(entry.original_driver)}; the record of vm "
                               f"{known[0]} wins ({_driver(known[1])})"))
    for vm, address, message in mismatches:
        log.warning("vfio_ledger_mismatch", vm=vm, pci_address=address, detail=message)

    released: list[tuple[str, str]] = []
    failed: list[tuple[str, str, str]] = []
    for address, (vm, original) in sorted(orphans.items(), key=lambda item: (item[1][0],
                                                                              item[0])):
        try:
            if not manager.sysfs.exists(address):
                continue  # unplugged: when it comes back the kernel probes it afresh
            manager.release(address, original)
        except VolantError as exc:
            failed.append((vm, address, exc.message))
            log.warning("vfio_orphan_release_failed", vm=vm, pci_address=address,
                        error=exc.message)
            previous = entries.get(address)
            keep[address] = LedgerEntry(  # so the next startup tries again
                vm=vm, original_driver=original,
                bound_at=previous.bound_at if previous is not None else now)
        else:
            released.append((vm, address))
            log.info("vfio_orphan_released", vm=vm, pci_address=address,
                     restored_driver=original)

    ledger_error = ""
    if ledger is not None and keep != entries:
        try:
            ledger.replace(keep)
        except VolantError as exc:
            ledger_error = exc.message
            log.warning("vfio_ledger_write_failed", error=exc.message)
    return VfioRecovery(released=released, failed=failed, conflicts=conflicts,
                        mismatches=mismatches, ledger_error=ledger_error)
