"""The VMM actor: one VMM process — adopted or launched, watched, and stopped.

Last child of a VM's runner (rest_for_one after the tap). It reports to its VM
actor by ``cast`` (never blocking): ``VmmLaunched``/``VmmAdopted`` with the
identity to persist, ``VmmReady`` once the boot marker shows in the console log,
``VmmExited`` when the process ends on its own. Exit is detected through a pidfd,
so it is an event, not a poll, and works for adopted processes too.

A graceful stop (the VM is stopped or destroyed, or the supervisor restarts the
VMM after its tap was lost) climbs the ladder: the guest agent's power-off, the
VMM's own API, SIGTERM, SIGKILL. When volantd itself is stopping, the VMM is
left running for the next volantd to adopt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from volant.actors import Actor, ActorRef
from volant.logging import get_logger
from volant.orchestrator.lifecycle import DaemonLifecycle
from volant.runtime.base import ExitInfo, Launcher, LaunchSpec, VMMHandle, VMMIdentity, stop_ladder

log = get_logger("volant.vmm")

AGENT_PORT = 8080


@attrs.frozen
class VmmLaunched:
    generation: int
    identity: VMMIdentity


@attrs.frozen
class VmmAdopted:
    generation: int
    identity: VMMIdentity


@attrs.frozen
class VmmReady:
    generation: int


@attrs.frozen
class VmmNotReady:
    generation: int
    reason: str


@attrs.frozen
class VmmExited:
    generation: int
    exit: ExitInfo


@attrs.frozen
class StopTimeouts:
    agent: float = 10.0
    powerdown: float = 10.0
    term: float = 5.0
    kill: float = 5.0

    @property
    def total(self) -> float:
        return self.agent + self.powerdown + self.term + self.kill + 5.0


def console_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def wait_for_marker(path: Path, marker: bytes, handle: VMMHandle, offset: int = 0,
                          poll: float = 0.05) -> bool:
    """Tail ``path`` from ``offset`` until ``marker`` appears; False if the process died.

    The console log is appended across boots, so callers pass its size from before
    the launch: an earlier boot's marker must not count.
    """
    carry = b""
    while handle.alive:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            window = carry + chunk
            if marker in window:
                return True
            carry = window[-len(marker):]
        await trio.sleep(poll)
    return False


class VMMActor(Actor[Any]):
    mailbox_size = 8

    def __init__(
        self,
        *,
        vm_name: str,
        vm: ActorRef[Any],
        launcher: Launcher,
        spec_factory: Callable[[], LaunchSpec],
        take_adopted: Callable[[], VMMHandle | None],
        generation: int,
        ready_marker: bytes,
        ready_timeout: float,
        agent_ip: str,
        lifecycle: DaemonLifecycle,
        timeouts: StopTimeouts,
        adopted_booting: bool = False,
    ) -> None:
        self.vm_name = vm_name
        self.vm = vm
        self.launcher = launcher
        self.spec_factory = spec_factory
        self.take_adopted = take_adopted
        self.generation = generation
        self.ready_marker = ready_marker
        self.ready_timeout = ready_timeout
        self.agent_ip = agent_ip
        self.lifecycle = lifecycle
        self.timeouts = timeouts
        self.adopted_booting = adopted_booting
        self.process: VMMHandle | None = None
        self._exited_on_its_own = False
        self._stop_requested_by_parent = False

    def request_stop(self) -> None:
        """A stop from the runner (VM stop/destroy, or a restart after the tap was lost)."""
        if not self._exited_on_its_own:
            self._stop_requested_by_parent = True
        super().request_stop()

    async def on_start(self) -> None:
        adopted = self.take_adopted()
        if adopted is not None:
            self.process = adopted
            self.vm.cast(VmmAdopted(self.generation, adopted.identity))
            if self.adopted_booting:  # adopted before its boot marker: keep waiting for it
                identity = adopted.identity
                self.nursery.start_soon(self._await_ready, Path(identity.console_log),
                                        identity.console_offset)
        else:
            spec = self.spec_factory()
            offset = console_size(spec.console_log)
            self.process = await self.launcher.launch(spec)
            identity = attrs.evolve(self.process.identity, console_offset=offset)
            self.vm.cast(VmmLaunched(self.generation, identity))
            self.nursery.start_soon(self._await_ready, spec.console_log, offset)
        self.nursery.start_soon(self._watch)

    async def handle(self, msg: Any) -> Any:
        raise TypeError(f"unknown message {msg!r}")

    async def _watch(self) -> None:
        assert self.process is not None
        exit_info = await self.process.wait()
        self.launcher.cleanup(self.process.identity)
        if self._stop_requested_by_parent:
            return  # an exit we caused: not the VM's own doing
        self._exited_on_its_own = True
        self.vm.cast(VmmExited(self.generation, exit_info))
        self.stop_self()

    async def _await_ready(self, console_log: Path, offset: int) -> None:
        assert self.process is not None
        with trio.move_on_after(self.ready_timeout):
            if await wait_for_marker(console_log, self.ready_marker, self.process, offset):
                self.vm.cast(VmmReady(self.generation))
            return
        self.vm.cast(VmmNotReady(
            self.generation, f"no boot marker within {self.ready_timeout:.0f}s"))

    async def on_stop(self) -> None:
        handle = self.process
        if handle is None or self._exited_on_its_own or not handle.alive:
            return
        if self.lifecycle.detaching:
            log.info("leaving vmm running for the next volantd", vm=self.vm_name, pid=handle.pid)
            return
        if self.agent_ip:
            await self._agent_poweroff(handle)
        if handle.alive:
            await stop_ladder(self.launcher, handle, powerdown_timeout=self.timeouts.powerdown,
                              term_timeout=self.timeouts.term, kill_timeout=self.timeouts.kill)
        else:
            self.launcher.cleanup(handle.identity)

    async def _agent_poweroff(self, handle: VMMHandle) -> None:
        """Ask kestrel to stop the workload, sync and power off; wait for the VMM to end."""
        url = f"http://{self.agent_ip}:{AGENT_PORT}/v1/system/shutdown"
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                response = await client.post(url)
            if response.status_code >= 300:
                return
        except httpx.HTTPError:
            return
        with trio.move_on_after(self.timeouts.agent):
            await handle.wait()
        if not handle.alive:
            log.info("guest powered off through its agent", vm=self.vm_name)
