"""Netlink adapter: bridges and taps through pyroute2 (no ``ip`` subprocesses).

Every function is synchronous and blocking; async code calls them through
:func:`run_blocking` (``trio.to_thread.run_sync``). Each call opens its own
short-lived ``IPRoute`` socket, because pyroute2 0.9's synchronous ``IPRoute``
drives a private asyncio loop and must not be shared between worker threads;
opening one costs a few milliseconds (a fork when ``netns`` is given).

Every function takes ``netns``: ``None`` is the current namespace, a name is a
namespace under ``/run/netns`` (never created implicitly: a missing namespace is
an error). All "ensure"/"create" operations are idempotent: measure, then act.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import attrs
import trio

from volant.errors import ConflictError, UnavailableError, ValidationError

MAX_IFNAME = 15
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_IFF_UP = 0x1

P = ParamSpec("P")
T = TypeVar("T")


class LinkError(UnavailableError):
    """The kernel refused a link operation (503: the host network is not usable)."""


@attrs.frozen
class BridgeInfo:
    index: int
    mtu: int
    addresses: tuple[str, ...]  # IPv4 "a.b.c.d/len"


@attrs.frozen
class LinkInfo:
    index: int
    name: str
    kind: str  # "bridge", "tun" (taps report "tun"), "veth", "" for plain devices
    mtu: int
    mac: str
    up: bool
    master: str | None  # the bridge a port is enslaved to
    tap: bool  # a tun/tap device in tap mode
    persistent: bool  # tuntap persist flag (survives the creator closing its fd)


def validate_ifname(name: object, key: str = "ifname") -> str:
    """Interface names: 1-15 characters of letters, digits, ``_.-`` (kernel rule, stricter)."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{key}: interface name is required", field=key)
    if len(name) > MAX_IFNAME:
        raise ValidationError(
            f"{key}: interface name {name!r} is too long ({len(name)} characters, "
            f"at most {MAX_IFNAME})",
            field=key,
        )
    if not _IFNAME.match(name) or name in (".", ".."):
        raise ValidationError(
            f"{key}: invalid interface name {name!r} (letters, digits, '_', '.', '-' only)",
            field=key,
        )
    return name


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one of these blocking functions in a worker thread from trio code."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


@contextmanager
def _iproute(netns: str | None) -> Iterator[Any]:
    from pyroute2 import IPRoute

    try:
        ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
    except FileNotFoundError:
        raise LinkError(f"network namespace {netns!r} does not exist", netns=netns) from None
    try:
        yield ipr
    finally:
        ipr.close()


def _netlink_errno(exc: BaseException) -> int | None:
    from pyroute2.netlink.exceptions import NetlinkError

    if isinstance(exc, NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError):
        return exc.errno
    return None


def _fail(action: str, name: str, exc: BaseException) -> LinkError:
    code = _netlink_errno(exc)
    reason = errno.errorcode.get(code, str(code)) if code is not None else type(exc).__name__
    return LinkError(f"cannot {action} {name!r}: {exc} ({reason})", link=name, action=action)


def _lookup(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _get(ipr: Any, index: int) -> Any:
    return ipr.link("get", index=index)[0]


def _to_info(ipr: Any, msg: Any) -> LinkInfo:
    kind = msg.get(("linkinfo", "kind")) or ""
    data = msg.get(("linkinfo", "data"))
    tun_type = data.get("IFLA_TUN_TYPE") if kind == "tun" and data is not None else None
    persist = bool(data.get("IFLA_TUN_PERSIST")) if kind == "tun" and data is not None else False
    master_index = msg.get("master")
    master: str | None = None
    if master_index:
        try:
            master = _get(ipr, master_index).get("ifname")
        except Exception:  # the master vanished in between: report no master
            master = None
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        kind=str(kind),
        mtu=int(msg.get("mtu")),
        mac=str(msg.get("address") or ""),
        up=bool(msg["flags"] & _IFF_UP),
        master=master,
        tap=tun_type == 2,
        persistent=persist,
    )


