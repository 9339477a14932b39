"""Netlink monitor: link and IPv4 address removals as an async iterator of typed events.

A raw ``NETLINK_ROUTE`` socket subscribed to the link and IPv4-address
multicast groups is made non-blocking and awaited with
``trio.lowlevel.wait_readable``, so the monitor needs no thread and is
cancelled like any trio code. pyroute2 only parses the messages (and, for a
``netns``, creates the socket inside that namespace).

If the kernel drops notifications because we read too slowly (``ENOBUFS``),
the monitor yields :class:`EventsLost`: the consumer must then re-check its
state from scratch, since it cannot know what it missed.

Usage::

    async with open_monitor(netns) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from volant.errors import UnavailableError

_RECV_SIZE = 1 << 16
_RCVBUF = 1 << 20


@attrs.frozen
class LinkRemoved:
    name: str
    index: int


@attrs.frozen
class AddressRemoved:
    name: str  # the interface (IPv4 label)
    address: str  # "a.b.c.d/len"
    index: int


@attrs.frozen
class EventsLost:
    """The kernel dropped notifications (receive buffer overflow): re-check everything."""


NetlinkEvent = LinkRemoved | AddressRemoved | EventsLost


def _open_socket(netns: str | None, receive_buffer: int) -> socket.socket:
    from pyroute2 import netns as pyroute2_netns
    from pyroute2.netlink import NETLINK_ROUTE
    from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_LINK

    try:
        if netns:
            sock: socket.socket = pyroute2_netns.create_socket(
                netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE, flags=0
            )
        else:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    except FileNotFoundError:
        raise UnavailableError(f"network namespace {netns!r} does not exist") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_events(data: bytes, marshal: Any) -> list[NetlinkEvent]:
    """Turn raw netlink bytes into removal events (other messages are ignored)."""
    from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_DELLINK

    events: list[NetlinkEvent] = []
    for msg in marshal.parse(data):
        kind = msg["header"]["type"]
        if kind == RTM_DELLINK and msg["family"] == socket.AF_UNSPEC:
            # AF_BRIDGE deletions only mean "no longer a port of that bridge" (e.g. the
            # bridge went away); the device itself still exists.
            events.append(LinkRemoved(name=str(msg.get_attr("IFLA_IFNAME")), index=msg["index"]))
        elif kind == RTM_DELADDR and msg["family"] == socket.AF_INET:
            events.append(
                AddressRemoved(
                    name=str(msg.get_attr("IFA_LABEL") or ""),
                    address=f"{msg.get_attr('IFA_LOCAL') or msg.get_attr('IFA_ADDRESS')}"
                    f"/{msg['prefixlen']}",
                    index=msg["index"],
                )
            )
    return events


async def _iterate(sock: socket.socket) -> AsyncGenerator[NetlinkEvent, None]:
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    marshal = MarshalRtnl()
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                yield EventsLost()
                continue
            raise
        for event in parse_events(data, marshal):
            yield event


@asynccontextmanager
async def open_monitor(
    netns: str | None = None, receive_buffer: int = _RCVBUF
) -> AsyncIterator[AsyncIterator[NetlinkEvent]]:
    """Subscribe now (before returning), so no removal after entry is missed."""
    sock = await trio.to_thread.run_sync(_open_socket, netns, receive_buffer)
    events = _iterate(sock)
    try:
        yield events
    finally:
        await events.aclose()
        trio.lowlevel.notify_closing(sock)
        sock.close()
