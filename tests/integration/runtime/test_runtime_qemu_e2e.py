"""A real QEMU microVM (TCG here) through QemuLauncher: boot, console, QMP, stop ladder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
from runtime_helpers import BootMedia, Reaper, make_spec

from volant.runtime import (
    DiskSpec,
    LaunchError,
    QemuLauncher,
    StopStep,
    find_marked_processes,
    read_marker,
    stop_ladder,
)
from volant.runtime.qmp import QMPClient

pytestmark = pytest.mark.e2e


async def test_qemu_boots_serves_console_and_powers_down(
    boot_media: BootMedia, vm_dir: Path, reaper: Reaper
) -> None:
    launcher = QemuLauncher()
    spec = make_spec(
        vm_dir,
        name="smoke",
        instance_id="e2etest",
        memory_mb=256,
        kernel=boot_media.kernel,
        initramfs=boot_media.initramfs,
        cmdline="console=ttyS0 quiet panic=-1 reboot=t",
        accel="auto",
    )
    handle = reaper.add(await launcher.launch(spec))
    ident = handle.identity
    assert read_marker(ident.pid) == "e2etest:smoke"
    assert [p.pid for p in find_marked_processes("e2etest")] == [ident.pid]
    assert os.getsid(ident.pid) == ident.pid

    # The boot marker reaches the console log (written by QEMU with no client attached).
    started = time.monotonic()
    with trio.fail_after(60):
        while boot_media.marker not in spec.console_log.read_text(errors="replace"):
            assert handle.alive, spec.vmm_log.read_text()
            await trio.sleep(0.1)
    boot_line = next(
        line for line in spec.console_log.read_text().splitlines() if boot_media.marker in line
    )
    # rtc=on: the guest's wall clock is the host's, not 1970.
    guest_epoch = int(boot_line.rsplit("epoch=", 1)[1])
    assert abs(guest_epoch - time.time()) < 120, boot_line
    print(f"boot marker after {time.monotonic() - started:.1f}s")

    # The serial socket is live: the guest prints a tick every second.
    stream = await trio.open_unix_socket(ident.serial_socket)
    received = b""
    with trio.fail_after(15):
        while b"volant-test tick" not in received:
            received += await stream.receive_some(4096)
    await stream.aclose()

    # QMP answers with the marker as the guest name.
    async with await QMPClient.connect(ident.control_socket) as qmp:
        assert (await qmp.execute("query-name"))["name"] == "e2etest:smoke"
        assert (await qmp.execute("query-status"))["status"] == "running"

    # The guest's acpid handles the power button: the ladder ends at its first rung.
    result = await stop_ladder(
        launcher, handle, powerdown_timeout=30, term_timeout=10, kill_timeout=10
    )
    assert result.step == StopStep.POWERDOWN, spec.console_log.read_text()[-2000:]
    assert result.exit.clean
    assert "reboot: Power down" in spec.console_log.read_text()  # the guest powered off
    assert not handle.alive
    assert not Path(ident.serial_socket).exists()
    assert not Path(ident.control_socket).exists()
    assert find_marked_processes("e2etest") == []
    assert sorted(p.name for p in spec.run_dir.iterdir()) == ["console.log", "vmm.log"]


async def test_qemu_launch_with_a_missing_disk_fails_clearly(
    boot_media: BootMedia, vm_dir: Path, reaper: Reaper
) -> None:
    launcher = QemuLauncher()
    missing = vm_dir / "no-such-root.img"
    spec = make_spec(
        vm_dir,
        name="baddisk",
        instance_id="e2ebad",
        memory_mb=128,
        kernel=boot_media.kernel,
        initramfs=boot_media.initramfs,
        disks=(DiskSpec(missing, readonly=False, id="root"),),
    )
    with pytest.raises(LaunchError, match=r"no-such-root\.img"):
        reaper.add(await launcher.launch(spec))
    assert find_marked_processes("e2ebad") == []
    assert not (spec.run_dir / "qmp.sock").exists()