def _ipv4_addresses(ipr: Any, index: int) -> tuple[str, ...]:
    import socket

    out = []
    for msg in ipr.addr("dump", index=index, family=socket.AF_INET):
        out.append(f"{msg.get('address')}/{msg['prefixlen']}")
    return tuple(sorted(out))


def bridge_mac(name: str) -> str:
    """A stable MAC for our bridge, so it does not follow its lowest-numbered port."""
    digest = hashlib.sha1(f"bridge|{name}".encode()).digest()[:5]
    return ":".join(f"{b:02x}" for b in bytes([0x02]) + digest)


# -- queries -----------------------------------------------------------------


def link_exists(name: str, netns: str | None = None) -> bool:
    validate_ifname(name)
    with _iproute(netns) as ipr:
        return _lookup(ipr, name) is not None


def link_info(name: str, netns: str | None = None) -> LinkInfo | None:
    """Details of one interface, or ``None`` if it does not exist."""
    validate_ifname(name)
    with _iproute(netns) as ipr:
        index = _lookup(ipr, name)
        if index is None:
            return None
        try:
            return _to_info(ipr, _get(ipr, index))
        except Exception as exc:
            if _netlink_errno(exc) == errno.ENODEV:
                return None
            raise _fail("inspect", name, exc) from exc


def list_links(prefix: str = "", netns: str | None = None) -> list[str]:
    """Names of all interfaces starting with ``prefix``, sorted."""
    with _iproute(netns) as ipr:
        names = [str(msg.get("ifname")) for msg in ipr.link("dump")]
    return sorted(n for n in names if n.startswith(prefix))


def addresses(name: str, netns: str | None = None) -> tuple[str, ...]:
    """IPv4 addresses (``a.b.c.d/len``) on ``name``; empty if the link is missing."""
    validate_ifname(name)
    with _iproute(netns) as ipr:
        index = _lookup(ipr, name)
        return () if index is None else _ipv4_addresses(ipr, index)


# -- bridge ----------------------------------------------------------------------


def ensure_bridge(
    name: str, address_cidr: str, mtu: int | None = None, netns: str | None = None
) -> BridgeInfo:
    """Make sure bridge ``name`` exists, holds ``address_cidr`` and is up.

    Creates it if missing (with a stable MAC), adds the address if missing
    (other addresses are left alone), sets ``mtu`` if given and different.
    An existing interface of another kind is a ``ConflictError``.
    """
    validate_ifname(name, "bridge")
    try:
        iface = ipaddress.IPv4Interface(address_cidr)
    except ValueError:
        raise ValidationError(
            f"host_ip: invalid IPv4 address/prefix {address_cidr!r}", field="host_ip"
        ) from None
    if mtu is not None and not 68 <= mtu <= 65535:
        raise ValidationError(f"mtu: {mtu} is outside 68-65535", field="mtu")
    with _iproute(netns) as ipr:
        index = _lookup(ipr, name)
        if index is None:
            spec: dict[str, Any] = {"ifname": name, "kind": "bridge", "address": bridge_mac(name)}
            if mtu is not None:
                spec["mtu"] = mtu
            try:
                ipr.link("add", **spec)
            except Exception as exc:
                if _netlink_errno(exc) != errno.EEXIST:  # lost a race: fine
                    raise _fail("create bridge", name, exc) from exc
            index = _lookup(ipr, name)
            if index is None:
                raise LinkError(f"bridge {name!r} vanished right after creation", link=name)
        msg = _get(ipr, index)
        kind = msg.get(("linkinfo", "kind"))
        if kind != "bridge":
            raise ConflictError(
                f"interface {name!r} exists but is a {kind or 'plain device'}, not a bridge",
                link=name,
            )
        try:
            if mtu is not None and msg.get("mtu") != mtu:
                ipr.link("set", index=index, mtu=mtu)
            wanted = f"{iface.ip}/{iface.network.prefixlen}"
            if wanted not in _ipv4_addresses(ipr, index):
                try:
                    ipr.addr(
                        "add", index=index, address=str(iface.ip),
                        prefixlen=iface.network.prefixlen,
                        broadcast=str(iface.network.broadcast_address),
                    )
                except Exception as exc:
                    if _netlink_errno(exc) != errno.EEXIST:
                        raise
            if not msg["flags"] & _IFF_UP:
                ipr.link("set", index=index, state="up")
            msg = _get(ipr, index)
            return BridgeInfo(index=index, mtu=int(msg.get("mtu")),
                              addresses=_ipv4_addresses(ipr, index))
        except (ConflictError, LinkError):
            raise
        except Exception as exc:
            raise _fail("configure bridge", name, exc) from exc


