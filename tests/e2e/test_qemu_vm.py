"""A real QEMU microVM (TCG here) managed by a real volantd, inside a test namespace.

The guest is Debian's cloud kernel with a busybox initramfs whose init prints
``VOLANT_BOOT_OK`` once up (the marker kestrel prints in real images) and powers off
on the ACPI power button.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess
from tests.guest_media import BootMedia
from tests.vmtools import events, get, install, kill, pid_alive, wait_event
from volant.network import links

pytestmark = pytest.mark.e2e


def test_qemu_vm_boots_runs_stops_and_leaves_nothing(daemon: VolantdProcess, netns: str,
                                                     media: BootMedia, tmp_path: Path) -> None:
    digest = hashlib.sha256(media.initramfs.read_bytes()).hexdigest()
    manifest = {
        "schema_version": "1", "name": "tiny", "version": "1.0.0", "runtime": "tiny",
        "initramfs": {"url": f"file://{media.initramfs}", "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 256},
        "workload": {"type": "http", "base_url": "http://127.0.0.1:8000",
                     "entrypoint": ["/bin/true"]},
    }
    with daemon.client(timeout=300) as client:
        install(client, manifest)
        created = client.post("/api/v1/vms", json={"name": "tiny-1", "plugin": "tiny"})
        assert created.status_code == 201
        assert created.json()["status"] in ("pending", "starting")
        vm = client.get("/api/v1/vms/tiny-1/wait",
                        params={"state": "running", "timeout": "240"}).json()
        assert vm["status"] == "running" and vm["hypervisor"] == "qemu"
        console = Path(vm["console_log"])
        assert "VOLANT_BOOT_OK" in console.read_text(errors="replace")
        # running was reported only after the guest printed its marker
        types = [e["type"] for e in events(client, "tiny-1")]
        assert types.index("VM_STARTING") < types.index("VM_RUNNING")
        pid, tap = vm["pid"], vm["tap"]
        assert pid_alive(pid)
        info = links.link_info(tap, netns)
        assert info is not None and info.master == "vbr-e2e"
        run_dir = Path(vm["serial_socket"]).parent
        assert (run_dir / "qmp.sock").exists() or any(run_dir.glob("*.sock"))

        stopped = client.post("/api/v1/vms/tiny-1/stop").json()
        assert stopped["status"] == "stopped" and not pid_alive(pid)
        assert not list(run_dir.glob("*.sock"))  # sockets removed with the VMM
        assert links.link_info(tap, netns) is None

        assert client.delete("/api/v1/vms/tiny-1").status_code == 204
        wait_event(client, "tiny-1", "VM_DELETED")
        assert client.get("/api/v1/vms/tiny-1").status_code == 404
    assert not run_dir.exists()
    assert not (daemon.base_dir / "state" / "vms" / "tiny-1").exists()
    assert [n for n in links.list_links("vt", netns) if n != "vbr-e2e"] == []


def test_qemu_vmm_killed_is_restarted_by_policy(daemon: VolantdProcess, media: BootMedia
                                                ) -> None:
    digest = hashlib.sha256(media.initramfs.read_bytes()).hexdigest()
    manifest = {
        "schema_version": "1", "name": "tiny", "version": "1.0.0", "runtime": "tiny",
        "initramfs": {"url": str(media.initramfs), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 256},
    }
    with daemon.client(timeout=300) as client:
        install(client, manifest)
        vm = client.post("/api/v1/vms", params={"wait": "running", "timeout": "240"},
                         json={"name": "tiny-2", "plugin": "tiny"}).json()
        assert vm["status"] == "running"
        kill(vm["pid"])
        crashed = wait_event(client, "tiny-2", "VM_CRASHED")
        assert "signal 9" in crashed["message"]
        again = client.get("/api/v1/vms/tiny-2/wait",
                           params={"state": "running", "timeout": "240"}).json()
        assert again["pid"] != vm["pid"] and again["restart_count"] == 1
        assert get(client, "tiny-2")["status"] == "running"


def test_vsock_mode_without_vhost_vsock_is_refused_up_front(daemon: VolantdProcess,
                                                            media: BootMedia) -> None:
    digest = hashlib.sha256(media.initramfs.read_bytes()).hexdigest()
    manifest = {
        "schema_version": "1", "name": "sock", "version": "1.0.0", "runtime": "sock",
        "initramfs": {"url": str(media.initramfs), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 256}, "network": {"mode": "vsock"},
    }
    if Path("/dev/vhost-vsock").exists():
        pytest.fail("this host has /dev/vhost-vsock: the refusal cannot be observed here")
    with daemon.client() as client:
        install(client, manifest)
        response = client.post("/api/v1/vms", json={"name": "sock-1", "plugin": "sock"})
        assert response.status_code == 422, response.text
        assert "vhost-vsock" in response.json()["error"]
        assert client.get("/api/v1/vms").json() == []
