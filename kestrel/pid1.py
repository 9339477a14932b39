"""The PID-1 duties: mounts, modules, console, root switch, network, power-off.

All of it runs only when kestrel is PID 1 (or KESTREL_PID1=1); paths come from the
AgentConfig so nothing here is hard-wired to the real /proc, /sys or /dev.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kestrel import syscalls
from kestrel.bootmode import BootModeError, RootChoice, boot_mode, choose_root
from kestrel.config import AgentConfig
from kestrel.console import echo

NEW_ROOT = "/mnt/volant-root"
PYTHON = "/usr/bin/python3"
ROOT_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class MountSpec:
    source: str
    target: Path
    fstype: str
    flags: int = 0
    data: str = ""
    mode: int = 0o755


def basic_mounts(config: AgentConfig) -> list[MountSpec]:
    nosuid_nodev = syscalls.MS_NOSUID | syscalls.MS_NODEV
    return [
        MountSpec("proc", config.proc, "proc", nosuid_nodev | syscalls.MS_NOEXEC),
        MountSpec("sysfs", config.sys, "sysfs", nosuid_nodev | syscalls.MS_NOEXEC),
        MountSpec("devtmpfs", config.dev, "devtmpfs", syscalls.MS_NOSUID, "mode=0755"),
        MountSpec(
            "devpts",
            config.dev / "pts",
            "devpts",
            syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
            "mode=0620,gid=5,ptmxmode=0666",
        ),
        MountSpec("tmpfs", config.dev / "shm", "tmpfs", nosuid_nodev, "mode=1777", 0o1777),
        MountSpec("tmpfs", Path("/run"), "tmpfs", nosuid_nodev, "mode=0755"),
        MountSpec("tmpfs", Path("/tmp"), "tmpfs", nosuid_nodev, "mode=1777", 0o1777),
    ]


def mount_all(specs: list[MountSpec], log: Callable[[str], None] = echo) -> list[str]:
    """Mount each filesystem; an already-mounted target (EBUSY) is fine."""
    mounted: list[str] = []
    for spec in specs:
        try:
            spec.target.mkdir(mode=spec.mode, parents=True, exist_ok=True)
            syscalls.mount(spec.source, str(spec.target), spec.fstype, spec.flags, spec.data)
            mounted.append(str(spec.target))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log(f"kestrel: mount {spec.fstype} on {spec.target} failed: {exc}")
    return mounted


def ensure_console(dev: Path) -> None:
    """Make fds 0-2 point at the console if the kernel left them closed."""
    try:
        os.fstat(1)
        return
    except OSError:
        pass
    for name in ("console", "ttyS0"):
        try:
            fd = os.open(dev / name, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            continue
        for target in (0, 1, 2):
            os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
        return


@dataclass
class ModuleReport:
    loaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def read_module_list(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        return []
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def load_modules(path: Path, loader: Callable[[str], bool] = syscalls.finit_module) -> ModuleReport:
    """Load the listed modules in order (the list is already dependency-sorted)."""
    report = ModuleReport()
    for module in read_module_list(path):
        try:
            if loader(module):
                report.loaded.append(module)
            else:
                report.already.append(module)
        except OSError as exc:
            report.failed[module] = exc.strerror or str(exc)
    return report


def wait_for_root(config: AgentConfig, deadline_seconds: float) -> RootChoice | None:
    """Find the root disk; in rootfs mode keep looking while block devices appear."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return choose_root(config.cmdline, config.dev)
        except BootModeError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def switch_root(choice: RootChoice, config: AgentConfig) -> None:
    """Mount the root disk and hand PID 1 to kestrel stage 2 inside it (never returns)."""
    Path(NEW_ROOT).mkdir(parents=True, exist_ok=True)
    syscalls.mount(choice.device, NEW_ROOT, choice.fstype, syscalls.MS_RELATIME)
    echo(f"kestrel: switching root to {choice.device} ({choice.fstype}, label {choice.label})")
    # switch_root wipes the initramfs; move the API filesystems along so stage 2 finds them.
    for target in (config.dev, config.proc, config.sys):
        destination = Path(NEW_ROOT) / str(target).lstrip("/")
        try:
            destination.mkdir(parents=True, exist_ok=True)
            syscalls.mount(str(target), str(destination), "", syscalls.MS_MOVE)
        except OSError as exc:
            echo(f"kestrel: moving {target} failed: {exc}")
    os.sync()
    os.execv(
        "/bin/busybox",
        [
            "switch_root",
            NEW_ROOT,
            PYTHON,
            "-X",
            "frozen_modules=on",
            "-I",
            "-m",
            "kestrel",
            "stage2",
        ],
    )


def stage1(config: AgentConfig) -> None:
    """Mounts, console, modules, and the root decision. Returns when staying on initramfs."""
    mount_all(basic_mounts(config))
    ensure_console(config.dev)
    report = load_modules(config.modules_list)
    if report.failed:
        for module, reason in report.failed.items():
            echo(f"kestrel: module {module}: {reason}")
    if config.stage2:
        return
    mode = boot_mode(config.cmdline)
    if mode == "initramfs":
        return
    try:
        choice = wait_for_root(config, ROOT_WAIT_SECONDS if mode == "rootfs" else 0.0)
    except BootModeError as exc:
        echo(f"kestrel: {exc}; staying on the initramfs")
        return
    if choice is None:
        return
    try:
        switch_root(choice, config)
    except OSError as exc:
        echo(f"kestrel: switch_root into {choice.device} failed: {exc}; staying on the initramfs")


def sync_unmount_power_off(log: Callable[[str], None] = echo) -> None:
    """Final step as PID 1: flush, unmount what can be unmounted, power off."""
    os.sync()
    for target in ("/mnt/volant-root", "/tmp", "/run", "/dev/shm", "/dev/pts"):
        with contextlib.suppress(OSError):
            syscalls.umount(target, syscalls.MNT_DETACH)
    with contextlib.suppress(OSError):
        syscalls.mount("", "/", "", syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
    os.sync()
    log("kestrel: powering off")
    try:
        syscalls.reboot(syscalls.RB_POWER_OFF)
    except OSError as exc:
        log(f"kestrel: power off failed: {exc}")
