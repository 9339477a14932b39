"""VM network modes and what each one needs from the host.

``bridged`` (default): a host-allocated IP and a tap on the bridge.
``dhcp``: a tap; the guest asks for its address by DHCP and is answered from the
same pool, so the address is still stable and recorded. ``vsock``: neither tap
nor IP. IP-less VMs simply hold no IPAM entry, so any number of them coexist
(upstream's ``NOT NULL UNIQUE`` empty-IP column made the second one fail).
"""

from __future__ import annotations

import enum

from volant.errors import ValidationError


class NetworkMode(enum.StrEnum):
    BRIDGED = "bridged"
    DHCP = "dhcp"
    VSOCK = "vsock"

    @property
    def needs_tap(self) -> bool:
        return self is not NetworkMode.VSOCK

    @property
    def needs_ip(self) -> bool:
        """Whether IPAM holds an address for the VM (dhcp too: the DHCP server answers it)."""
        return self is not NetworkMode.VSOCK

    @property
    def ip_on_cmdline(self) -> bool:
        """Whether the guest is told its address statically (kernel cmdline / agent config)."""
        return self is NetworkMode.BRIDGED


def parse_mode(value: str | None, field: str = "network.mode") -> NetworkMode:
    """Case-insensitive; empty or missing means ``bridged`` (as upstream)."""
    if value is None or not value.strip():
        return NetworkMode.BRIDGED
    try:
        return NetworkMode(value.strip().lower())
    except ValueError:
        allowed = ", ".join(mode.value for mode in NetworkMode)
        raise ValidationError(
            f"invalid {field} {value!r}: expected one of {allowed}", field=field
        ) from None
