"""A minimal DHCP server for ``dhcp``-mode VMs on our bridge (DISCOVER/OFFER/REQUEST/ACK).

Upstream left DHCP to the user (a [GAP]); here the addresses still come from
IPAM (so a dhcp-mode VM's address is as stable as a bridged one's), and the
server only answers MACs it knows: a guest we did not create gets no answer, so
we never fight another DHCP server on a shared segment.

Split in three: :func:`decode` / :func:`encode` (pure packet format, RFC 2131 /
2132), :class:`Responder` (pure decision: which reply to a request) and
:func:`serve` (the UDP socket on port 67 bound to the bridge with
``SO_BINDTODEVICE``). Replies are broadcast on the bridge, since the client has
no address yet (and we do not write ARP entries); renewals from a client that
already has its address are unicast.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

import attrs
import trio

from volant.logging import get_logger

SERVER_PORT = 67
CLIENT_PORT = 68
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST, BOOTREPLY = 1, 2
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes before the cookie
_BROADCAST_FLAG = 0x8000
_ZERO = IPv4Address(0)

# message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8

# option codes
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_RENEWAL_TIME = 58
OPT_REBINDING_TIME = 59

log = get_logger("volant.network.dhcp")


class DhcpDecodeError(ValueError):
    """The bytes are not a DHCP message we can read."""


@attrs.frozen
class DhcpMessage:
    op: int
    xid: int
    chaddr: str  # client MAC, "aa:bb:cc:dd:ee:ff"
    options: dict[int, bytes] = attrs.field(factory=dict)
    ciaddr: IPv4Address = _ZERO
    yiaddr: IPv4Address = _ZERO
    siaddr: IPv4Address = _ZERO
    giaddr: IPv4Address = _ZERO
    flags: int = 0
    secs: int = 0
    hops: int = 0

    @property
    def message_type(self) -> int | None:
        raw = self.options.get(OPT_MESSAGE_TYPE)
        return raw[0] if raw and len(raw) == 1 else None

    def ip_option(self, code: int) -> IPv4Address | None:
        raw = self.options.get(code)
        return IPv4Address(raw) if raw is not None and len(raw) == 4 else None


def decode(data: bytes) -> DhcpMessage:
    """Parse a BOOTP/DHCP packet; raises :class:`DhcpDecodeError` on anything malformed."""
    if len(data) < _FIXED.size + len(MAGIC_COOKIE):
        raise DhcpDecodeError(f"packet too short ({len(data)} bytes)")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     _sname, _file) = _FIXED.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpDecodeError(f"unknown op {op}")
    if htype != 1 or hlen != 6:
        raise DhcpDecodeError(f"not Ethernet (htype {htype}, hlen {hlen})")
    if data[_FIXED.size:_FIXED.size + 4] != MAGIC_COOKIE:
        raise DhcpDecodeError("missing DHCP magic cookie")
    options: dict[int, bytes] = {}
    pos = _FIXED.size + 4
    while pos < len(data):
        code = data[pos]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            pos += 1
            continue
        if pos + 1 >= len(data):
            raise DhcpDecodeError("truncated option")
        length = data[pos + 1]
        value = data[pos + 2:pos + 2 + length]
        if len(value) != length:
            raise DhcpDecodeError(f"option {code} overruns the packet")
        options[code] = options.get(code, b"") + value  # RFC 3396: repeated options concatenate
        pos += 2 + length
    else:
        raise DhcpDecodeError("options not terminated by END")
    return DhcpMessage(
        op=op, xid=xid, chaddr=":".join(f"{b:02x}" for b in chaddr[:6]), options=options,
        ciaddr=IPv4Address(ciaddr), yiaddr=IPv4Address(yiaddr), siaddr=IPv4Address(siaddr),
        giaddr=IPv4Address(giaddr), flags=flags, secs=secs, hops=hops,
    )


def encode(msg: DhcpMessage) -> bytes:
    """Serialise a message (options in code order, long ones split per RFC 3396)."""
    chaddr = bytes(int(part, 16) for part in msg.chaddr.split(":"))
    if len(chaddr) != 6:
        raise ValueError(f"invalid MAC {msg.chaddr!r}")
    out = bytearray(_FIXED.pack(
        msg.op, 1, 6, msg.hops, msg.xid, msg.secs, msg.flags, msg.ciaddr.packed,
        msg.yiaddr.packed, msg.siaddr.packed, msg.giaddr.packed, chaddr.ljust(16, b"\0"),
        b"", b"",
    ))
    out += MAGIC_COOKIE
    # message type first: some clients expect it early
    codes = sorted(msg.options, key=lambda c: (c != OPT_MESSAGE_TYPE, c))
    for code in codes:
        value = msg.options[code]
        for start in range(0, max(len(value), 1), 255):
            chunk = value[start:start + 255]
            out += bytes([code, len(chunk)]) + chunk
    out.append(OPT_END)
    if len(out) < 300:  # BOOTP minimum; some clients drop shorter packets
        out += b"\0" * (300 - len(out))
    return bytes(out)


@attrs.frozen
class Lease:
    ip: IPv4Address
    hostname: str | None = None


@attrs.frozen
class Responder:
    """Decides replies. ``lookup(mac)`` gives the lease for a MAC we know, else ``None``."""

    server_ip: IPv4Address
    subnet: IPv4Network
    lookup: Callable[[str], Lease | None]
    lease_seconds: int = 3600
    dns: tuple[IPv4Address, ...] = ()

    def handle(self, request: DhcpMessage) -> DhcpMessage | None:
        if request.op != BOOTREQUEST:
            return None
        kind = request.message_type
        if kind not in (DISCOVER, REQUEST):
            return None  # RELEASE/DECLINE/INFORM: the address stays the VM's anyway
        lease = self.lookup(request.chaddr.lower())
        if lease is None:
            return None  # not one of our VMs: stay silent
        if kind == DISCOVER:
            return self._reply(request, OFFER, lease)
        server_id = request.ip_option(OPT_SERVER_ID)
        if server_id is not None and server_id != self.server_ip:
            return None  # the client chose another server's offer
        wanted = request.ip_option(OPT_REQUESTED_IP) or (
            request.ciaddr if int(request.ciaddr) else None
        )
        if wanted is not None and wanted != lease.ip:
            return self._nak(request)
        return self._reply(request, ACK, lease)

    def _base_options(self, kind: int) -> dict[int, bytes]:
        return {OPT_MESSAGE_TYPE: bytes([kind]), OPT_SERVER_ID: self.server_ip.packed}

    def _reply(self, request: DhcpMessage, kind: int, lease: Lease) -> DhcpMessage:
        options = self._base_options(kind)
        options[OPT_LEASE_TIME] = struct.pack("!I", self.lease_seconds)
        options[OPT_RENEWAL_TIME] = struct.pack("!I", self.lease_seconds // 2)
        options[OPT_REBINDING_TIME] = struct.pack("!I", self.lease_seconds * 7 // 8)
        options[OPT_SUBNET_MASK] = self.subnet.netmask.packed
        options[OPT_BROADCAST] = self.subnet.broadcast_address.packed
        options[OPT_ROUTER] = self.server_ip.packed
        if self.dns:
            options[OPT_DNS] = b"".join(ip.packed for ip in self.dns)
        if lease.hostname:
            options[OPT_HOSTNAME] = lease.hostname.encode("ascii", "ignore")[:63]
        return DhcpMessage(
            op=BOOTREPLY, xid=request.xid, chaddr=request.chaddr, options=options,
            ciaddr=request.ciaddr, yiaddr=lease.ip, siaddr=self.server_ip,
            giaddr=request.giaddr, flags=request.flags,
        )

    def _nak(self, request: DhcpMessage) -> DhcpMessage:
        return DhcpMessage(
            op=BOOTREPLY, xid=request.xid, chaddr=request.chaddr,
            options=self._base_options(NAK), giaddr=request.giaddr,
            flags=request.flags | _BROADCAST_FLAG,
        )


def reply_destination(request: DhcpMessage, reply: DhcpMessage) -> tuple[str, int]:
    """Where to send ``reply`` (RFC 2131 4.1, without relay agents or ARP writes)."""
    if reply.message_type != NAK and int(request.ciaddr) and not request.flags & _BROADCAST_FLAG:
        return (str(request.ciaddr), CLIENT_PORT)
    return ("255.255.255.255", CLIENT_PORT)


def _open_socket(bridge: str, netns: str | None) -> socket.socket:
    from pyroute2 import netns as pyroute2_netns

    if netns:
        sock: socket.socket = pyroute2_netns.create_socket(
            netns, socket.AF_INET, socket.SOCK_DGRAM, 0, flags=0
        )
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
        sock.bind(("0.0.0.0", SERVER_PORT))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    bridge: str,
    responder: Responder,
    netns: str | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer DHCP on ``bridge`` until cancelled. Start with ``nursery.start`` to know
    the socket is bound."""
    raw = await trio.to_thread.run_sync(_open_socket, bridge, netns)
    with trio.socket.from_stdlib_socket(raw) as sock:
        task_status.started()
        while True:
            data, _peer = await sock.recvfrom(4096)
            try:
                request = decode(data)
            except DhcpDecodeError as exc:
                log.debug("dhcp_ignored_packet", reason=str(exc))
                continue
            reply = responder.handle(request)
            if reply is None:
                continue
            log.info("dhcp_reply", mac=request.chaddr, type=reply.message_type,
                     ip=str(reply.yiaddr))
            try:
                await sock.sendto(encode(reply), reply_destination(request, reply))
            except OSError as exc:  # e.g. the bridge went away; keep serving
                log.warning("dhcp_send_failed", mac=request.chaddr, error=str(exc))
