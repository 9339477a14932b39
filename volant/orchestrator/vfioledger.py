"""The VFIO ledger: ``<state_dir>/vfio.json``, every device volantd has bound, daemon-wide.

The VM records also keep each device's original driver (``vfio_originals``),
but a record can disappear: deleted outright, or corrupted and quarantined. The
ledger is the second, VM-independent copy that lets startup recovery give such
a device back to its original driver anyway.

Document (``schema_version`` 1)::

    {"schema_version": 1,
     "devices": {"0000:02:00.0": {"vm": "web", "original_driver": "igb",
                                  "bound_at": "2024-01-01T00:00:00Z"}}}

Rules:

- an entry is written (atomically, through the store) **before** the device is
  rebound, right after the VM record got the original driver, so a crash
  between the write and the bind leaves an entry for an untouched device, which
  recovery's release leaves as it is;
- it is removed once the device has been given back;
- memory follows the disk: a failed write changes nothing in memory;
- one writer: this object. Its async methods serialise on ``lock``; the sync
  ones (used by startup recovery in a worker thread) must run with ``lock``
  held, or before any binding actor exists;
- a file that cannot be used (bad JSON, wrong shape, newer schema) is moved to
  the quarantine (nothing is destroyed) and the ledger starts empty: recovery
  then falls back to the VM records and writes a fresh ledger from them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from volant.devices.vfio import normalize_address
from volant.errors import VolantError
from volant.logging import get_logger
from volant.names import validate_name
from volant.orchestrator.events import utc_now
from volant.store import SnapshotCodec, SnapshotError, StateStore, StoreReadError

__all__ = ["LEDGER_CODEC", "LEDGER_PATH", "LedgerEntry", "LedgerProblem", "VfioLedger"]

LEDGER_PATH = "vfio.json"
LEDGER_CODEC = SnapshotCodec("vfio-ledger", 1)


@attrs.frozen
class LedgerEntry:
    """One bound device: the VM it was bound for and the driver to give it back to."""

    vm: str
    original_driver: str | None
    bound_at: str

    def to_json(self) -> dict[str, Any]:
        return {"vm": self.vm, "original_driver": self.original_driver,
                "bound_at": self.bound_at}


@attrs.frozen
class LedgerProblem:
    """The ledger file could not be used; ``moved_to`` is None when even moving it failed."""

    relpath: str
    reason: str
    moved_to: str | None


class LedgerFormatError(VolantError):
    """The file parses but does not have the ledger's shape."""


def entries_from_doc(doc: Mapping[str, Any]) -> dict[str, LedgerEntry]:
    """The entries of a decoded document; ``LedgerFormatError`` on any malformed part."""
    devices = doc.get("devices", {})
    if not isinstance(devices, dict):
        raise LedgerFormatError("devices: expected an object")
    entries: dict[str, LedgerEntry] = {}
    for key, value in devices.items():
        try:
            address = normalize_address(key, "devices")
        except VolantError as exc:
            raise LedgerFormatError(f"devices: {exc.message}") from exc
        if not isinstance(value, dict):
            raise LedgerFormatError(f"devices.{address}: expected an object")
        original, bound_at = value.get("original_driver"), value.get("bound_at", "")
        try:
            vm = validate_name(value.get("vm"), f"devices.{address}.vm")
        except VolantError as exc:
            raise LedgerFormatError(exc.message) from exc
        if original is not None and (not isinstance(original, str) or not original):
            raise LedgerFormatError(
                f"devices.{address}.original_driver: expected a driver name or null")
        if not isinstance(bound_at, str):
            raise LedgerFormatError(f"devices.{address}.bound_at: expected a string")
        entries[address] = LedgerEntry(vm=vm, original_driver=original, bound_at=bound_at)
    return entries


class VfioLedger:
    """The durable ``pci address -> LedgerEntry`` map (see the module docstring)."""

    def __init__(self, store: StateStore, relpath: str = LEDGER_PATH) -> None:
        self.store = store
        self.relpath = relpath
        self._entries: dict[str, LedgerEntry] = {}
        #: Serialises writers (binding actors, recovery): each computes the next document
        #: from the current one, so two unserialised writes could lose an entry.
        self.lock = trio.Lock()
        self.log = get_logger("volant.vfio", ledger=relpath)

    def entries(self) -> dict[str, LedgerEntry]:
        return dict(self._entries)

    def get(self, address: str) -> LedgerEntry | None:
        return self._entries.get(normalize_address(address))

    # ---- sync (worker thread; see the locking rule) -------------------------------------

    def load(self) -> LedgerProblem | None:
        """Read the file into memory; a file that cannot be used is quarantined.

        Never raises: a bad ledger must not stop volantd (recovery falls back to the
        VM records). Returns what went wrong, for an event, or None.
        """
        self._entries = {}
        try:
            doc = self.store.read(self.relpath, LEDGER_CODEC)
            if doc is None:
                return None
            self._entries = entries_from_doc(doc)
            return None
        except (SnapshotError, StoreReadError, LedgerFormatError) as exc:
            reason = exc.message
        moved_to: str | None
        try:
            moved_to = str(self.store.quarantine(self.relpath, reason, kind=LEDGER_CODEC.kind))
        except Exception as exc:  # a failing disk: keep going on the records alone
            moved_to = None
            self.log.warning("vfio_ledger_quarantine_failed", reason=reason, error=str(exc))
        self.log.warning("vfio_ledger_unusable", reason=reason, moved_to=moved_to)
        return LedgerProblem(relpath=self.relpath, reason=reason, moved_to=moved_to)

    def replace(self, entries: Mapping[str, LedgerEntry]) -> None:
        """Write ``entries`` as the whole ledger, then adopt them (nothing changes on error)."""
        updated = {normalize_address(address): entry for address, entry in entries.items()}
        doc = {"devices": {address: entry.to_json()
                           for address, entry in sorted(updated.items())}}
        self.store.write(self.relpath, LEDGER_CODEC, doc)
        self._entries = updated

    # ---- async (trio thread) ------------------------------------------------------------

    async def record(self, address: str, vm: str, original_driver: str | None) -> bool:
        """Note that ``address`` is (about to be) bound for ``vm``; True if it was written.

        An identical entry is kept as it is (a VM restarting does not rewrite the file).
        """
        value = normalize_address(address)
        async with self.lock:
            current = self._entries.get(value)
            if current is not None and (current.vm, current.original_driver) == (
                    vm, original_driver):
                return False
            entry = LedgerEntry(vm=vm, original_driver=original_driver, bound_at=utc_now())
            await trio.to_thread.run_sync(
                functools.partial(self.replace, {**self._entries, value: entry}))
            return True

    async def remove(self, address: str, vm: str) -> bool:
        """Drop ``vm``'s entry for ``address`` (another VM's entry is left alone)."""
        value = normalize_address(address)
        async with self.lock:
            current = self._entries.get(value)
            if current is None or current.vm != vm:
                return False
            remaining = {key: entry for key, entry in self._entries.items() if key != value}
            await trio.to_thread.run_sync(functools.partial(self.replace, remaining))
            return True
