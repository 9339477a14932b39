"""VFIO logic on the fake sysfs: validation, allowlist, viability, bind/release order."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.fakesysfs import AUDIO, GPU, NIC, VIRTIO, FakeSysfsTree
from volant.devices import Sysfs, SysfsWriteError, VfioManager, allowlist_matches, sysfs_root
from volant.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    UnprocessableError,
    ValidationError,
)


def test_sysfs_root_from_environment() -> None:
    assert sysfs_root({}) == Path("/sys")
    assert sysfs_root({"VOLANT_SYSFS_ROOT": "/tmp/fake"}) == Path("/tmp/fake")


def test_info(manager: VfioManager) -> None:
    info = manager.info(NIC.upper())
    assert info.to_json() == {"address": NIC, "vendor": "8086", "device": "1533",
                              "driver": "igb", "iommu_group": "2", "numa_node": 1}
    assert manager.info(VIRTIO).driver == ""


@pytest.mark.parametrize("bad", ["01:00.0", "0000:01:00.8", "0000:01:00", "zzzz:01:00.0", 7])
def test_malformed_addresses_are_400(manager: VfioManager, bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        manager.validate([bad])
    assert info.value.status == 400


def test_missing_device_is_404(manager: VfioManager) -> None:
    with pytest.raises(NotFoundError):
        manager.validate(["0000:09:00.0"])


def test_allowlist_with_vendor_wildcard(manager: VfioManager) -> None:
    assert manager.validate([GPU, AUDIO], ["10DE:*"]) == [GPU, AUDIO]
    assert manager.validate([NIC], ["8086:1533"]) == [NIC]
    with pytest.raises(UnprocessableError) as info:
        manager.validate([NIC], ["10de:*", "8086:1534"])
    assert "not in the allowlist" in info.value.message
    assert manager.validation_errors([GPU, NIC, "bad"], ["10de:*"]) == [
        f"PCI device {NIC} (8086:1533) is not in the allowlist",
        "pci_addresses[0]: invalid PCI address 'bad' (expected DDDD:BB:DD.F, e.g. 0000:01:00.0)",
    ]
    with pytest.raises(ValidationError):
        manager.validate([GPU], ["10de"])


def test_allowlist_matches() -> None:
    assert allowlist_matches("10de", "2204", [])
    assert allowlist_matches("10de", "2204", ["10de:*"])
    assert not allowlist_matches("10de", "2204", ["1002:*", "10de:2205"])


def test_iommu_groups_list_requested_devices(manager: VfioManager, tree: FakeSysfsTree) -> None:
    groups = [g.to_json() for g in manager.iommu_groups([GPU, NIC])]
    assert groups == [{"id": "1", "devices": [GPU]}, {"id": "2", "devices": [NIC]}]
    (tree.dev_dir(NIC) / "iommu_group").unlink()
    with pytest.raises(UnprocessableError, match="no IOMMU group"):
        manager.iommu_groups([NIC])


def test_group_viability_names_the_blocking_device(manager: VfioManager) -> None:
    with pytest.raises(ConflictError) as info:
        manager.check_viability([GPU])
    assert info.value.details["blocking_device"] == AUDIO
    assert info.value.details["blocking_driver"] == "snd_hda_intel"
    assert AUDIO in info.value.message
    manager.check_viability([GPU, AUDIO])  # the whole group together is viable
    manager.check_viability([GPU], also_passed=[AUDIO])
    manager.check_viability([NIC])  # alone in its group


def test_group_viable_when_peer_is_driverless_or_vfio(manager: VfioManager,
                                                      tree: FakeSysfsTree) -> None:
    manager.bind(AUDIO)
    manager.check_viability([GPU])
    tree.sysfs().unbind(AUDIO, "vfio-pci")
    assert tree.driver_of(AUDIO) is None
    manager.check_viability([GPU])


def test_bind_uses_driver_override_in_kernel_order(manager: VfioManager,
                                                   tree: FakeSysfsTree) -> None:
    plan = manager.bind(NIC)
    assert plan.original_driver == "igb" and not plan.already_bound
    assert tree.driver_of(NIC) == "vfio-pci"
    assert tree.override_of(NIC) == "vfio-pci"
    assert tree.writes == [
        (f"bus/pci/devices/{NIC}/driver_override", "vfio-pci\n"),
        ("bus/pci/drivers/igb/unbind", NIC),
        ("bus/pci/drivers_probe", NIC),
    ]
    assert tree.new_ids["vfio-pci"] == set()  # no new_id: other 8086:1533 stay untouched
    assert manager.device_paths([NIC]) == [f"{tree.root}/bus/pci/devices/{NIC}"]
    again = manager.bind(NIC)
    assert again.already_bound


def test_release_restores_the_original_driver(manager: VfioManager, tree: FakeSysfsTree) -> None:
    manager.bind(NIC)
    tree.writes.clear()
    manager.release(NIC, "igb")
    assert tree.driver_of(NIC) == "igb"
    assert tree.override_of(NIC) is None
    assert tree.writes == [
        ("bus/pci/drivers/vfio-pci/unbind", NIC),
        (f"bus/pci/devices/{NIC}/driver_override", "\n"),
        ("bus/pci/drivers/igb/bind", NIC),
    ]
    with pytest.raises(ConflictError):
        manager.device_paths([NIC])


def test_driverless_device_stays_driverless(manager: VfioManager, tree: FakeSysfsTree) -> None:
    plan = manager.bind(VIRTIO)
    assert plan.original_driver is None
    manager.release(VIRTIO, None)
    assert tree.driver_of(VIRTIO) is None
    assert tree.override_of(VIRTIO) is None


def test_bind_without_vfio_driver_changes_nothing(tree: FakeSysfsTree) -> None:
    tree.remove_driver("vfio-pci")
    manager = VfioManager(tree.sysfs())
    with pytest.raises(UnavailableError, match="modprobe vfio-pci"):
        manager.bind(NIC)
    assert tree.driver_of(NIC) == "igb"
    assert tree.writes == []


def test_failed_bind_is_rolled_back(manager: VfioManager, tree: FakeSysfsTree) -> None:
    tree.fail_next["bus/pci/drivers_probe"] = errno.EIO
    with pytest.raises(SysfsWriteError) as info:
        manager.bind(NIC)
    assert info.value.details["errno"] == errno.EIO
    assert tree.driver_of(NIC) == "igb"
    assert tree.override_of(NIC) is None


def test_api_unbind_lets_the_kernel_reprobe(manager: VfioManager, tree: FakeSysfsTree) -> None:
    manager.bind(GPU)
    manager.unbind_to_host(GPU)
    assert tree.driver_of(GPU) == "nvidia"
    assert tree.override_of(GPU) is None


def test_real_adapter_writes_files(tmp_path: Path) -> None:
    """The production adapter's write is a plain write(2) of the value."""
    target = tmp_path / "bus/pci/drivers/x/bind"
    target.parent.mkdir(parents=True)
    target.write_text("")
    Sysfs(tmp_path).bind("0000:01:00.0", "x")
    assert target.read_text() == "0000:01:00.0"
    with pytest.raises(SysfsWriteError, match="ENOENT"):
        Sysfs(tmp_path).unbind("0000:01:00.0", "x")
