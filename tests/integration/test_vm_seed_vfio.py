"""Cloud-init seeds and VFIO passthrough through a real volantd with the hollow VMM.

VFIO runs against a fake sysfs tree (``tests/fakesysfs.py``) under
``VOLANT_SYSFS_ROOT``. Its "kernel" (what a write to ``bind``/``unbind``/
``drivers_probe`` does) must run inside the daemon, synchronously with each
write, so the daemon is started through :func:`daemon_with_fake_kernel`, which
installs the fake kernel as the sysfs adapter's write primitive and then runs
``volant.daemon``. The tree's state (symlinks, ``driver_override``) is on disk,
so the test reads it from outside.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from tests import daemon_process
from tests.daemon_process import VolantdProcess, running_daemon
from tests.fakesysfs import FakeDevice, FakeSysfsTree, standard_tree
from tests.vmtools import create, events, get, install, wait_event, wait_status, write_plugin

NIC = "0000:02:00.0"  # igb, alone in IOMMU group 2
GPU = "0000:01:00.0"  # nvidia, shares group 1 with its audio function (snd_hda_intel)
LOOSE = "0000:03:00.0"  # driverless, group 3
DEVICES_FILE = ".fake-devices.json"

USER_DATA = "#cloud-config\nhostname: from-manifest\n"


# ----------------------------------------------------------------- the fake kernel


def daemon_with_fake_kernel() -> None:
    """Entry point of the daemon subprocess: fake kernel in, then ``volant.daemon``."""
    from volant.devices.sysfs import Sysfs, SysfsWriteError, sysfs_root

    root = sysfs_root()
    tree = FakeSysfsTree(root)
    described = json.loads((root / DEVICES_FILE).read_text())
    tree.devices = {address: FakeDevice(address=address, **fields)
                    for address, fields in described.items()}

    def write(self: Sysfs, path: Path, value: str) -> None:
        try:
            tree.kernel_write(path, value)
        except OSError as exc:
            raise SysfsWriteError(f"writing {value.strip()!r} to {path} failed: {exc}",
                                  path=str(path), errno=exc.errno or 0) from exc

    Sysfs.write = write  # type: ignore[method-assign]
    sys.argv = ["volantd"]
    runpy.run_module("volant.daemon", run_name="__main__")


def describe(tree: FakeSysfsTree) -> None:
    devices = {address: {"vendor": dev.vendor, "device": dev.device,
                         "native_driver": dev.native_driver, "group": dev.group}
               for address, dev in tree.devices.items()}
    (tree.root / DEVICES_FILE).write_text(json.dumps(devices))


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfsTree:
    tree = standard_tree(tmp_path / "sys")
    describe(tree)
    return tree


@pytest.fixture
def fake_kernel_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_process, "VOLANTD", [
        sys.executable, "-c",
        "from tests.integration.test_vm_seed_vfio import daemon_with_fake_kernel as main; main()",
    ])


@pytest.fixture
def daemon(tmp_path: Path, sysfs: FakeSysfsTree, fake_kernel_argv: None
           ) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path, env={"VOLANT_SYSFS_ROOT": str(sysfs.root)}) as proc:
        yield proc


def record(daemon: VolantdProcess, name: str) -> dict[str, Any]:
    path = daemon.base_dir / "state" / "vms" / name / "state.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def launch_specs(daemon: VolantdProcess, name: str) -> list[dict[str, Any]]:
    """The ``launch spec`` log lines volantd wrote for ``name`` (JSON logs)."""
    specs = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "launch spec" and entry.get("vm") == name:
            specs.append(entry)
    return specs


# ----------------------------------------------------------------------- seeds


def read_seed(path: Path) -> tuple[str, dict[str, str]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for name in ("user-data", "meta-data", "network-config"):
            buffer = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(buffer, rr_path=f"/{name}")
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                continue
            files[name] = buffer.getvalue().decode()
        return label, files
    finally:
        iso.close()


def seed_of(daemon: VolantdProcess, name: str) -> Path:
    return daemon.base_dir / "run" / "vms" / name / "seed.img"


def test_seed_built_merged_attached_last_readonly_kept_and_removed(
        daemon: VolantdProcess, tmp_path: Path) -> None:
    manifest = write_plugin(tmp_path, cloud_init={
        "user_data": {"inline": True, "content": USER_DATA},
        "meta_data": {"inline": True, "content": "instance-id: from-manifest\n"},
    })
    with daemon.client() as client:
        install(client, manifest)
        override = "#cloud-config\nhostname: from-config\n"
        vm = create(client, "seeded",
                    config={"cloud_init": {"user_data": {"inline": True, "content": override}}})
        seed = seed_of(daemon, "seeded")
        assert seed.is_file()
        label, files = read_seed(seed)
        assert label == "cidata"
        assert files["user-data"] == override  # the config's document replaces the manifest's
        assert files["meta-data"] == "instance-id: from-manifest\n"  # the manifest's stays
        assert "network-config" not in files
        spec = launch_specs(daemon, "seeded")[-1]
        assert spec["disks"][-1] == {"id": "seed", "path": str(seed), "readonly": True}

        built = seed.stat().st_mtime_ns
        restarted = client.post("/api/v1/vms/seeded/restart", params={"wait": "running"})
        assert restarted.status_code == 200, restarted.text
        assert restarted.json()["pid"] != vm["pid"]
        assert seed.stat().st_mtime_ns == built  # same content: not rebuilt

        changed = "#cloud-config\nhostname: patched\n"
        response = client.patch("/api/v1/vms/seeded/config", json={
            "cloud_init": {"user_data": {"inline": True, "content": changed}}})
        assert response.status_code == 200, response.text
        assert read_seed(seed)[1]["user-data"] == override  # effective at the next start
        client.post("/api/v1/vms/seeded/restart", params={"wait": "running"})
        assert read_seed(seed)[1]["user-data"] == changed
        assert seed.stat().st_mtime_ns != built

        assert client.delete("/api/v1/vms/seeded").status_code == 204
        assert not seed.exists() and not seed.parent.exists()


def test_no_cloud_init_no_seed_and_clearing_removes_it(daemon: VolantdProcess,
                                                       tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "plain")
        assert not seed_of(daemon, "plain").exists()
        assert all(d["id"] != "seed" for d in launch_specs(daemon, "plain")[-1]["disks"])
        create(client, "temp", config={"cloud_init": {
            "user_data": {"inline": True, "content": USER_DATA}}})
        assert seed_of(daemon, "temp").is_file()
        client.patch("/api/v1/vms/temp/config", json={"cloud_init": None})
        client.post("/api/v1/vms/temp/restart", params={"wait": "running"})
        assert not seed_of(daemon, "temp").exists()


def test_path_documents_are_refused_at_create(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        response = client.post("/api/v1/vms", json={
            "name": "pathy", "plugin": "demo",
            "config": {"cloud_init": {"user_data": {"path": "user-data.yaml"}}}})
        assert response.status_code == 400, response.text
        assert "volar" in response.json()["error"] and "path" in response.json()["error"]
        assert client.get("/api/v1/vms/pathy").status_code == 404
        assert not (daemon.base_dir / "state" / "vms" / "pathy").exists()


# ------------------------------------------------------------------------ VFIO


def test_vfio_bind_at_create_release_on_destroy_and_double_assignment(
        daemon: VolantdProcess, sysfs: FakeSysfsTree, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "gpu-1", config={"devices": {"pci_passthrough": [NIC]}})
        assert vm["status"] == "running"
        assert sysfs.driver_of(NIC) == "vfio-pci" and sysfs.override_of(NIC) == "vfio-pci"
        assert record(daemon, "gpu-1")["vfio_originals"] == {NIC: "igb"}
        assert get(client, "gpu-1")["pci_devices"] == [NIC]
        spec = launch_specs(daemon, "gpu-1")[-1]
        assert spec["vfio_devices"] == [str(sysfs.root / "bus/pci/devices" / NIC)]
        wait_event(client, "gpu-1", "VFIO_BOUND")

        taken = client.post("/api/v1/vms", json={
            "name": "gpu-2", "plugin": "demo",
            "config": {"devices": {"pci_passthrough": [NIC]}}})
        assert taken.status_code == 409, taken.text
        assert "gpu-1" in taken.json()["error"]
        assert client.get("/api/v1/vms/gpu-2").status_code == 404
        # the API's unbind refuses a device a VM owns
        unbind = client.post("/api/v1/vfio/devices/unbind", json={"pci_addresses": [NIC]})
        assert unbind.status_code == 409

        assert client.delete("/api/v1/vms/gpu-1").status_code == 204
        assert sysfs.driver_of(NIC) == "igb" and sysfs.override_of(NIC) is None
        second = create(client, "gpu-2", config={"devices": {"pci_passthrough": [NIC]}})
        assert second["status"] == "running" and sysfs.driver_of(NIC) == "vfio-pci"


def test_vfio_stop_gives_device_back_and_start_refuses_a_taken_device(
        daemon: VolantdProcess, sysfs: FakeSysfsTree, tmp_path: Path) -> None:
    manifest = write_plugin(tmp_path, devices={"pci_passthrough": [NIC]})
    with daemon.client() as client:
        install(client, manifest)  # the devices come from the manifest here
        create(client, "a")
        assert sysfs.driver_of(NIC) == "vfio-pci"
        stopped = client.post("/api/v1/vms/a/stop").json()
        assert stopped["status"] == "stopped" and stopped["pci_devices"] == []
        assert sysfs.driver_of(NIC) == "igb"
        assert record(daemon, "a")["vfio_originals"] == {}
        create(client, "b")
        assert sysfs.driver_of(NIC) == "vfio-pci"
        refused = client.post("/api/v1/vms/a/start")
        assert refused.status_code == 409, refused.text
        assert get(client, "a")["status"] == "stopped"  # no restart loop, nothing changed
        client.post("/api/v1/vms/b/stop")
        started = client.post("/api/v1/vms/a/start", params={"wait": "running"})
        assert started.status_code == 200, started.text
        assert sysfs.driver_of(NIC) == "vfio-pci"


@pytest.mark.parametrize(
    ("devices", "status", "words"),
    [
        ({"pci_passthrough": [GPU]}, 409, "snd_hda_intel"),  # group 1 not viable
        ({"pci_passthrough": [NIC], "allowlist": ["10de:*"]}, 422, "allowlist"),
        ({"pci_passthrough": ["0000:09:00.0"]}, 404, "0000:09:00.0"),
    ],
)
def test_vfio_refusals_at_create_persist_nothing(
        daemon: VolantdProcess, sysfs: FakeSysfsTree, tmp_path: Path,
        devices: dict[str, Any], status: int, words: str) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        response = client.post("/api/v1/vms", json={"name": "nope", "plugin": "demo",
                                                    "config": {"devices": devices}})
        assert response.status_code == status, response.text
        assert words in response.json()["error"]
        assert client.get("/api/v1/vms/nope").status_code == 404
        assert not (daemon.base_dir / "state" / "vms" / "nope").exists()
    assert sysfs.driver_of(GPU) == "nvidia" and sysfs.driver_of(NIC) == "igb"
    assert sysfs.override_of(GPU) is None and sysfs.override_of(NIC) is None


def test_vfio_patch_to_a_bad_device_fails_the_next_start_cleanly(
        daemon: VolantdProcess, sysfs: FakeSysfsTree, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "later")
        patched = client.patch("/api/v1/vms/later/config",
                               json={"devices": {"pci_passthrough": [GPU]}})
        assert patched.status_code == 200, patched.text
        client.post("/api/v1/vms/later/stop")
        refused = client.post("/api/v1/vms/later/start")
        assert refused.status_code == 409 and "snd_hda_intel" in refused.text
        assert get(client, "later")["status"] == "stopped"
        assert sysfs.driver_of(GPU) == "nvidia"
        client.patch("/api/v1/vms/later/config", json={"devices": {"pci_passthrough": [LOOSE]}})
        started = client.post("/api/v1/vms/later/start", params={"wait": "running"})
        assert started.status_code == 200, started.text
        assert sysfs.driver_of(LOOSE) == "vfio-pci"
        assert record(daemon, "later")["vfio_originals"] == {LOOSE: None}
        client.post("/api/v1/vms/later/stop")
        assert sysfs.driver_of(LOOSE) is None  # it had no driver: left driverless


def test_vfio_after_volantd_crash_adopts_then_releases_devices_of_gone_vms(
        tmp_path: Path, sysfs: FakeSysfsTree, fake_kernel_argv: None) -> None:
    env = {"VOLANT_SYSFS_ROOT": str(sysfs.root)}
    with running_daemon(tmp_path, env=env) as daemon:
        with daemon.client() as client:
            install(client, write_plugin(tmp_path))
            keep = create(client, "keep", config={"devices": {"pci_passthrough": [NIC]}})
            create(client, "gone", config={"devices": {"pci_passthrough": [LOOSE]}})
        assert sysfs.driver_of(NIC) == sysfs.driver_of(LOOSE) == "vfio-pci"
        daemon.kill9()
        # Simulate a crash in the middle of destroying "gone": its record says destroying.
        state = daemon.base_dir / "state" / "vms" / "gone" / "state.json"
        doc = json.loads(state.read_text())
        doc["status"] = "destroying"
        state.write_text(json.dumps(doc))
        daemon.start()
        with daemon.client() as client:
            assert client.get("/api/v1/vms/gone").status_code == 404
            assert sysfs.driver_of(LOOSE) is None and sysfs.override_of(LOOSE) is None
            types = [e["type"] for e in events(client, "gone")]
            assert "VFIO_RELEASED" in types and "VM_DELETED" in types
            # the surviving VM was adopted with its device, and still owns it
            view = wait_status(client, "keep", "running")
            assert view["pid"] == keep["pid"] and os.path.exists(f"/proc/{keep['pid']}")
            assert sysfs.driver_of(NIC) == "vfio-pci"
            taken = client.post("/api/v1/vms", json={
                "name": "thief", "plugin": "demo",
                "config": {"devices": {"pci_passthrough": [NIC]}}})
            assert taken.status_code == 409, taken.text
            assert client.delete("/api/v1/vms/keep").status_code == 204
            assert sysfs.driver_of(NIC) == "igb"
