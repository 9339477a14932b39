"""Parse the kernel ``ip=`` parameter.

The guest kernel has no CONFIG_IP_PNP, so the parameter does nothing by itself;
kestrel reads it and configures the interface. Accepted forms (kernel
nfsroot.rst plus what volantd emits):

  ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>
  ip=10.0.0.2::10.0.0.1:255.255.255.0:vm1:eth0:off      (volantd, bridged)
  ip=::10.0.0.1:255.255.255.0:vm1:eth0:off              (no client address)
  ip=10.0.0.2/24::10.0.0.1                              (CIDR client address)
  ip=dhcp | ip=off | ip=none | ...                      (autoconf only)

The netmask may be dotted (255.255.255.0), a prefix length (24) or /24.
"""

from __future__ import annotations

STATIC_MODES = frozenset({"", "off", "none", "static"})
DHCP_MODES = frozenset({"on", "any", "dhcp", "bootp", "rarp", "both"})


class IpConfigError(ValueError):
    """The ``ip=`` value cannot be understood; the message says which field."""


def parse_ipv4(text: str) -> int:
    """Strict dotted quad to an integer (ipaddress would cost import time under TCG)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 3 for p in parts):
        raise ValueError(f"{text!r} is not a dotted-quad IPv4 address")
    value = 0
    for part in parts:
        octet = int(part)
        if len(part) > 1 and part.startswith("0"):
            raise ValueError(f"{text!r} has a leading zero (ambiguous octal)")
        if octet > 255:
            raise ValueError(f"{text!r} has an octet above 255")
        value = value << 8 | octet
    return value


def format_ipv4(value: int) -> str:
    return ".".join(str(value >> shift & 0xFF) for shift in (24, 16, 8, 0))


class IpConfig:
    """The parsed ``ip=`` value (a plain class: no dataclasses on the boot path)."""

    __slots__ = (
        "autoconf",
        "client_ip",
        "device",
        "dns",
        "gateway",
        "hostname",
        "prefix_len",
        "server_ip",
    )

    def __init__(
        self,
        client_ip: str | None = None,
        prefix_len: int | None = None,
        server_ip: str | None = None,
        gateway: str | None = None,
        hostname: str | None = None,
        device: str = "eth0",
        autoconf: str = "off",
        dns: tuple[str, ...] = (),
    ) -> None:
        self.client_ip = client_ip
        self.prefix_len = prefix_len
        self.server_ip = server_ip
        self.gateway = gateway
        self.hostname = hostname
        self.device = device
        self.autoconf = autoconf
        self.dns = dns

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IpConfig):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"IpConfig({fields})"

    @property
    def netmask(self) -> str | None:
        if self.prefix_len is None:
            return None
        return format_ipv4((0xFFFFFFFF << (32 - self.prefix_len)) & 0xFFFFFFFF)

    @property
    def dhcp(self) -> bool:
        return self.autoconf in DHCP_MODES

    @property
    def static(self) -> bool:
        return self.client_ip is not None and not self.dhcp


def _address(value: str, what: str) -> str | None:
    value = value.strip()
    if not value or value == "0.0.0.0":
        return None
    try:
        return format_ipv4(parse_ipv4(value))
    except ValueError:
        raise IpConfigError(f"ip=: {what} {value!r} is not an IPv4 address") from None


def parse_netmask(value: str) -> int:
    """Prefix length from ``255.255.255.0``, ``24`` or ``/24``."""
    text = value.strip().lstrip("/")
    # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
    if text.isascii() and text.isdigit() and len(text) <= 3:
        prefix = int(text)
        if not 0 <= prefix <= 32:
            raise IpConfigError(f"ip=: netmask prefix /{prefix} is out of range 0-32")
        return prefix
    try:
        mask = parse_ipv4(text)
    except ValueError:
        raise IpConfigError(f"ip=: netmask {value!r} is neither dotted nor a prefix") from None
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise IpConfigError(f"ip=: netmask {value!r} is not contiguous")
    return 32 - inverted.bit_length()


def classful_prefix(address: str) -> int:
    """What the kernel assumes when the netmask field is empty."""
    first = int(address.split(".", maxsplit=1)[0])
    if first < 128:
        return 8
    if first < 192:
        return 16
    return 24


def parse_ip_param(value: str) -> IpConfig:
    """Parse the value of ``ip=`` (without the ``ip=`` prefix)."""
    text = value.strip()
    if text.lower() in STATIC_MODES | DHCP_MODES and ":" not in text:
        return IpConfig(autoconf=text.lower() or "off")
    fields = text.split(":")
    if len(fields) > 10:
        raise IpConfigError(f"ip=: too many fields ({len(fields)}, at most 10)")
    fields += [""] * (10 - len(fields))
    client_raw, server_raw, gw_raw, mask_raw, hostname, device, autoconf = fields[:7]
    dns_raw = fields[7:9]

    prefix: int | None = None
    if "/" in client_raw:
        client_raw, _, prefix_raw = client_raw.partition("/")
        prefix = parse_netmask(prefix_raw)
    client = _address(client_raw, "client address")
    if mask_raw.strip():
        prefix = parse_netmask(mask_raw)
    if prefix is None and client is not None:
        prefix = classful_prefix(client)

    autoconf = autoconf.strip().lower() or "off"
    if autoconf not in STATIC_MODES | DHCP_MODES:
        raise IpConfigError(f"ip=: unknown autoconf mode {autoconf!r}")
    hostname = hostname.strip()
    if len(hostname) > 64:
        raise IpConfigError("ip=: hostname longer than 64 characters")
    device = device.strip() or "eth0"
    if len(device) > 15 or "/" in device:
        raise IpConfigError(f"ip=: device name {device!r} is not a valid interface name")
    dns = tuple(a for a in (_address(d, "dns server") for d in dns_raw) if a is not None)
    return IpConfig(
        client_ip=client,
        prefix_len=prefix,
        server_ip=_address(server_raw, "server address"),
        gateway=_address(gw_raw, "gateway"),
        hostname=hostname or None,
        device=device,
        autoconf=autoconf,
        dns=dns,
    )
