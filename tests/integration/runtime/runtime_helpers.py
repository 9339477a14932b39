"""Helpers for the runtime adapter tests: LaunchSpec factory, a process reaper, and (for the
e2e QEMU smoke test) a minimal bootable kernel + busybox initramfs.

The boot media are cached under /var/cache/volant-test/runtime-boot/<key>, the key being the
Debian package versions, so only the first run pays for the download and extraction.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.guest_media import (  # noqa: F401 - re-exported for the runtime tests
    BOOT_MARKER,
    BootMedia,
    build_boot_media,
    extract_pvh_vmlinux,
)
from volant.runtime.base import LaunchSpec, VMMHandle, VMMIdentity, adopt_identity


def make_spec(
    vm_dir: Path, name: str = "vm1", instance_id: str = "test0", **kw: object
) -> LaunchSpec:
    run_dir = vm_dir / name
    fields: dict[str, object] = {
        "name": name,
        "instance_id": instance_id,
        "cpu_cores": 1,
        "memory_mb": 64,
        "kernel": Path("/nonexistent/vmlinux"),
        "initramfs": None,
        "cmdline": "console=ttyS0",
        "run_dir": run_dir,
        "console_log": run_dir / "console.log",
    }
    fields.update(kw)
    return LaunchSpec(**fields)  # type: ignore[arg-type]


class Reaper:
    """Kills (by pid, via their handles) every VMM a test started, at teardown."""

    def __init__(self) -> None:
        self.handles: list[VMMHandle] = []
        self.identities: list[VMMIdentity] = []

    def add(self, handle: VMMHandle) -> VMMHandle:
        self.handles.append(handle)
        return handle

    def add_identity(self, identity: VMMIdentity) -> None:
        self.identities.append(identity)

    def kill_all(self) -> None:
        for handle in self.handles:
            handle.send_signal(signal.SIGKILL)
        for identity in self.identities:
            # adopt_identity checks pid + start time + marker: never kills a recycled pid.
            handle = adopt_identity(identity, identity.kind)
            if handle is not None:
                handle.send_signal(signal.SIGKILL)
                handle.close()