# -- taps -------------------------------------------------------------------------


def create_tap(
    name: str,
    bridge: str,
    mac: str,
    mtu: int | None = None,
    netns: str | None = None,
) -> LinkInfo:
    """Ensure a persistent tap ``name`` (vnet_hdr, owner root) on ``bridge``, up.

    Idempotent: an existing tap of that name is reconfigured, not recreated,
    so a tap a running VMM holds open survives a daemon restart. ``mac`` is the
    tap's own MAC (not the guest's); ``mtu`` defaults to the bridge's MTU.
    """
    validate_ifname(name, "tap")
    validate_ifname(bridge, "bridge")
    with _iproute(netns) as ipr:
        bridge_index = _lookup(ipr, bridge)
        if bridge_index is None:
            raise LinkError(f"bridge {bridge!r} does not exist", link=bridge)
        bridge_msg = _get(ipr, bridge_index)
        if bridge_msg.get(("linkinfo", "kind")) != "bridge":
            raise ConflictError(f"interface {bridge!r} is not a bridge", link=bridge)
        target_mtu = mtu if mtu is not None else int(bridge_msg.get("mtu"))
        index = _lookup(ipr, name)
        if index is None:
            try:
                ipr.link(
                    "add", ifname=name, kind="tuntap", mode="tap", uid=0, gid=0,
                    ifr={"no_pi": 1, "vnet_hdr": 1},
                )
            except Exception as exc:
                if _netlink_errno(exc) not in (errno.EEXIST, errno.EBUSY):
                    raise _fail("create tap", name, exc) from exc
            index = _lookup(ipr, name)
            if index is None:
                raise LinkError(f"tap {name!r} vanished right after creation", link=name)
        info = _to_info(ipr, _get(ipr, index))
        if not info.tap:
            raise ConflictError(
                f"interface {name!r} exists but is a {info.kind or 'plain device'}, not a tap",
                link=name,
            )
        try:
            # one RTM_NEWLINK carrying every difference (MTU before master, per do_setlink)
            changes: dict[str, Any] = {}
            if info.mtu != target_mtu:
                changes["mtu"] = target_mtu
            if info.mac.lower() != mac.lower():
                changes["address"] = mac.lower()
            if info.master != bridge:
                changes["master"] = bridge_index
            if not info.up:
                changes["state"] = "up"
            if not changes:
                return info
            ipr.link("set", index=index, **changes)
            return _to_info(ipr, _get(ipr, index))
        except Exception as exc:
            raise _fail("configure tap", name, exc) from exc


def delete_link(name: str, netns: str | None = None) -> bool:
    """Delete ``name``; a missing link is fine. Returns whether something was deleted."""
    validate_ifname(name)
    with _iproute(netns) as ipr:
        index = _lookup(ipr, name)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except Exception as exc:
            if _netlink_errno(exc) == errno.ENODEV:
                return False
            raise _fail("delete", name, exc) from exc
        return True


def sweep_orphan_taps(
    owned: Iterable[str], is_ours: Callable[[str], bool], netns: str | None = None
) -> list[str]:
    """Delete taps that look like ours (``is_ours``) but no VM owns; return their names.

    Pass :func:`volant.network.tapname.is_our_tap` as ``is_ours``. The caller
    emits one event per returned name.
    """
    keep = set(owned)
    removed = []
    for name in list_links("", netns):
        if is_ours(name) and name not in keep and delete_link(name, netns):
            removed.append(name)
    return removed
