"""The VFIO ledger (``<state_dir>/vfio.json``): written before a bind, dropped after a
release, and the startup recovery that uses it with the VM records (fake sysfs)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.actortools import run_until_stopped
from tests.fakesysfs import NIC, VIRTIO, FakeSysfsTree
from volant.config import Config
from volant.devices import VfioManager
from volant.errors import UnavailableError
from volant.orchestrator.lifecycle import DaemonLifecycle
from volant.orchestrator.vfio import VfioBindingActor, VfioOwnership, recover_vfio
from volant.orchestrator.vfioledger import LEDGER_PATH, LedgerEntry, VfioLedger
from volant.orchestrator.vm import VMDeps
from volant.orchestrator.vmrecord import (
    VM_CODEC,
    RestartPolicy,
    VMRecord,
    VMStatus,
    record_to_doc,
)
from volant.orchestrator.vms import VMManager, vm_supervisor
from volant.store import StateStore, StoreFullError


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def on_disk(store: StateStore) -> dict[str, Any]:
    """The ledger file's devices, read straight from disk."""
    doc = json.loads(store.path_of(LEDGER_PATH).read_text())
    assert doc["schema_version"] == 1
    devices: dict[str, Any] = doc["devices"]
    return devices


def fresh_ownership(store: StateStore) -> VfioOwnership:
    """What a restarted volantd has: the ledger as loaded from disk, nothing in memory."""
    ledger = VfioLedger(store)
    assert ledger.load() is None
    return VfioOwnership(ledger)


async def no_record(_address: str, _driver: str | None) -> None:
    return None


def binding_actor(vm: str, address: str, manager: VfioManager, ownership: VfioOwnership,
                  lifecycle: DaemonLifecycle, **kw: Any) -> VfioBindingActor:
    return VfioBindingActor(vm, address, manager=manager, ownership=ownership,
                            lifecycle=lifecycle, record_original=no_record, **kw)


async def bind_and_detach(vm: str, address: str, manager: VfioManager,
                          store: StateStore) -> None:
    """Bind ``address`` for ``vm``, then stop the way a stopping volantd does (device kept)."""
    ownership, lifecycle = fresh_ownership(store), DaemonLifecycle("t")
    actor = binding_actor(vm, address, manager, ownership, lifecycle)
    async with trio.open_nursery() as nursery:
        done = await run_until_stopped(actor, nursery)
        lifecycle.detaching = True
        actor.request_stop()
        await done.wait()


# ------------------------------------------------------------------ the ledger itself


async def test_record_and_remove_write_through(store: StateStore) -> None:
    ledger = VfioLedger(store)
    assert ledger.load() is None and ledger.entries() == {}
    assert await ledger.record(NIC.upper(), "web", "igb") is True
    entry = on_disk(store)[NIC]
    assert (entry["vm"], entry["original_driver"]) == ("web", "igb") and entry["bound_at"]
    mtime = store.path_of(LEDGER_PATH).stat().st_mtime_ns
    assert await ledger.record(NIC, "web", "igb") is False  # same entry: no rewrite
    assert store.path_of(LEDGER_PATH).stat().st_mtime_ns == mtime
    await ledger.record(VIRTIO, "db", None)
    assert await ledger.remove(NIC, "db") is False  # not db's entry
    assert set(on_disk(store)) == {NIC, VIRTIO}
    assert await ledger.remove(NIC, "web") is True
    assert on_disk(store) == {VIRTIO: {"vm": "db", "original_driver": None,
                                       "bound_at": on_disk(store)[VIRTIO]["bound_at"]}}
    reloaded = VfioLedger(store)
    assert reloaded.load() is None
    assert reloaded.entries() == ledger.entries()
    assert not os.listdir(store.quarantine_dir)


