"""The Tap actor: one VM's tap device, first child of the VM's runner (rest_for_one).

It creates the tap (own MAC, the bridge's MTU, enslaved, up), and deletes it when
the VM stops. If someone deletes the tap while the VM runs, the actor crashes on
purpose: its supervisor recreates the tap and, per rest_for_one, restarts the
VMM after it — a VMM's file descriptor points at the deleted device, so a new
tap alone would leave the guest without network.
"""

from __future__ import annotations

from typing import Any

import trio

from volant.actors import Actor
from volant.network import links
from volant.network.ipam import derive_tap_mac
from volant.orchestrator.events import EventBus
from volant.orchestrator.hostnet import HostNetwork
from volant.orchestrator.lifecycle import DaemonLifecycle


class TapLost(Exception):
    """The tap disappeared under a running VM."""


class TapActor(Actor[Any]):
    mailbox_size = 8

    def __init__(self, vm_name: str, tap: str, hostnet: HostNetwork, events: EventBus,
                 lifecycle: DaemonLifecycle) -> None:
        self.vm_name = vm_name
        self.tap = tap
        self.hostnet = hostnet
        self.events = events
        self.lifecycle = lifecycle
        self._lost = trio.Event()
        self._bridge_back = trio.Event()

    async def on_start(self) -> None:
        await self._ensure()
        await self.nursery.start(self._guard)

    async def _ensure(self) -> None:
        await trio.to_thread.run_sync(
            lambda: links.create_tap(self.tap, self.hostnet.cfg.bridge,
                                     derive_tap_mac(self.vm_name), self.hostnet.bridge_mtu,
                                     self.hostnet.netns)
        )

    def _bridge_restored(self) -> None:
        self._bridge_back.set()

    async def _guard(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        """Watch for the tap's deletion; the registrations end with this task, whatever ends it."""
        unwatch_link = self.hostnet.watch_link(self.tap, lambda _name: self._lost.set())
        unwatch_bridge = self.hostnet.watch_bridge(self._bridge_restored)
        try:
            # Deleted between creation and registration? Check once after registering.
            if not await trio.to_thread.run_sync(links.link_exists, self.tap,
                                                 self.hostnet.netns):
                self._lost.set()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reenslave_on_bridge_restore)
                await self._lost.wait()
                nursery.cancel_scope.cancel()
        finally:
            unwatch_link()
            unwatch_bridge()
        self.events.publish(
            "VM_NETWORK_REPAIRED", self.vm_name,
            message=f"tap {self.tap} was deleted externally; recreating it and restarting the VMM",
        )
        raise TapLost(f"tap {self.tap} of vm {self.vm_name} was deleted")

    async def handle(self, msg: Any) -> Any:
        raise TypeError(f"unknown message {msg!r}")

    async def _reenslave_on_bridge_restore(self) -> None:
        while True:
            await self._bridge_back.wait()
            self._bridge_back = trio.Event()
            await self._ensure()

    async def on_stop(self) -> None:
        if self.lifecycle.detaching:
            return  # volantd is stopping: the VM (and its tap) keep running
        await trio.to_thread.run_sync(links.delete_link, self.tap, self.hostnet.netns)
