"""The HostNetwork actor: the bridge, its address, NAT and forwarding — ensured and re-ensured.

At start it makes the host match the configuration (so a host reboot, which
loses the bridge, never breaks VM creation). Then it watches netlink: a deleted
bridge or a removed bridge address is restored at once, with an event, and the
tap actors are told so they can re-enslave their taps. Tap actors also receive
the removal of their own link from here, so one netlink socket serves all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
import trio

from volant.actors import Actor
from volant.config import Config
from volant.logging import get_logger
from volant.network import dhcp, links, nat
from volant.network.monitor import AddressRemoved, EventsLost, LinkRemoved, open_monitor
from volant.orchestrator.events import EventBus

log = get_logger("volant.hostnet")

LinkListener = Callable[[str], None]


@attrs.frozen
class EnsureNow:
    reason: str = "requested"


@attrs.frozen
class BridgeState:
    pass


class HostNetwork(Actor[Any]):
    mailbox_size = 64

    def __init__(self, cfg: Config, events: EventBus, netns: str | None = None) -> None:
        self.cfg = cfg
        self.events = events
        self.netns = netns
        net = ipaddress.IPv4Network(cfg.subnet)
        self.host_cidr = f"{cfg.host_ip}/{net.prefixlen}"
        self.bridge_mtu: int | None = None
        self._link_listeners: dict[str, LinkListener] = {}
        self._bridge_listeners: set[Callable[[], None]] = set()
        self.repairs = 0
        #: Set by the VM manager: the DHCP lease of a MAC it knows (dhcp-mode VMs).
        self.lease_lookup: Callable[[str], dhcp.Lease | None] = lambda _mac: None

    @property
    def enabled(self) -> bool:
        return self.cfg.manage_network

    # -- registrations used by tap actors (plain methods: same trio thread) ---------------
    def watch_link(self, name: str, on_removed: LinkListener) -> Callable[[], None]:
        self._link_listeners[name] = on_removed

        def cancel() -> None:
            if self._link_listeners.get(name) is on_removed:
                del self._link_listeners[name]

        return cancel

    def watch_bridge(self, on_restored: Callable[[], None]) -> Callable[[], None]:
        self._bridge_listeners.add(on_restored)
        return lambda: self._bridge_listeners.discard(on_restored)

    # -- lifecycle -------------------------------------------------------------------------
    async def on_start(self) -> None:
        if not self.enabled:
            log.info("host network management disabled")
            return
        await self._ensure("startup")
        await self.nursery.start(self._watch)
        responder = dhcp.Responder(
            server_ip=ipaddress.IPv4Address(self.cfg.host_ip),
            subnet=ipaddress.IPv4Network(self.cfg.subnet),
            lookup=self._lookup_lease,
        )
        self.nursery.start_soon(self._serve_dhcp, responder)

    def _lookup_lease(self, mac: str) -> dhcp.Lease | None:
        return self.lease_lookup(mac)  # late bound: the VM manager sets it after we start

    async def _serve_dhcp(self, responder: dhcp.Responder) -> None:
        """Answer DHCP for dhcp-mode VMs (upstream left that to the user); retry on error."""
        delay = 1.0
        while True:
            try:
                await dhcp.serve(self.cfg.bridge, responder, self.netns)
            except OSError as exc:
                log.warning("dhcp responder stopped; retrying", error=str(exc), delay=delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, EnsureNow):
            return await self._ensure(msg.reason)
        if isinstance(msg, BridgeState):
            return await trio.to_thread.run_sync(links.link_info, self.cfg.bridge, self.netns)
        raise TypeError(f"unknown message {msg!r}")

    async def _ensure(self, reason: str) -> bool:
        info = await trio.to_thread.run_sync(
            links.ensure_bridge, self.cfg.bridge, self.host_cidr, None, self.netns
        )
        self.bridge_mtu = info.mtu
        changed_nat = await trio.to_thread.run_sync(
            lambda: nat.ensure_nat(self.cfg.subnet, self.cfg.bridge, netns=self.netns)
        )
        await trio.to_thread.run_sync(nat.ensure_ip_forward, self.netns)
        if reason != "startup":
            self.repairs += 1
            self.events.publish("NETWORK_REPAIRED", self.cfg.bridge,
                                message=f"restored bridge {self.cfg.bridge}: {reason}")
            for listener in list(self._bridge_listeners):
                try:
                    listener()
                except Exception:  # one broken listener must not take the host network down
                    log.exception("bridge listener failed")
        elif changed_nat:
            log.info("nat rules installed", table=nat.DEFAULT_TABLE)
        return True

    async def _watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        async with open_monitor(self.netns) as stream:
            task_status.started()
            async for event in stream:
                if isinstance(event, LinkRemoved):
                    if event.name == self.cfg.bridge:
                        await self._ensure(f"bridge {event.name} was deleted")
                    listener = self._link_listeners.get(event.name)
                    if listener is not None:
                        try:
                            listener(event.name)
                        except Exception:
                            log.exception("link listener failed", link=event.name)
                elif isinstance(event, AddressRemoved):
                    if event.name == self.cfg.bridge and event.address == self.host_cidr:
                        await self._ensure(f"address {event.address} was removed")
                elif isinstance(event, EventsLost):
                    await self._ensure("netlink events were lost")
