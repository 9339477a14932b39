"""The fake kernel itself behaves like sysfs where the VFIO code depends on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakesysfs import standard_tree
from volant.devices import SysfsWriteError

NIC = "0000:02:00.0"


def test_tree_has_kernel_shape(tmp_path: Path) -> None:
    tree = standard_tree(tmp_path)
    dev = tree.dev_dir(NIC)
    assert os.path.realpath(dev / "driver") == str(tmp_path / "bus/pci/drivers/igb")
    assert os.path.realpath(dev / "iommu_group") == str(tmp_path / "kernel/iommu_groups/2")
    assert os.path.realpath(tmp_path / "kernel/iommu_groups/2/devices" / NIC) == str(dev)
    assert (dev / "driver_override").read_text() == "(null)\n"


def test_override_blocks_other_drivers_and_probe_follows_it(tmp_path: Path) -> None:
    tree = standard_tree(tmp_path)
    sysfs = tree.sysfs()
    sysfs.set_driver_override(NIC, "vfio-pci")
    with pytest.raises(SysfsWriteError, match="EBUSY"):
        sysfs.bind(NIC, "igb")  # still bound
    sysfs.unbind(NIC, "igb")
    with pytest.raises(SysfsWriteError, match="ENODEV"):
        sysfs.bind(NIC, "igb")  # override says vfio-pci only
    sysfs.probe(NIC)
    assert tree.driver_of(NIC) == "vfio-pci"
    with pytest.raises(SysfsWriteError, match="ENODEV"):
        sysfs.unbind(NIC, "igb")


def test_new_id_grabs_every_matching_unbound_device(tmp_path: Path) -> None:
    tree = standard_tree(tmp_path)
    tree.add_device("0000:05:00.0", "8086", "1533", driver=None, group="5")
    sysfs = tree.sysfs()
    sysfs.write(tmp_path / "bus/pci/drivers/vfio-pci/new_id", "8086 1533")
    assert tree.driver_of("0000:05:00.0") == "vfio-pci"
    assert tree.driver_of(NIC) == "igb"  # bound devices are not stolen
