"""The PID-1 duties: mounts, modules, console, root switch, network, power-off.

All of it runs only when kestrel is PID 1 (or KESTREL_PID1=1); paths come from the
AgentConfig so nothing here is hard-wired to the real /proc, /sys or /dev.
"""

from __future__ import annotations

import errno
import os
import time

from kestrel import syscalls
from kestrel.bootmode import BootModeError, RootChoice, boot_mode, choose_root
from kestrel.console import echo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import StrPath

    from kestrel.config import AgentConfig

NEW_ROOT = "/mnt/volant-root"
PYTHON = "/usr/bin/python3"
ROOT_WAIT_SECONDS = 10.0
#: Where the image puts the kestrel package (Debian's dist-packages directory).
KESTREL_PATH = "/usr/lib/python3/dist-packages"
#: How /init (volant/images/builder.py INIT_SCRIPT) and switch_root start kestrel. ``-S``
#: skips site and Debian's sitecustomize, ``-c`` skips runpy (what ``-m`` costs): under
#: TCG every module the interpreter runs for the first time costs start-up time.
PYTHON_ARGV = (
    PYTHON,
    "-X",
    "frozen_modules=on",
    "-I",
    "-S",
    "-c",
    f"import sys; sys.path.append({KESTREL_PATH!r}); "
    "from kestrel.main import main; sys.exit(main())",
)
#: What only the cloud-init seed needs (ISO9660 or FAT): loaded once the API listens, as
#: nothing before it mounts the seed (about 60 ms of boot under TCG). Root filesystems
#: (ext4, xfs, btrfs) are never deferred: stage 1 may switch_root into one.
SEED_MODULES = frozenset({"cdrom", "isofs", "fat", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"})


class MountSpec:
    __slots__ = ("data", "flags", "fstype", "mode", "source", "target")

    def __init__(
        self,
        source: str,
        target: StrPath,
        fstype: str,
        flags: int = 0,
        data: str = "",
        mode: int = 0o755,
    ) -> None:
        self.source = source
        self.target: str = os.fspath(target)
        self.fstype = fstype
        self.flags = flags
        self.data = data
        self.mode = mode

    def __repr__(self) -> str:
        return f"MountSpec({self.fstype} {self.source} on {self.target})"


def basic_mounts(config: AgentConfig) -> list[MountSpec]:
    nosuid_nodev = syscalls.MS_NOSUID | syscalls.MS_NODEV
    return [
        MountSpec("proc", config.proc, "proc", nosuid_nodev | syscalls.MS_NOEXEC),
        MountSpec("sysfs", config.sys, "sysfs", nosuid_nodev | syscalls.MS_NOEXEC),
        MountSpec("devtmpfs", config.dev, "devtmpfs", syscalls.MS_NOSUID, "mode=0755"),
        MountSpec(
            "devpts",
            os.path.join(config.dev, "pts"),
            "devpts",
            syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
            "mode=0620,gid=5,ptmxmode=0666",
        ),
        MountSpec(
            "tmpfs", os.path.join(config.dev, "shm"), "tmpfs", nosuid_nodev, "mode=1777", 0o1777
        ),
        MountSpec("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
        MountSpec("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777", 0o1777),
    ]


def mount_all(specs: list[MountSpec], log: Callable[[str], None] = echo) -> list[str]:
    """Mount each filesystem; an already-mounted target (EBUSY) is fine."""
    mounted: list[str] = []
    for spec in specs:
        try:
            os.makedirs(spec.target, spec.mode, exist_ok=True)
            syscalls.mount(spec.source, spec.target, spec.fstype, spec.flags, spec.data)
            mounted.append(spec.target)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log(f"kestrel: mount {spec.fstype} on {spec.target} failed: {exc}")
    return mounted


def ensure_console(dev: StrPath) -> None:
    """Make fds 0-2 point at the console if the kernel left them closed."""
    try:
        os.fstat(1)
        return
    except OSError:
        pass
    for name in ("console", "ttyS0"):
        try:
            fd = os.open(os.path.join(dev, name), os.O_RDWR | os.O_NOCTTY)
        except OSError:
            continue
        for target in (0, 1, 2):
            os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
        return


class ModuleReport:
    __slots__ = ("already", "deferred", "failed", "loaded")

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.already: list[str] = []
        self.failed: dict[str, str] = {}
        self.deferred: list[str] = []


def module_name(path: str) -> str:
    """``/lib/modules/<release>/kernel/fs/isofs/isofs.ko`` -> ``isofs``."""
    name = path.rsplit("/", 1)[-1]
    return name[: -len(".ko")] if name.endswith(".ko") else name


def is_seed_module(path: str) -> bool:
    return module_name(path) in SEED_MODULES


def read_module_list(path: StrPath) -> list[str]:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return []
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def load_modules(
    path: StrPath,
    loader: Callable[[str], bool] = syscalls.finit_module,
    defer: Callable[[str], bool] | None = None,
) -> ModuleReport:
    """Load the listed modules in order (the list is already dependency-sorted).

    Modules ``defer`` picks are only listed in ``report.deferred``, in order, for
    load_module_list later."""
    report = ModuleReport()
    modules = read_module_list(path)
    if defer is not None:
        report.deferred = [module for module in modules if defer(module)]
        modules = [module for module in modules if not defer(module)]
    return load_module_list(modules, loader, report)


def load_module_list(
    modules: list[str],
    loader: Callable[[str], bool] = syscalls.finit_module,
    report: ModuleReport | None = None,
) -> ModuleReport:
    report = ModuleReport() if report is None else report
    for module in modules:
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
    os.makedirs(NEW_ROOT, exist_ok=True)
    syscalls.mount(choice.device, NEW_ROOT, choice.fstype, syscalls.MS_RELATIME)
    echo(f"kestrel: switching root to {choice.device} ({choice.fstype}, label {choice.label})")
    # switch_root wipes the initramfs; move the API filesystems along so stage 2 finds them.
    for target in (config.dev, config.proc, config.sys):
        destination = os.path.join(NEW_ROOT, target.lstrip("/"))
        try:
            os.makedirs(destination, exist_ok=True)
            syscalls.mount(target, destination, "", syscalls.MS_MOVE)
        except OSError as exc:
            echo(f"kestrel: moving {target} failed: {exc}")
    os.sync()
    os.execv("/bin/busybox", ["switch_root", NEW_ROOT, *PYTHON_ARGV, "stage2"])


def report_module_failures(report: ModuleReport) -> None:
    for module, reason in report.failed.items():
        echo(f"kestrel: module {module}: {reason}")


def stage1(config: AgentConfig) -> list[str]:
    """Mounts, console, modules, and the root decision. Returns when staying on initramfs,
    with the modules left to load once the API listens (the seed's filesystems)."""
    mount_all(basic_mounts(config))
    ensure_console(config.dev)
    report = load_modules(config.modules_list, defer=is_seed_module)
    report_module_failures(report)
    if config.stage2:
        return report.deferred
    mode = boot_mode(config.cmdline)
    if mode == "initramfs":
        return report.deferred
    try:
        choice = wait_for_root(config, ROOT_WAIT_SECONDS if mode == "rootfs" else 0.0)
    except BootModeError as exc:
        echo(f"kestrel: {exc}; staying on the initramfs")
        return report.deferred
    if choice is None:
        return report.deferred
    try:
        switch_root(choice, config)
    except OSError as exc:
        echo(f"kestrel: switch_root into {choice.device} failed: {exc}; staying on the initramfs")
    return report.deferred


def sync_unmount_power_off(log: Callable[[str], None] = echo) -> None:
    """Final step as PID 1: flush, unmount what can be unmounted, power off."""
    import contextlib

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
