"""A real QEMU microVM with a cloud-init seed attached, managed by a real volantd.

The busybox initramfs guest does not mount anything, so the seed must simply not
get in the way: QEMU carries it read-only as the last drive, the guest boots to
its marker, and destroy removes the seed with the VM's runtime directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess
from tests.guest_media import BootMedia
from tests.vmtools import pid_alive, wait_event

pytestmark = pytest.mark.e2e


def qemu_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_qemu_vm_boots_with_a_readonly_seed_as_last_drive(daemon: VolantdProcess,
                                                          media: BootMedia) -> None:
    digest = hashlib.sha256(media.initramfs.read_bytes()).hexdigest()
    manifest = {
        "schema_version": "1", "name": "tiny", "version": "1.0.0", "runtime": "tiny",
        "initramfs": {"url": str(media.initramfs), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 256},
        "cloud_init": {"user_data": {"inline": True,
                                     "content": "#cloud-config\nhostname: tiny\n"}},
    }
    with daemon.client(timeout=300) as client:
        assert client.post("/api/v1/plugins", json=manifest).status_code == 201
        response = client.post("/api/v1/vms", params={"wait": "running", "timeout": "240"},
                               json={"name": "tiny-seed", "plugin": "tiny"})
        assert response.status_code == 201, response.text
        vm = response.json()
        assert vm["status"] == "running" and vm["hypervisor"] == "qemu"
        assert "VOLANT_BOOT_OK" in Path(vm["console_log"]).read_text(errors="replace")
        seed = Path(vm["serial_socket"]).parent / "seed.img"
        assert seed.is_file()
        argv = qemu_argv(vm["pid"])
        drives = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-drive"]
        assert drives, argv
        assert drives[-1].startswith("if=none,id=seed,") or ",id=seed," in drives[-1]
        assert f"file={seed}" in drives[-1] and "readonly=on" in drives[-1]
        assert pid_alive(vm["pid"])

        assert client.delete("/api/v1/vms/tiny-seed").status_code == 204
        wait_event(client, "tiny-seed", "VM_DELETED")
        assert not pid_alive(vm["pid"])
    assert not seed.exists()
