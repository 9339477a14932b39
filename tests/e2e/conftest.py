"""Shared e2e fixtures: the busybox guest and a volantd running QEMU in a test namespace."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.guest_media import BootMedia, build_boot_media


@pytest.fixture(scope="module")
def media() -> BootMedia:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: apt-get install -y qemu-system-x86")
    return build_boot_media("VOLANT_BOOT_OK")


@pytest.fixture
def daemon(tmp_path: Path, netns: str, media: BootMedia) -> Iterator[VolantdProcess]:
    """volantd with QEMU in the test's namespace (its own bridge and subnet)."""
    run_dir = Path(tempfile.mkdtemp(prefix="vq-"))  # Unix socket paths must stay short
    env = {
        "VOLANT_HYPERVISOR": "qemu",
        "VOLANT_MANAGE_NETWORK": "true",
        "VOLANT_BRIDGE": "vbr-e2e",
        "VOLANT_SUBNET": "10.78.0.0/24",
        "VOLANT_HOST_IP": "10.78.0.1",
        "VOLANT_KERNEL_VMLINUX": str(media.kernel),
        "VOLANT_RUNTIME_DIR": str(run_dir),
    }
    try:
        with running_daemon(tmp_path, env=env, netns=netns) as proc:
            yield proc
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