async def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    def full(_fd: int, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    ledger = VfioLedger(StateStore(tmp_path / "state", writer=full))
    with pytest.raises(StoreFullError):
        await ledger.record(NIC, "web", "igb")
    assert ledger.entries() == {}


@pytest.mark.parametrize("content", [
    b"{not json",
    b'{"schema_version": 1, "devices": []}',
    b'{"schema_version": 1, "devices": {"0000:02:00.0": {"vm": "../x"}}}',
    b'{"schema_version": 1, "devices": {"nope": {"vm": "web"}}}',
    b'{"schema_version": 99, "devices": {}}',
    b"",
])
def test_an_unusable_ledger_is_quarantined_and_starts_empty(
        store: StateStore, content: bytes) -> None:
    store.path_of(LEDGER_PATH).write_bytes(content)
    ledger = VfioLedger(store)
    problem = ledger.load()
    assert problem is not None and problem.relpath == LEDGER_PATH and problem.reason
    assert ledger.entries() == {}
    assert not store.path_of(LEDGER_PATH).exists()
    assert problem.moved_to is not None and Path(problem.moved_to).read_bytes() == content
    reason = Path(problem.moved_to + ".reason").read_text()
    assert "vfio-ledger" in reason and "vfio.json" in reason


# ------------------------------------------------------------------ the binding actor


async def test_entry_written_before_the_bind_and_dropped_after_release(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    ownership, lifecycle = fresh_ownership(store), DaemonLifecycle("t")
    seen_at_first_write: list[dict[str, Any]] = []
    kernel_write = tree.kernel_write

    def spying_write(path: Path, value: str) -> None:
        if not seen_at_first_write:
            seen_at_first_write.append(on_disk(store))
        kernel_write(path, value)

    tree.kernel_write = spying_write  # type: ignore[method-assign]
    actor = binding_actor("web", NIC, manager, ownership, lifecycle)
    async with trio.open_nursery() as nursery:
        done = await run_until_stopped(actor, nursery)
        assert tree.driver_of(NIC) == "vfio-pci"
        assert seen_at_first_write[0][NIC]["vm"] == "web"  # durable before sysfs changed
        assert seen_at_first_write[0][NIC]["original_driver"] == "igb"
        actor.request_stop()
        await done.wait()
    assert tree.driver_of(NIC) == "igb"
    assert on_disk(store) == {}
    assert ownership.ledger is not None and ownership.ledger.entries() == {}


async def test_no_ledger_entry_no_bind(tree: FakeSysfsTree, manager: VfioManager,
                                       tmp_path: Path) -> None:
    def full(_fd: int, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    ownership = VfioOwnership(VfioLedger(StateStore(tmp_path / "state", writer=full)))
    actor = binding_actor("web", NIC, manager, ownership, DaemonLifecycle("t"))
    with pytest.raises(StoreFullError):
        await actor.run()
    assert tree.driver_of(NIC) == "igb" and tree.override_of(NIC) is None
    assert ownership.owner(NIC) is None


async def test_a_failed_bind_drops_the_entry(tree: FakeSysfsTree, manager: VfioManager,
                                             store: StateStore) -> None:
    tree.remove_driver("vfio-pci")  # the bind itself fails (503), nothing was changed
    ownership = fresh_ownership(store)
    actor = binding_actor("web", NIC, manager, ownership, DaemonLifecycle("t"))
    with pytest.raises(UnavailableError):
        await actor.run()
    assert tree.driver_of(NIC) == "igb"
    assert on_disk(store) == {}


async def test_detaching_keeps_the_entry(tree: FakeSysfsTree, manager: VfioManager,
                                         store: StateStore) -> None:
    await bind_and_detach("web", NIC, manager, store)
    assert tree.driver_of(NIC) == "vfio-pci"
    assert on_disk(store)[NIC]["vm"] == "web"


# ------------------------------------------------------------------ recovery


async def test_record_deleted_outright_device_goes_back(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    await bind_and_detach("web", NIC, manager, store)
    # volantd restarts and finds no record of "web" at all.
    ownership = fresh_ownership(store)
    report = recover_vfio(manager, ownership, recorded={}, live_vms=set())
    assert report.released == [("web", NIC)]
    assert report.failed == [] and report.mismatches == [] and report.ledger_error == ""
    assert tree.driver_of(NIC) == "igb" and tree.override_of(NIC) is None
    assert on_disk(store) == {}
    assert ownership.snapshot() == {}


async def test_entry_of_a_device_never_bound_is_harmless(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    """A crash between the ledger write and the bind: the device is untouched."""
    ledger = VfioLedger(store)
    await ledger.record(NIC, "web", "igb")
    tree.writes.clear()
    report = recover_vfio(manager, fresh_ownership(store), recorded={}, live_vms=set())
    assert report.released == [("web", NIC)]
    assert tree.driver_of(NIC) == "igb"
    assert tree.writes == []  # nothing to undo, nothing written
    assert on_disk(store) == {}


async def test_live_record_wins_over_the_ledger(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    manager.bind(NIC)
    manager.bind(VIRTIO)
    ledger = VfioLedger(store)
    ledger.replace({NIC: LedgerEntry("other", "e1000e", "t0"),
                    VIRTIO: LedgerEntry("web", None, "t1")})
    ownership = fresh_ownership(store)
    report = recover_vfio(manager, ownership, recorded={"web": {NIC: "igb"}},
                          live_vms={"web"})
    assert ownership.snapshot() == {NIC: "web"}
    assert tree.driver_of(NIC) == "vfio-pci"  # the live VM keeps it
    # VIRTIO: the ledger names a live VM whose record does not hold it -> given back.
    assert report.released == [("web", VIRTIO)]
    assert tree.driver_of(VIRTIO) is None and tree.override_of(VIRTIO) is None
    about = {address: message for _vm, address, message in report.mismatches}
    assert set(about) == {NIC, VIRTIO}
    assert "vm other" in about[NIC] and "wins" in about[NIC]
    assert "does not hold it" in about[VIRTIO]
    assert {k: (v["vm"], v["original_driver"]) for k, v in on_disk(store).items()} == {
        NIC: ("web", "igb")}


async def test_a_restarted_manager_leaves_running_binding_actors_alone(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    """The records were read before web's binding actor bound its device."""
    ownership = fresh_ownership(store)
    actor = binding_actor("web", NIC, manager, ownership, DaemonLifecycle("t"))
    async with trio.open_nursery() as nursery:
        await run_until_stopped(actor, nursery)
        ledger = ownership.ledger
        assert ledger is not None
        async with ledger.lock:
            report = await trio.to_thread.run_sync(
                lambda: recover_vfio(manager, ownership, recorded={}, live_vms={"web"}))
        assert report.released == [] and report.mismatches == []
        assert tree.driver_of(NIC) == "vfio-pci"
        assert ownership.owner(NIC) == "web"
        assert on_disk(store)[NIC]["vm"] == "web"
        nursery.cancel_scope.cancel()


async def test_dead_record_and_ledger_disagree_record_wins(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    manager.bind(NIC)
    VfioLedger(store).replace({NIC: LedgerEntry("old", None, "t0")})
    report = recover_vfio(manager, fresh_ownership(store), recorded={"old": {NIC: "igb"}},
                          live_vms=set())
    assert report.released == [("old", NIC)]
    assert tree.driver_of(NIC) == "igb"  # the record's original, not the ledger's "none"
    assert len(report.mismatches) == 1 and "record of vm old wins" in report.mismatches[0][2]
    assert on_disk(store) == {}


async def test_live_records_missing_from_the_ledger_are_added(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    manager.bind(NIC)
    report = recover_vfio(manager, fresh_ownership(store), recorded={"web": {NIC: "igb"}},
                          live_vms={"web"})
    assert report.released == []
    assert [(vm, address) for vm, address, _ in report.mismatches] == [("web", NIC)]
    assert on_disk(store)[NIC]["original_driver"] == "igb"


async def test_failed_release_keeps_the_entry_for_the_next_start(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    await bind_and_detach("web", NIC, manager, store)
    tree.fail_next["bus/pci/drivers/vfio-pci/unbind"] = errno.EIO
    report = recover_vfio(manager, fresh_ownership(store), recorded={}, live_vms=set())
    assert report.released == [] and [f[:2] for f in report.failed] == [("web", NIC)]
    assert tree.driver_of(NIC) == "vfio-pci"
    assert on_disk(store)[NIC]["original_driver"] == "igb"
    again = recover_vfio(manager, fresh_ownership(store), recorded={}, live_vms=set())
    assert again.released == [("web", NIC)] and tree.driver_of(NIC) == "igb"
    assert on_disk(store) == {}


async def test_a_failed_release_of_a_dead_record_lands_in_the_ledger(
        tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    """The destroying record is deleted right after recovery; the ledger remembers."""
    manager.bind(NIC)
    tree.fail_next["bus/pci/drivers/vfio-pci/unbind"] = errno.EIO
    report = recover_vfio(manager, fresh_ownership(store), recorded={"old": {NIC: "igb"}},
                          live_vms=set())
    assert [f[:2] for f in report.failed] == [("old", NIC)]
    assert on_disk(store)[NIC] == {"vm": "old", "original_driver": "igb",
                                   "bound_at": on_disk(store)[NIC]["bound_at"]}


# ------------------------------------------------------------------ the VM manager's startup


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def publish(self, type: str, name: str, status: str = "", **fields: Any) -> None:
        self.seen.append((type, name, fields))

    def of(self, type_: str) -> list[tuple[str, dict[str, Any]]]:
        return [(name, fields) for kind, name, fields in self.seen if kind == type_]


def vm_manager(tmp_path: Path, store: StateStore, manager: VfioManager
               ) -> tuple[VMManager, Events]:
    events = Events()
    cfg = Config(state_dir=store.state_dir, runtime_dir=tmp_path / "run")
    deps = VMDeps(cfg=cfg, store=store, events=events,  # type: ignore[arg-type]
                  launcher=object(),  # type: ignore[arg-type]
                  lifecycle=DaemonLifecycle("ledger-test"), hostnet=None,
                  publish_view=lambda _n, _v: None, vfio=manager)
    return VMManager(deps, vm_supervisor(), None), events


def write_record(store: StateStore, name: str, status: VMStatus,
                 vfio: dict[str, str | None]) -> None:
    record = VMRecord(
        id=1, name=name, plugin="demo", runtime="demo", status=status, desired="stopped",
        cpu_cores=1, memory_mb=128, network_mode="bridged", ip_address="", mac_address="",
        tap="", vsock_cid=3, kernel_cmdline="", boot_args={}, kernel="", initramfs="",
        root_disk="", root_disk_source="", extra_disks=(), restart_policy=RestartPolicy(),
        vfio_originals=vfio)
    store.write(f"vms/{name}/state.json", VM_CODEC, record_to_doc(record))


async def test_startup_with_a_quarantined_record(
        tmp_path: Path, tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    await bind_and_detach("web", NIC, manager, store)
    write_record(store, "web", VMStatus.RUNNING, {NIC: "igb"})
    store.path_of("vms/web/state.json").write_text('{"schema_version": 1, "name": ')
    vms, events = vm_manager(tmp_path, store, manager)
    await vms.on_start()
    assert [name for name, _ in events.of("SNAPSHOT_QUARANTINED")] == ["vms/web/state.json"]
    assert tree.driver_of(NIC) == "igb" and tree.override_of(NIC) is None
    assert events.of("VFIO_RELEASED") == [("web", {"pci_address": NIC, "message": (
        f"{NIC} given back at startup: its vm is gone")})]
    assert on_disk(store) == {}


async def test_startup_with_a_corrupt_ledger_falls_back_to_records(
        tmp_path: Path, tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    manager.bind(NIC)
    write_record(store, "old", VMStatus.DESTROYING, {NIC: "igb"})  # a destroy interrupted
    store.path_of(LEDGER_PATH).write_text("\x00\x01garbage")
    vms, events = vm_manager(tmp_path, store, manager)
    await vms.on_start()  # does not raise
    quarantined = events.of("SNAPSHOT_QUARANTINED")
    assert [name for name, _ in quarantined] == [LEDGER_PATH]
    assert "recovered from the vm records" in quarantined[0][1]["message"]
    assert len(list(store.quarantine_dir.glob("*vfio.json"))) == 1
    assert tree.driver_of(NIC) == "igb"
    assert {name for name, _ in events.of("VFIO_RELEASED")} == {"old"}
    assert not store.exists("vms/old/state.json")  # the destroy was finished
    assert not store.exists(LEDGER_PATH)  # nothing is bound: nothing to write
    assert vms.deps.vfio_ownership.ledger is not None


async def test_finish_destroy_releases_what_only_the_ledger_knows(
        tmp_path: Path, tree: FakeSysfsTree, manager: VfioManager, store: StateStore) -> None:
    vms, events = vm_manager(tmp_path, store, manager)
    await vms.on_start()  # opens the (absent) ledger
    await bind_and_detach("gone", NIC, manager, store)
    ledger = vms.deps.vfio_ownership.ledger
    assert ledger is not None and ledger.load() is None
    await vms._release_recorded_devices("gone")  # no record at all
    assert tree.driver_of(NIC) == "igb"
    assert on_disk(store) == {}
    assert [name for name, _ in events.of("VFIO_RELEASED")] == ["gone"]
