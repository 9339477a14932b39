"""Configure an IPv4 interface with the classic ioctls (no netlink, no subprocess).

SIOCSIFADDR / SIOCSIFNETMASK set the address, SIOCSIFFLAGS brings the link up and
SIOCADDRT adds the default route: each a single syscall on an AF_INET datagram
socket, which is all a VM with one NIC needs. It uses ``_socket`` rather than
``socket``: the latter builds its enums at import, a visible cost under TCG before
the API listens.
"""

from __future__ import annotations

import _socket
import ctypes
import errno
import fcntl
import os
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

    from kestrel.ipconfig import IpConfig

SIOCADDRT = 0x890B
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2


class NetConfigError(OSError):
    """The interface could not be configured."""


class _SockAddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14)]


class _RtEntry(ctypes.Structure):
    """struct rtentry from <net/route.h> (ctypes computes the padding)."""

    _fields_ = [
        ("rt_pad1", ctypes.c_ulong),
        ("rt_dst", _SockAddr),
        ("rt_gateway", _SockAddr),
        ("rt_genmask", _SockAddr),
        ("rt_flags", ctypes.c_ushort),
        ("rt_pad2", ctypes.c_short),
        ("rt_pad3", ctypes.c_ulong),
        ("rt_pad4", ctypes.c_void_p),
        ("rt_metric", ctypes.c_short),
        ("rt_dev", ctypes.c_char_p),
        ("rt_mtu", ctypes.c_ulong),
        ("rt_window", ctypes.c_ulong),
        ("rt_irtt", ctypes.c_ushort),
    ]


def _inet(address: str) -> _SockAddr:
    sa = _SockAddr()
    sa.family = _socket.AF_INET
    packed = struct.pack("!H4s", 0, _socket.inet_aton(address))
    for index, byte in enumerate(packed):
        sa.data[index] = byte
    return sa


def _ifreq_addr(name: str, address: str) -> bytes:
    """struct ifreq carrying a sockaddr_in (40 bytes on 64-bit Linux)."""
    sockaddr = struct.pack("=H", _socket.AF_INET)
    sockaddr += struct.pack("!H4s", 0, _socket.inet_aton(address)) + b"\0" * 8
    return struct.pack("16s", name.encode()) + sockaddr + b"\0" * 8


def _ioctl(sock: _socket.socket, request: int, arg: bytes, what: str) -> bytes:
    try:
        return fcntl.ioctl(sock.fileno(), request, arg)
    except OSError as exc:
        raise NetConfigError(exc.errno, f"{what}: {exc.strerror}") from None


def wait_for_interface(sys_root: StrPath, name: str, timeout: float) -> bool:
    """virtio_net registers eth0 shortly after the module loads; poll sysfs for it."""
    deadline = time.monotonic() + timeout
    path = os.path.join(sys_root, "class/net", name)
    while True:
        if os.path.exists(path):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def link_up(sock: _socket.socket, name: str) -> None:
    request = struct.pack("16sH22x", name.encode(), 0)
    flags = struct.unpack("16sH22x", _ioctl(sock, SIOCGIFFLAGS, request, f"get flags {name}"))[1]
    if not flags & IFF_UP:
        _ioctl(
            sock,
            SIOCSIFFLAGS,
            struct.pack("16sH22x", name.encode(), flags | IFF_UP),
            f"bring up {name}",
        )


def add_default_route(sock: _socket.socket, gateway: str, device: str) -> None:
    entry = _RtEntry()
    entry.rt_dst = _inet("0.0.0.0")
    entry.rt_genmask = _inet("0.0.0.0")
    entry.rt_gateway = _inet(gateway)
    entry.rt_flags = RTF_UP | RTF_GATEWAY
    dev_name = ctypes.create_string_buffer(device.encode())
    entry.rt_dev = ctypes.cast(dev_name, ctypes.c_char_p)
    try:
        fcntl.ioctl(sock.fileno(), SIOCADDRT, bytes(entry))
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            message = f"default route via {gateway}: {exc.strerror}"
            raise NetConfigError(exc.errno, message) from None


def configure_interface(config: IpConfig) -> None:
    """Address, netmask, link up, default route; idempotent."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        link_up(sock, "lo")
        if config.client_ip is not None:
            _ioctl(
                sock,
                SIOCSIFADDR,
                _ifreq_addr(config.device, config.client_ip),
                f"set address {config.client_ip} on {config.device}",
            )
            if config.netmask is not None:
                _ioctl(
                    sock,
                    SIOCSIFNETMASK,
                    _ifreq_addr(config.device, config.netmask),
                    f"set netmask {config.netmask} on {config.device}",
                )
        link_up(sock, config.device)
        if config.gateway is not None and config.client_ip is not None:
            add_default_route(sock, config.gateway, config.device)
    finally:
        sock.close()


def set_hostname(name: str) -> None:
    _socket.sethostname(name)


def write_resolv_conf(servers: tuple[str, ...], path: str = "/etc/resolv.conf") -> None:
    if not servers:
        return
    try:
        with open(path, "w") as handle:
            handle.writelines(f"nameserver {server}\n" for server in servers)
    except OSError:
        pass


def interface_addresses(sys_root: StrPath) -> dict[str, list[str]]:
    """IPv4 addresses per interface (SIOCGIFADDR), names from sysfs."""
    result: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(os.path.join(sys_root, "class/net")))
    except OSError:
        names = [name for _, name in _socket.if_nameindex()]
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        for name in names:
            addresses: list[str] = []
            try:
                reply = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("16s24x", name.encode()))
                address = _socket.inet_ntoa(reply[20:24])
                mask_reply = fcntl.ioctl(
                    sock.fileno(), 0x891B, struct.pack("16s24x", name.encode())
                )
                mask = _socket.inet_ntoa(mask_reply[20:24])
                prefix = bin(int.from_bytes(_socket.inet_aton(mask), "big")).count("1")
                addresses.append(f"{address}/{prefix}")
            except OSError:
                pass
            result[name] = addresses
    finally:
        sock.close()
    return result
