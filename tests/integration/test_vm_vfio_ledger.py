"""The VFIO ledger through a real volantd (hollow VMM, fake sysfs under VOLANT_SYSFS_ROOT).

A VM whose record disappears (deleted, or corrupted and quarantined) while volantd
is down still gets its devices given back at the next start; a corrupt ledger does
not stop volantd, which then recovers from the records and rebuilds the ledger.
The daemon runs with the fake kernel of ``test_vm_seed_vfio``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import daemon_process
from tests.daemon_process import VolantdProcess, running_daemon
from tests.fakesysfs import FakeSysfsTree, standard_tree
from tests.integration.test_vm_seed_vfio import describe
from tests.vmtools import create, events, install, wait_status, write_plugin

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"  # group 1: nvidia + snd_hda_intel
NIC = "0000:02:00.0"  # igb, group 2
LOOSE = "0000:03:00.0"  # driverless, group 3


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfsTree:
    tree = standard_tree(tmp_path / "sys")
    describe(tree)
    return tree


@pytest.fixture(autouse=True)
def fake_kernel_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_process, "VOLANTD", [
        sys.executable, "-c",
        "from tests.integration.test_vm_seed_vfio import daemon_with_fake_kernel as main; main()",
    ])


def ledger(daemon: VolantdProcess) -> dict[str, tuple[str, str | None]]:
    """``{address: (vm, original driver)}`` as on disk."""
    doc = json.loads((daemon.base_dir / "state" / "vfio.json").read_text())
    return {address: (entry["vm"], entry["original_driver"])
            for address, entry in doc["devices"].items()}


def state_file(daemon: VolantdProcess, name: str) -> Path:
    return daemon.base_dir / "state" / "vms" / name / "state.json"


def types_for(client: Any, name: str) -> list[str]:
    return [e["type"] for e in events(client, name)]


def test_devices_of_deleted_and_quarantined_records_go_back(
        tmp_path: Path, sysfs: FakeSysfsTree) -> None:
    with running_daemon(tmp_path, env={"VOLANT_SYSFS_ROOT": str(sysfs.root)}) as daemon:
        with daemon.client() as client:
            install(client, write_plugin(tmp_path))
            # The ledger follows binds and releases.
            create(client, "first", config={"devices": {"pci_passthrough": [NIC]}})
            assert ledger(daemon) == {NIC: ("first", "igb")}
            client.post("/api/v1/vms/first/stop")
            assert ledger(daemon) == {} and sysfs.driver_of(NIC) == "igb"
            client.post("/api/v1/vms/first/start", params={"wait": "running"})
            assert ledger(daemon) == {NIC: ("first", "igb")}
            assert client.delete("/api/v1/vms/first").status_code == 204
            assert ledger(daemon) == {} and sysfs.driver_of(NIC) == "igb"

            create(client, "deleted", config={"devices": {"pci_passthrough": [NIC]}})
            create(client, "corrupt", config={"devices": {"pci_passthrough": [LOOSE]}})
            keep = create(client, "keep",
                          config={"devices": {"pci_passthrough": [GPU, AUDIO]}})
        assert {sysfs.driver_of(a) for a in (NIC, LOOSE, GPU, AUDIO)} == {"vfio-pci"}
        assert ledger(daemon) == {NIC: ("deleted", "igb"), LOOSE: ("corrupt", None),
                                  GPU: ("keep", "nvidia"), AUDIO: ("keep", "snd_hda_intel")}
        daemon.kill9()
        shutil.rmtree(state_file(daemon, "deleted").parent)
        state_file(daemon, "corrupt").write_text('{"schema_version": 1, "name": "corr')
        daemon.start()
        with daemon.client() as client:
            assert sysfs.driver_of(NIC) == "igb" and sysfs.override_of(NIC) is None
            assert sysfs.driver_of(LOOSE) is None and sysfs.override_of(LOOSE) is None
            assert "VFIO_RELEASED" in types_for(client, "deleted")
            assert "VFIO_RELEASED" in types_for(client, "corrupt")
            assert "SNAPSHOT_QUARANTINED" in types_for(client, "vms/corrupt/state.json")
            # The VM whose record survived was adopted and keeps its devices.
            view = wait_status(client, "keep", "running")
            assert view["pid"] == keep["pid"]
            assert sysfs.driver_of(GPU) == sysfs.driver_of(AUDIO) == "vfio-pci"
            assert ledger(daemon) == {GPU: ("keep", "nvidia"),
                                      AUDIO: ("keep", "snd_hda_intel")}
            assert client.delete("/api/v1/vms/keep").status_code == 204
            assert (sysfs.driver_of(GPU), sysfs.driver_of(AUDIO)) == ("nvidia",
                                                                      "snd_hda_intel")
            assert ledger(daemon) == {}


def test_corrupt_ledger_does_not_stop_volantd(tmp_path: Path, sysfs: FakeSysfsTree) -> None:
    with running_daemon(tmp_path, env={"VOLANT_SYSFS_ROOT": str(sysfs.root)}) as daemon:
        with daemon.client() as client:
            install(client, write_plugin(tmp_path))
            keep = create(client, "keep", config={"devices": {"pci_passthrough": [NIC]}})
            create(client, "gone", config={"devices": {"pci_passthrough": [LOOSE]}})
        daemon.kill9()
        # A destroy interrupted by the crash, and a ledger that is garbage.
        doc = json.loads(state_file(daemon, "gone").read_text())
        doc["status"] = "destroying"
        state_file(daemon, "gone").write_text(json.dumps(doc))
        (daemon.base_dir / "state" / "vfio.json").write_text("{\"schema_version\": 1, \"dev")
        daemon.start()
        with daemon.client() as client:
            assert "SNAPSHOT_QUARANTINED" in types_for(client, "vfio.json")
            quarantined = list((daemon.base_dir / "state" / "quarantine").glob("*vfio.json"))
            assert len(quarantined) == 1
            # Records-based recovery still works: the destroyed VM's device is back...
            assert client.get("/api/v1/vms/gone").status_code == 404
            assert sysfs.driver_of(LOOSE) is None and sysfs.override_of(LOOSE) is None
            assert "VFIO_RELEASED" in types_for(client, "gone")
            # ... the live VM keeps its own, and the ledger is rebuilt from its record.
            assert wait_status(client, "keep", "running")["pid"] == keep["pid"]
            assert sysfs.driver_of(NIC) == "vfio-pci"
            assert ledger(daemon) == {NIC: ("keep", "igb")}
            assert "VFIO_LEDGER_MISMATCH" in types_for(client, "keep")
            taken = client.post("/api/v1/vms", json={
                "name": "thief", "plugin": "demo",
                "config": {"devices": {"pci_passthrough": [NIC]}}})
            assert taken.status_code == 409, taken.text
            assert client.delete("/api/v1/vms/keep").status_code == 204
            assert sysfs.driver_of(NIC) == "igb" and ledger(daemon) == {}
