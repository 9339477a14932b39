"""IP, vsock CID and MAC allocation: pure, in memory, rebuilt from VM records.

There is deliberately no allocation table of its own: at startup the allocator
is rebuilt from the VM records (``rebuild``), so an address can only be held by
a VM that exists, and nothing can leak across crashes. Addresses are handed out
lowest-first in *numeric* order (upstream compared them as text, so ``.10``
came before ``.2``); the network, broadcast and host addresses are never handed
out. A VM that already holds an address gets the same one back.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

import attrs

from volant.errors import ConflictError, ValidationError

FIRST_CID = 3  # 0-2 are reserved (hypervisor, local, host)
MAX_CID = 0xFFFFFFFE  # 0xFFFFFFFF is VMADDR_CID_ANY

IPLike = IPv4Address | str


class AddressPoolExhausted(ConflictError):
    """Every usable address of the subnet is held by some VM (409)."""


@attrs.frozen
class RebuildConflict:
    """A record whose IP or CID could not be honoured (duplicate or outside the subnet)."""

    vm_name: str
    field: str  # "ip" or "cid"
    value: str
    reason: str


def derive_mac(name: str, ip: IPLike | None) -> str:
    """Guest MAC (upstream 5.3): ``02`` + first 5 bytes of SHA-1(``"<name>|<ip>"``).

    For IP-less VMs the input is ``"<name>|"``. Stable as long as name and IP are.
    """
    text = f"{name}|{ip if ip is not None else ''}"
    return _mac_from(0x02, text)


def derive_tap_mac(name: str) -> str:
    """Host-side tap MAC: never equal to the guest's, and high so the bridge never adopts it.

    A Linux bridge takes the numerically lowest port MAC unless its own address
    was set; ``fe:`` (locally administered, unicast) keeps taps out of that race,
    and the first byte alone guarantees it differs from the ``02:`` guest MAC.
    """
    return _mac_from(0xFE, f"tap|{name}")


def _mac_from(first_byte: int, text: str) -> str:
    digest = hashlib.sha1(text.encode("utf-8")).digest()[:5]
    return ":".join(f"{b:02x}" for b in bytes([first_byte]) + digest)


def _as_ip(value: IPLike, field: str = "ip") -> IPv4Address:
    if isinstance(value, IPv4Address):
        return value
    try:
        return IPv4Address(value)
    except ValueError:
        raise ValidationError(f"invalid IPv4 address {value!r}", field=field) from None


class IPAM:
    """Allocator for one subnet. Not thread-safe: owned by a single actor."""

    def __init__(self, subnet: str | IPv4Network, host_ip: IPLike) -> None:
        try:
            net = ipaddress.ip_network(subnet, strict=True) if isinstance(subnet, str) else subnet
        except ValueError as exc:
            raise ValidationError(f"invalid subnet {subnet!r}: {exc}", field="subnet") from None
        if not isinstance(net, IPv4Network):
            raise ValidationError(f"only IPv4 subnets are supported, got {subnet}", field="subnet")
        if net.num_addresses < 4:
            raise ValidationError(f"subnet {net} has no room for VMs", field="subnet")
        host = _as_ip(host_ip, "host_ip")
        if host not in net or host in (net.network_address, net.broadcast_address):
            raise ValidationError(
                f"host IP {host} is not a usable address of subnet {net}", field="host_ip"
            )
        self.subnet: IPv4Network = net
        self.host_ip: IPv4Address = host
        self._first = int(net.network_address) + 1
        self._last = int(net.broadcast_address) - 1
        self._ip_by_vm: dict[str, IPv4Address] = {}
        self._vm_by_ip: dict[IPv4Address, str] = {}
        self._taken: list[int] = [int(host)]  # sorted ints: host + every VM address
        self._cid_by_vm: dict[str, int] = {}
        self._vm_by_cid: dict[int, str] = {}
        self._cids: list[int] = []  # sorted

    # -- inspection -------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many VM addresses the subnet offers in total."""
        return self._last - self._first + 1 - 1  # minus the host address

    def ip_of(self, vm_name: str) -> IPv4Address | None:
        return self._ip_by_vm.get(vm_name)

    def cid_of(self, vm_name: str) -> int | None:
        return self._cid_by_vm.get(vm_name)

    def owner_of(self, ip: IPLike) -> str | None:
        return self._vm_by_ip.get(_as_ip(ip))

    def ip_allocations(self) -> dict[str, IPv4Address]:
        return dict(self._ip_by_vm)

    def cid_allocations(self) -> dict[str, int]:
        return dict(self._cid_by_vm)

    def is_assignable(self, ip: IPLike) -> bool:
        """Inside the subnet and not network, broadcast or host address."""
        addr = _as_ip(ip)
        return addr in self.subnet and self._first <= int(addr) <= self._last and (
            addr != self.host_ip
        )

    # -- startup ------------------------------------------------------------

    def rebuild(
        self, records: Iterable[tuple[str, IPLike | None, int | None]]
    ) -> list[RebuildConflict]:
        """Replace every allocation with those recorded in ``(vm_name, ip, cid)`` rows.

        The first record to claim an IP or CID keeps it. Returned conflicts (a
        duplicate, an address outside the subnet after a subnet change, an
        invalid value) are left unallocated so the caller can allocate afresh
        and report an event; they never stop the daemon.
        """
        self._ip_by_vm.clear()
        self._vm_by_ip.clear()
        self._taken = [int(self.host_ip)]
        self._cid_by_vm.clear()
        self._vm_by_cid.clear()
        self._cids = []
        conflicts: list[RebuildConflict] = []
        for vm_name, ip, cid in records:
            if ip is not None and ip != "":
                try:
                    addr = _as_ip(ip)
                except ValidationError:
                    conflicts.append(RebuildConflict(vm_name, "ip", str(ip), "not an IPv4 address"))
                else:
                    reason = self._why_unusable(vm_name, addr)
                    if reason:
                        conflicts.append(RebuildConflict(vm_name, "ip", str(addr), reason))
                    else:
                        self._take_ip(vm_name, addr)
            if cid is not None:
                if not FIRST_CID <= cid <= MAX_CID:
                    conflicts.append(RebuildConflict(vm_name, "cid", str(cid), "reserved CID"))
                elif vm_name in self._cid_by_vm:
                    conflicts.append(RebuildConflict(vm_name, "cid", str(cid), "duplicate record"))
                elif cid in self._vm_by_cid:
                    owner = self._vm_by_cid[cid]
                    conflicts.append(
                        RebuildConflict(vm_name, "cid", str(cid), f"already held by {owner}")
                    )
                else:
                    self._take_cid(vm_name, cid)
        return conflicts

    def _why_unusable(self, vm_name: str, addr: IPv4Address) -> str:
        if not self.is_assignable(addr):
            return f"not an assignable address of {self.subnet} (host {self.host_ip})"
        owner = self._vm_by_ip.get(addr)
        if owner is not None and owner != vm_name:
            return f"already held by {owner}"
        if vm_name in self._ip_by_vm and self._ip_by_vm[vm_name] != addr:
            return "duplicate record"
        return ""

    # -- IPs ----------------------------------------------------------------

    def allocate_ip(self, vm_name: str, preferred: IPLike | None = None) -> IPv4Address:
        """The VM's address: its current one, else ``preferred``, else the lowest free one.

        Raises ``ValidationError`` for an unusable ``preferred`` address,
        ``ConflictError`` if another VM holds it, ``AddressPoolExhausted`` when
        no address is left.
        """
        current = self._ip_by_vm.get(vm_name)
        if preferred is not None:
            want = _as_ip(preferred, "ip")
            if current is not None and current != want:
                raise ConflictError(
                    f"VM {vm_name} already holds {current}; release it before asking for {want}",
                    vm=vm_name,
                    ip=str(current),
                )
            if current == want:
                return want
            if not self.is_assignable(want):
                raise ValidationError(
                    f"{want} is not an assignable address of {self.subnet} "
                    f"(network, broadcast and host address {self.host_ip} are reserved)",
                    field="ip",
                )
            owner = self._vm_by_ip.get(want)
            if owner is not None:
                raise ConflictError(f"{want} is already held by VM {owner}", ip=str(want))
            self._take_ip(vm_name, want)
            return want
        if current is not None:
            return current
        addr = self._lowest_free_ip()
        self._take_ip(vm_name, addr)
        return addr

    def _lowest_free_ip(self) -> IPv4Address:
        # self._taken is sorted; the first gap at or after self._first is the answer.
        candidate = self._first
        start = bisect.bisect_left(self._taken, candidate)
        for taken in self._taken[start:]:
            if taken > candidate:
                break
            candidate = taken + 1
        if candidate > self._last:
            raise AddressPoolExhausted(
                f"no free IP address left in {self.subnet}: all {self.capacity} addresses "
                "are held by VMs; destroy a VM or configure a larger VOLANT_SUBNET",
                subnet=str(self.subnet),
                capacity=self.capacity,
            )
        return IPv4Address(candidate)

    def _take_ip(self, vm_name: str, addr: IPv4Address) -> None:
        self._ip_by_vm[vm_name] = addr
        self._vm_by_ip[addr] = vm_name
        bisect.insort(self._taken, int(addr))

    def release_ip(self, vm_name: str) -> IPv4Address | None:
        addr = self._ip_by_vm.pop(vm_name, None)
        if addr is not None:
            del self._vm_by_ip[addr]
            self._taken.pop(bisect.bisect_left(self._taken, int(addr)))
        return addr

    # -- CIDs ---------------------------------------------------------------

    def allocate_cid(self, vm_name: str) -> int:
        """The VM's vsock CID: its current one, else the lowest unused from 3 upward."""
        current = self._cid_by_vm.get(vm_name)
        if current is not None:
            return current
        candidate = FIRST_CID
        for taken in self._cids:
            if taken > candidate:
                break
            candidate = taken + 1
        if candidate > MAX_CID:  # pragma: no cover - needs four billion VMs
            raise ConflictError("no vsock CID left")
        self._take_cid(vm_name, candidate)
        return candidate

    def _take_cid(self, vm_name: str, cid: int) -> None:
        self._cid_by_vm[vm_name] = cid
        self._vm_by_cid[cid] = vm_name
        bisect.insort(self._cids, cid)

    def release_cid(self, vm_name: str) -> int | None:
        cid = self._cid_by_vm.pop(vm_name, None)
        if cid is not None:
            del self._vm_by_cid[cid]
            self._cids.pop(bisect.bisect_left(self._cids, cid))
        return cid

    # -- both -----------------------------------------------------------------

    def release(self, vm_name: str) -> None:
        """Forget everything ``vm_name`` holds (on destroy). Unknown names are fine."""
        self.release_ip(vm_name)
        self.release_cid(vm_name)
