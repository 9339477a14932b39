"""The cloud-init NoCloud seed: found by its label, mounted read-only beside the root.

volantd attaches the seed as the last disk (ISO9660 labelled ``cidata``, or FAT
``CIDATA``). kestrel never takes it for a root disk (see bootmode); it mounts it
read-only, without exec/suid/dev, under ``/run/kestrel/seed`` on first use, so the
workload (or a cloud-init in a rootfs image) can read its documents, and reports
what it holds in ``GET /v1/system/info`` -- sizes and sha256 sums, never the
content, since user-data often carries secrets.
"""

from __future__ import annotations

import _thread
import os

from kestrel import syscalls
from kestrel.blockdev import is_seed_label, list_block_devices

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from _typeshed import StrPath

    from kestrel.blockdev import BlockDevice
    from kestrel.config import AgentConfig
    from kestrel.latch import Latch

SEED_MOUNTPOINT = "/run/kestrel/seed"
#: The NoCloud documents, in the order cloud-init reads them.
SEED_FILES = ("meta-data", "user-data", "vendor-data", "network-config")
SEED_FSTYPES = frozenset({"iso9660", "vfat"})
_MOUNT_FLAGS = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
_MAX_DOCUMENT_BYTES = 16 << 20
#: How long a first mount waits for the seed's filesystem modules (loaded after the API).
MODULES_WAIT_SECONDS = 30.0

if TYPE_CHECKING:
    Mounter = Callable[[str, str, str, int, str], None]


def find_seed(devices: Iterable[BlockDevice]) -> BlockDevice | None:
    """The first device that carries a seed filesystem and label."""
    for device in devices:
        fs = device.filesystem
        if fs.type in SEED_FSTYPES and is_seed_label(fs.label):
            return device
    return None


def summarize_documents(directory: StrPath) -> dict[str, dict[str, Any]]:
    """``{name: {"size_bytes", "sha256"}}`` for each NoCloud document in ``directory``."""
    import hashlib  # only when asked: kept off the boot path

    found: dict[str, dict[str, Any]] = {}
    for name in SEED_FILES:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_DOCUMENT_BYTES + 1)
        except OSError:
            continue
        if len(data) > _MAX_DOCUMENT_BYTES:
            found[name] = {"size_bytes": os.path.getsize(path), "sha256": None,
                           "error": "larger than 16 MiB, not read"}
            continue
        found[name] = {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return found


class SeedMount:
    """Mounts the seed once (PID 1 only) and describes it.

    Outside PID 1 (tests, a developer host) nothing is mounted: a seed that is
    already mounted at ``mountpoint`` is still read.
    """

    def __init__(
        self,
        config: AgentConfig,
        mountpoint: StrPath = SEED_MOUNTPOINT,
        mount: Mounter = syscalls.mount,
        modules_loaded: Latch | None = None,
    ) -> None:
        self.config = config
        self.modules_loaded = modules_loaded
        self.mountpoint: str = os.fspath(mountpoint)
        self._mount = mount
        self._mounted_from: str | None = None
        self._error: str | None = None
        self._lock = _thread.allocate_lock()  # the info route runs in connection threads

    def _ensure_mounted(self, device: BlockDevice) -> None:
        if self._mounted_from == device.path or not self.config.pid1:
            return
        if self.modules_loaded is not None:
            self.modules_loaded.wait(MODULES_WAIT_SECONDS)
        try:
            os.makedirs(self.mountpoint, 0o755, exist_ok=True)
            fstype = device.filesystem.type or ""
            self._mount(device.path, self.mountpoint, fstype, _MOUNT_FLAGS, "")
        except OSError as exc:
            self._error = f"mounting {device.path} ({device.filesystem.type}) failed: {exc}"
            return
        self._mounted_from = device.path
        self._error = None

    def describe(self, devices: Iterable[BlockDevice] | None = None) -> dict[str, Any] | None:
        """The seed's device and documents, or ``None`` when the VM has no seed."""
        if devices is None:
            devices = list_block_devices(self.config.sys, self.config.dev)
        device = find_seed(devices)
        if device is None:
            return None
        with self._lock:
            self._ensure_mounted(device)
            error = self._error
        return {
            "device": device.path,
            "fstype": device.filesystem.type,
            "label": device.filesystem.label,
            "mountpoint": self.mountpoint,
            "documents": summarize_documents(self.mountpoint),
            "error": error,
        }
