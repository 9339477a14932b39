"""VMM adapters behind one launcher protocol, and the choice among them.

``VOLANT_HYPERVISOR`` (config key ``hypervisor``):
- ``auto`` (default): cloud-hypervisor if it is on PATH, else QEMU;
- ``qemu`` / ``cloud-hypervisor``: that VMM, found on PATH;
- ``hollow``: the stand-in process for scale tests and benchmarks (never runs a guest);
- a path to a binary: the adapter is picked by the binary's basename
  (``cloud-hypervisor*``, ``qemu-system-*``, ``hollow-vmm*``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from volant.errors import ConfigError
from volant.runtime.base import (
    DiskSpec,
    ExitInfo,
    Launcher,
    LaunchError,
    LaunchSpec,
    MarkedProcess,
    RuntimeUnsupported,
    StopResult,
    StopStep,
    VMMHandle,
    VMMIdentity,
    VMMStuckError,
    find_marked_processes,
    instance_id_for,
    read_marker,
    stop_ladder,
)
from volant.runtime.cloud_hypervisor import CloudHypervisorLauncher
from volant.runtime.hollow import HOLLOW_BOOT_MARKER, HollowLauncher
from volant.runtime.process import raise_fd_limit
from volant.runtime.qemu import QemuLauncher

QEMU_BINARY = "qemu-system-x86_64"
CH_BINARY = "cloud-hypervisor"


def _launcher_for_binary(path: str, cache_dir: Path | None) -> Launcher:
    base = os.path.basename(path)
    if base.startswith("cloud-hypervisor"):
        return CloudHypervisorLauncher(binary=path)
    if base.startswith("qemu-system"):
        return QemuLauncher(binary=path)
    if base.startswith("hollow-vmm"):
        return HollowLauncher(binary=Path(path), cache_dir=cache_dir)
    raise ConfigError(
        "hypervisor",
        f"cannot tell which VMM {path!r} is: expected a basename starting with "
        "'cloud-hypervisor', 'qemu-system' or 'hollow-vmm'",
    )


def select_launcher(
    cfg_hypervisor: str,
    *,
    cache_dir: Path | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> Launcher:
    """The launcher for a ``hypervisor`` setting; ConfigError says what is missing."""
    raise_fd_limit()
    choice = cfg_hypervisor.strip()
    if choice == "hollow":
        return HollowLauncher(cache_dir=cache_dir)
    if choice == "auto":
        ch = which(CH_BINARY)
        if ch:
            return CloudHypervisorLauncher(binary=ch)
        qemu = which(QEMU_BINARY)
        if qemu:
            return QemuLauncher(binary=qemu)
        raise ConfigError(
            "hypervisor",
            f"auto: neither {CH_BINARY} nor {QEMU_BINARY} is on PATH "
            "(install qemu-system-x86, or set VOLANT_HYPERVISOR)",
        )
    if choice in ("qemu", CH_BINARY):
        name = QEMU_BINARY if choice == "qemu" else CH_BINARY
        found = which(name)
        if not found:
            raise ConfigError("hypervisor", f"{choice}: {name} is not on PATH")
        return _launcher_for_binary(found, cache_dir)
    if "/" in choice:
        if not (os.path.isfile(choice) and os.access(choice, os.X_OK)):
            raise ConfigError("hypervisor", f"{choice!r} is not an executable file")
        return _launcher_for_binary(choice, cache_dir)
    raise ConfigError(
        "hypervisor",
        f"expected auto, qemu, cloud-hypervisor, hollow or a path to a binary, got {choice!r}",
    )


__all__ = [
    "HOLLOW_BOOT_MARKER",
    "CloudHypervisorLauncher",
    "DiskSpec",
    "ExitInfo",
    "HollowLauncher",
    "LaunchError",
    "LaunchSpec",
    "Launcher",
    "MarkedProcess",
    "QemuLauncher",
    "RuntimeUnsupported",
    "StopResult",
    "StopStep",
    "VMMHandle",
    "VMMIdentity",
    "VMMStuckError",
    "find_marked_processes",
    "instance_id_for",
    "raise_fd_limit",
    "read_marker",
    "select_launcher",
    "stop_ladder",
]
