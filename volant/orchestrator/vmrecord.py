"""A VM's durable record (``vms/<name>/state.json``) and its public view.

The record is written by the VM's own actor only (one writer per file). It
holds everything recovery needs: identity of the VMM process (pid, start time,
marker), network identity (IP, MAC, tap, CID), the restart policy and counters,
and what the operator asked for (``desired``: running or stopped).

``config_version`` is the version of ``config.toml`` the VM last booted with.
``vfio_originals`` maps each passed-through PCI address to the driver it had
before it was bound to vfio-pci (``None``: it had none); it is written *before*
a device is touched and cleared once the device is given back, so recovery can
always restore the host's driver. Both have defaults, so records written before
they existed still load (no schema bump).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import cattrs

from volant.errors import ValidationError
from volant.runtime.base import VMMIdentity
from volant.store import SnapshotCodec

VM_CODEC = SnapshotCodec("vm", 1)


class VMStatus(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"
    DESTROYING = "destroying"


class RestartPolicyName(enum.StrEnum):
    NO = "no"
    ALWAYS = "always"
    ON_FAILURE = "on-failure"


@attrs.frozen
class RestartPolicy:
    """Like Fly Machines: ``no | always | on-failure`` with a retry budget.

    ``max_retries`` bounds *consecutive* automatic restarts; a VM that stays up
    for ``reset_after`` seconds earns its budget back. Exhausting it leaves the
    VM ``failed`` (with ``VM_FAILED``), never an endless loop.
    """

    name: RestartPolicyName = RestartPolicyName.ON_FAILURE
    max_retries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    reset_after: float = 60.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name.value, "max_retries": self.max_retries}

    @classmethod
    def parse(cls, raw: Any) -> RestartPolicy:
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise ValidationError("restart_policy: expected an object", field="restart_policy")
        unknown = set(raw) - {"name", "max_retries"}
        if unknown:
            raise ValidationError(
                f"restart_policy: unknown field {sorted(unknown)[0]!r}", field="restart_policy"
            )
        name = raw.get("name", "on-failure")
        if not isinstance(name, str) or name not in {p.value for p in RestartPolicyName}:
            raise ValidationError(
                "restart_policy.name: expected one of no, always, on-failure",
                field="restart_policy.name",
            )
        retries = raw.get("max_retries", 5)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 1000:
            raise ValidationError(
                "restart_policy.max_retries: expected an integer between 0 and 1000",
                field="restart_policy.max_retries",
            )
        return cls(name=RestartPolicyName(name), max_retries=retries)

    def should_restart(self, clean_exit: bool) -> bool:
        if self.name is RestartPolicyName.ALWAYS:
            return True
        if self.name is RestartPolicyName.ON_FAILURE:
            return not clean_exit
        return False


@attrs.frozen
class VMRecord:
    id: int
    name: str
    plugin: str
    runtime: str
    status: VMStatus
    desired: str  # "running" | "stopped"
    cpu_cores: int
    memory_mb: int
    network_mode: str
    ip_address: str  # "" when the mode has no host-assigned address
    mac_address: str
    tap: str  # "" when the mode needs no tap
    vsock_cid: int
    kernel_cmdline: str  # the stored base command line (upstream semantics)
    boot_args: dict[str, str]
    kernel: str
    initramfs: str
    root_disk: str  # per-VM writable copy of the rootfs, kept until destroy
    root_disk_source: str
    extra_disks: tuple[dict[str, Any], ...]
    restart_policy: RestartPolicy
    restart_count: int = 0
    consecutive_failures: int = 0
    config_version: int = 1
    deployment: str = ""
    vmm: VMMIdentity | None = None
    last_exit: str = ""
    created_at: str = ""
    updated_at: str = ""
    ready_timeout: float = 180.0
    vfio_originals: dict[str, str | None] = attrs.field(factory=dict)

    @property
    def pid(self) -> int | None:
        return self.vmm.pid if self.vmm is not None else None


_converter = cattrs.Converter()
_converter.register_unstructure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value
)


def record_to_doc(record: VMRecord) -> dict[str, Any]:
    doc: dict[str, Any] = _converter.unstructure(record)
    return doc


def record_from_doc(doc: dict[str, Any]) -> VMRecord:
    body = {k: v for k, v in doc.items() if k != "schema_version"}
    record: VMRecord = _converter.structure(body, VMRecord)
    return record


def record_view(record: VMRecord, serial_socket: str, console_log: str, *,
                current_config_version: int | None = None,
                restart_required: bool = False) -> dict[str, Any]:
    """The API's VM object: upstream's fields first, then ours.

    ``config_version`` is the version the VM booted with; ``current_config_version``
    the latest one; ``restart_required`` whether the running instance is behind it.
    """
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status.value,
        "runtime": record.runtime,
        "pid": record.pid,
        "ip_address": record.ip_address,
        "mac_address": record.mac_address,
        "cpu_cores": record.cpu_cores,
        "memory_mb": record.memory_mb,
        "kernel_cmdline": record.kernel_cmdline,
        "serial_socket": serial_socket,
        "created_at": record.created_at or None,
        "updated_at": record.updated_at or None,
        "plugin": record.plugin,
        "vsock_cid": record.vsock_cid,
        "network_mode": record.network_mode,
        "tap": record.tap,
        "restart_count": record.restart_count,
        "restart_policy": record.restart_policy.to_json(),
        "deployment": record.deployment or None,
        "desired_state": record.desired,
        "config_version": record.config_version,
        "current_config_version": (current_config_version if current_config_version
                                   is not None else record.config_version),
        "restart_required": restart_required,
        "pci_devices": sorted(record.vfio_originals),
        "console_log": console_log,
        "last_exit": record.last_exit or None,
        "hypervisor": record.vmm.kind if record.vmm is not None else None,
    }
