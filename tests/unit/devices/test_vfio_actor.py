"""The VFIO binding actor, ownership registry and startup recovery on the fake sysfs."""

from __future__ import annotations

import pytest
import trio

from tests.actortools import run_until_stopped
from tests.fakesysfs import AUDIO, GPU, NIC, VIRTIO, FakeSysfsTree
from volant.devices import VfioManager
from volant.errors import ConflictError, UnprocessableError
from volant.orchestrator.lifecycle import DaemonLifecycle
from volant.orchestrator.vfio import (
    VfioBindingActor,
    VfioOwnership,
    check_assignment,
    recover_vfio,
)


class Recorder:
    """Stands in for the VM actor's persistence callback; checks the order of effects."""

    def __init__(self, tree: FakeSysfsTree) -> None:
        self.tree = tree
        self.recorded: dict[str, str | None] = {}
        self.driver_at_record: dict[str, str | None] = {}

    async def __call__(self, address: str, driver: str | None) -> None:
        self.recorded[address] = driver
        self.driver_at_record[address] = self.tree.driver_of(address)


def make_actor(vm: str, address: str, manager: VfioManager, ownership: VfioOwnership,
               lifecycle: DaemonLifecycle, recorder: Recorder, **kw: object
               ) -> VfioBindingActor:
    return VfioBindingActor(vm, address, manager=manager, ownership=ownership,
                            lifecycle=lifecycle, record_original=recorder, **kw)  # type: ignore[arg-type]


async def test_binds_records_original_first_and_restores_on_stop(
        tree: FakeSysfsTree, manager: VfioManager) -> None:
    ownership, lifecycle, recorder = VfioOwnership(), DaemonLifecycle("t"), Recorder(tree)
    actor = make_actor("web", NIC, manager, ownership, lifecycle, recorder)
    async with trio.open_nursery() as nursery:
        done = await run_until_stopped(actor, nursery)
        assert tree.driver_of(NIC) == "vfio-pci"
        assert recorder.recorded == {NIC: "igb"}
        assert recorder.driver_at_record[NIC] == "igb"  # persisted before the unbind
        assert ownership.owner(NIC) == "web"
        actor.request_stop()
        await done.wait()
    assert tree.driver_of(NIC) == "igb"
    assert tree.override_of(NIC) is None
    assert ownership.owner(NIC) is None


async def test_detaching_leaves_the_device_bound(tree: FakeSysfsTree,
                                                 manager: VfioManager) -> None:
    ownership, lifecycle, recorder = VfioOwnership(), DaemonLifecycle("t"), Recorder(tree)
    actor = make_actor("web", NIC, manager, ownership, lifecycle, recorder)
    async with trio.open_nursery() as nursery:
        done = await run_until_stopped(actor, nursery)
        lifecycle.detaching = True
        actor.request_stop()
        await done.wait()
    assert tree.driver_of(NIC) == "vfio-pci"


async def test_restart_keeps_the_recorded_original(tree: FakeSysfsTree,
                                                   manager: VfioManager) -> None:
    """A new incarnation (volantd restarted) finds the device on vfio-pci already."""
    manager.bind(NIC)
    ownership, lifecycle, recorder = VfioOwnership(), DaemonLifecycle("t"), Recorder(tree)
    actor = make_actor("web", NIC, manager, ownership, lifecycle, recorder,
                       recorded_original="igb")
    async with trio.open_nursery() as nursery:
        done = await run_until_stopped(actor, nursery)
        assert recorder.recorded == {}  # nothing new to record
        actor.request_stop()
        await done.wait()
    assert tree.driver_of(NIC) == "igb"


async def test_double_assignment_is_refused(tree: FakeSysfsTree, manager: VfioManager) -> None:
    ownership, lifecycle = VfioOwnership(), DaemonLifecycle("t")
    first = make_actor("web", NIC, manager, ownership, lifecycle, Recorder(tree))
    second_recorder = Recorder(tree)
    second = make_actor("db", NIC, manager, ownership, lifecycle, second_recorder)
    async with trio.open_nursery() as nursery:
        await run_until_stopped(first, nursery)
        with pytest.raises(ConflictError, match="already assigned to vm web"):
            await second.run()
        assert second_recorder.recorded == {}
        with pytest.raises(ConflictError):
            check_assignment(manager, ownership, "db", [NIC])
        assert check_assignment(manager, ownership, "web", [NIC]) == [NIC]
        assert ownership.owner(NIC) == "web"
        nursery.cancel_scope.cancel()


async def test_unviable_group_refused_and_claim_dropped(tree: FakeSysfsTree,
                                                        manager: VfioManager) -> None:
    ownership, lifecycle, recorder = VfioOwnership(), DaemonLifecycle("t"), Recorder(tree)
    actor = make_actor("gpu-vm", GPU, manager, ownership, lifecycle, recorder)
    with pytest.raises(ConflictError, match=AUDIO):
        await actor.run()
    assert tree.driver_of(GPU) == "nvidia"
    assert ownership.owner(GPU) is None
    assert recorder.recorded == {}
    # Passing the whole group together works.
    both = [make_actor("gpu-vm", addr, manager, ownership, lifecycle, recorder,
                       passed_with=[GPU, AUDIO]) for addr in (GPU, AUDIO)]
    async with trio.open_nursery() as nursery:
        for actor in both:
            await run_until_stopped(actor, nursery)
        assert {tree.driver_of(GPU), tree.driver_of(AUDIO)} == {"vfio-pci"}
        for actor in both:
            actor.request_stop()
    assert (tree.driver_of(GPU), tree.driver_of(AUDIO)) == ("nvidia", "snd_hda_intel")


async def test_allowlist_refusal(tree: FakeSysfsTree, manager: VfioManager) -> None:
    actor = make_actor("web", NIC, manager, VfioOwnership(), DaemonLifecycle("t"),
                       Recorder(tree), allowlist=["10de:*"])
    with pytest.raises(UnprocessableError):
        await actor.run()
    assert tree.driver_of(NIC) == "igb"


def test_recovery_releases_devices_of_gone_vms(tree: FakeSysfsTree,
                                               manager: VfioManager) -> None:
    """After a volantd crash: 'old' was being destroyed, 'web' stays."""
    manager.bind(NIC)
    manager.bind(VIRTIO)
    ownership = VfioOwnership()
    report = recover_vfio(manager, ownership,
                          {"web": {VIRTIO: None}, "old": {NIC: "igb", "0000:0a:00.0": None}},
                          live_vms={"web"})
    assert report.released == [("old", NIC)]
    assert report.failed == []
    assert tree.driver_of(NIC) == "igb"
    assert tree.driver_of(VIRTIO) == "vfio-pci"  # still the live VM's
    assert ownership.snapshot() == {VIRTIO: "web"}


def test_ownership_rebuild_reports_conflicts() -> None:
    ownership = VfioOwnership()
    conflicts = ownership.rebuild({"b": [NIC], "a": [NIC.upper(), GPU]})
    assert conflicts == [(NIC, "a", "b")]
    assert ownership.devices_of("a") == [GPU, NIC]
    assert ownership.release(NIC, "b") is False
    assert ownership.release(NIC, "a") is True
