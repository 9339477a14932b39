"""Host devices for passthrough: VFIO over sysfs (root configurable with ``VOLANT_SYSFS_ROOT``)."""

from volant.devices.sysfs import (
    DEFAULT_SYSFS_ROOT,
    SYSFS_ROOT_ENV,
    Sysfs,
    SysfsWriteError,
    sysfs_root,
)
from volant.devices.vfio import (
    HARMLESS_DRIVERS,
    VFIO_DRIVER,
    BindPlan,
    DeviceInfo,
    IommuGroup,
    VfioManager,
    allowlist_matches,
    normalize_address,
)

__all__ = [
    "DEFAULT_SYSFS_ROOT",
    "HARMLESS_DRIVERS",
    "SYSFS_ROOT_ENV",
    "VFIO_DRIVER",
    "BindPlan",
    "DeviceInfo",
    "IommuGroup",
    "Sysfs",
    "SysfsWriteError",
    "VfioManager",
    "allowlist_matches",
    "normalize_address",
    "sysfs_root",
]
