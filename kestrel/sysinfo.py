"""``GET /v1/system/info``: kernel, uptime, addresses, block devices, cloud-init seed."""

from __future__ import annotations

import _socket
import os

from kestrel.blockdev import list_block_devices
from kestrel.console import uptime
from kestrel.netconfig import interface_addresses
from kestrel.seed import SeedMount

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kestrel.config import AgentConfig


def system_info(config: AgentConfig, seed: SeedMount | None = None) -> dict[str, Any]:
    """Blocking (reads devices, may mount the seed): runs in the request's thread."""
    uname = os.uname()
    devices = list_block_devices(config.sys, config.dev)
    seed = seed or SeedMount(config)
    return {
        "hostname": _socket.gethostname(),
        "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine},
        "uptime_seconds": uptime(config.proc),
        "interfaces": [
            {"name": name, "addresses": addresses}
            for name, addresses in sorted(interface_addresses(config.sys).items())
        ],
        "block_devices": [
            {
                "name": device.name,
                "path": device.path,
                "size_bytes": device.size_bytes,
                "fstype": device.filesystem.type,
                "label": device.filesystem.label,
            }
            for device in devices
        ],
        "cloud_init": seed.describe(devices),
        "cmdline": {k: v for k, v in config.cmdline.items() if k not in _SECRET_KEYS},
    }


_SECRET_KEYS = frozenset({"volant.api_key", "volant.manifest"})
