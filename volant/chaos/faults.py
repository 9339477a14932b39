"""The faults: each a small class whose ``inject`` does one thing and logs it in the report.

Faults draw every choice (which VM, how long, which corruption) from the run's single
``random.Random(seed)``, so a seed replays the same schedule against the same setup.
Faults that touch the host (processes, links, files) need the ``own`` target.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import trio

from volant.chaos.context import PLUGIN, ChaosContext
from volant.chaos.qemu_vm import MAX_STOP_SECONDS as MAX_QEMU_STOP_SECONDS
from volant.chaos.target import OwnTarget, pid_alive
from volant.network import links

T = TypeVar("T")

CORRUPTIBLE = ("vms/*/state.json", "plugins/*.json", "deployments/*.toml")


class Fault:
    kind: ClassVar[str] = ""
    #: Needs process/host control (the ``own`` target), not only the API.
    needs_host: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, ctx: ChaosContext) -> None:
        self.ctx = ctx

    @property
    def own(self) -> OwnTarget:
        assert isinstance(self.ctx.target, OwnTarget)
        return self.ctx.target

    async def inject(self) -> None:
        raise NotImplementedError

    def draw(self) -> float:
        """One number from the run's generator, drawn whether or not it ends up used.

        Faults draw their numbers before looking at what is running, so the generator
        advances identically in every run of a seed, whatever the host state.
        """
        return self.ctx.rng.random()

    async def _running_vms(self) -> list[dict[str, Any]]:
        vms = await self.ctx.get_json("/api/v1/vms")
        if not isinstance(vms, list):
            return []
        return [vm for vm in vms if vm.get("status") == "running" and vm.get("pid")]


class KillDaemon(Fault):
    """kill -9 volantd, optionally corrupt a state file while it is down, restart it."""

    kind = "kill_volantd"
    description = "SIGKILL volantd (no cleanup), then start it again"

    def __init__(self, ctx: ChaosContext, corrupt: CorruptStateFile | None = None,
                 corrupt_probability: float = 0.0) -> None:
        super().__init__(ctx)
        self.corrupt = corrupt
        self.corrupt_probability = corrupt_probability

    async def inject(self) -> None:
        qemu = self.ctx.qemu
        if qemu is not None:
            await qemu.before_kill(self.ctx)
        self.ctx.daemon_down = True
        pid = await trio.to_thread.run_sync(self.own.kill9)
        self.ctx.report.fault(self.kind, f"volantd pid {pid}")
        if qemu is not None:
            qemu.after_kill(self.own.state_dir)
        if self.corrupt is not None and self.ctx.rng.random() < self.corrupt_probability:
            await self.corrupt.inject()
        await trio.sleep(self.ctx.rng.uniform(0.0, 0.5))
        if qemu is not None:
            qemu.before_restart(self.own.netns)
        started = trio.current_time()
        try:
            await trio.to_thread.run_sync(self.own.start_daemon)
        except RuntimeError as exc:
            self.ctx.report.violation("daemon_restarts", str(exc)[-2000:])
            return
        self.ctx.daemon_down = False
        self.ctx.report.note(f"volantd back after {trio.current_time() - started:.2f}s")


class CorruptStateFile(Fault):
    """Truncate or corrupt a state file. Only while volantd is down (see docs/chaos.md)."""

    kind = "corrupt_state_file"
    description = "truncate or corrupt vms/*/state.json, plugins/*.json or deployments/*.toml"
    MODES = ("empty", "truncate", "garbage")

    async def inject(self) -> None:
        assert self.ctx.daemon_down, "corrupting under a live daemon tests nothing"
        state_dir = self.own.state_dir
        assert state_dir is not None
        which, how, where = self.draw(), self.draw(), self.draw()
        candidates = sorted(p for pattern in CORRUPTIBLE for p in state_dir.glob(pattern))
        if not candidates:
            return
        path = pick(candidates, which)
        mode = pick(list(self.MODES), how)
        raw = path.read_bytes()
        if mode == "empty":
            damaged = b""
        elif mode == "truncate":
            damaged = raw[: len(raw) // 2]
        else:
            cut = int(where * max(1, len(raw)))
            damaged = raw[:cut] + b"\xff\x00{[\"" + raw[cut + 8:]
        path.write_bytes(damaged)
        relpath = str(path.relative_to(state_dir))
        self.ctx.corrupted.append(relpath)
        if self.ctx.qemu is not None:
            self.ctx.qemu.corrupted(relpath)
        self.ctx.report.fault(self.kind, relpath, mode=mode, size_before=len(raw),
                              size_after=len(damaged))


class KillVMM(Fault):
    kind = "sigkill_vmm"
    description = "SIGKILL a random running VMM"

    async def inject(self) -> None:
        which = self.draw()
        vms = await self._running_vms()
        if not vms:
            return
        vm = pick(vms, which)
        if not await _signal_vmm(self.ctx, vm, signal.SIGKILL):
            return
        if self.ctx.qemu is not None and vm["name"] == self.ctx.qemu.name:
            self.ctx.qemu.vmm_killed(vm)
        self.ctx.report.fault(self.kind, vm["name"], pid=vm["pid"])


class KillQemuVMM(Fault):
    """SIGKILL the QEMU VM's VMM (running or still booting): volantd must restart it."""

    kind = "sigkill_qemu_vmm"
    description = "SIGKILL the real QEMU VM's VMM"

    async def inject(self) -> None:
        qemu = self.ctx.qemu
        assert qemu is not None
        vm = await self.ctx.get_json(f"/api/v1/vms/{qemu.name}")
        if not isinstance(vm, dict) or vm.get("status") not in ("running", "starting"):
            return
        if not vm.get("pid") or not await _signal_vmm(self.ctx, vm, signal.SIGKILL):
            return
        qemu.vmm_killed(vm)
        self.ctx.report.fault(self.kind, vm["name"], pid=vm["pid"], status=vm["status"])


class StopContVMM(Fault):
    kind = "sigstop_vmm"
    description = "SIGSTOP a random VMM, SIGCONT it 0.5-3 s later (the QEMU VM: at most 1 s)"

    async def inject(self) -> None:
        which, hold = self.draw(), round(0.5 + 2.5 * self.draw(), 2)
        vms = await self._running_vms()
        if not vms:
            return
        vm = pick(vms, which)
        if self.ctx.qemu is not None and vm["name"] == self.ctx.qemu.name:
            hold = min(hold, MAX_QEMU_STOP_SECONDS)  # freeze a real guest only briefly
        if not await _signal_vmm(self.ctx, vm, signal.SIGSTOP):
            return
        self.ctx.report.fault(self.kind, vm["name"], pid=vm["pid"], seconds=hold)
        await trio.sleep(hold)
        await _signal_vmm(self.ctx, vm, signal.SIGCONT)


def pick(items: list[T], fraction: float) -> T:
    """The item at ``fraction`` (0 <= fraction < 1) of the way through ``items``."""
    return items[min(len(items) - 1, int(fraction * len(items)))]


async def _signal_vmm(ctx: ChaosContext, vm: dict[str, Any], signum: int) -> bool:
    """Signal the VM's VMM, but only if the pid still carries its marker (never a stranger)."""
    from volant.runtime.base import read_marker

    pid = int(vm["pid"])
    expected = f"{ctx.target.instance_id}:{vm['name']}"
    if read_marker(pid) != expected or not pid_alive(pid):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


class DeleteTap(Fault):
    kind = "delete_tap"
    description = "delete a random VM's tap"

    async def inject(self) -> None:
        which = self.draw()
        vms = [vm for vm in await self._running_vms() if vm.get("tap")]
        if not vms:
            return
        vm = pick(vms, which)
        deleted = await trio.to_thread.run_sync(links.delete_link, vm["tap"], self.own.netns)
        self.ctx.report.fault(self.kind, vm["tap"], vm=vm["name"], deleted=deleted)


class DeleteBridge(Fault):
    kind = "delete_bridge"
    description = "delete volantd's bridge"

    async def inject(self) -> None:
        bridge = self.own.bridge
        assert bridge is not None
        deleted = await trio.to_thread.run_sync(links.delete_link, bridge, self.own.netns)
        self.ctx.report.fault(self.kind, bridge, deleted=deleted)


class FillDisk(Fault):
    kind = "fill_state_fs"
    description = "fill the state tmpfs with one big file for 1-4 s, then remove it"

    def __init__(self, ctx: ChaosContext) -> None:
        super().__init__(ctx)
        self.counter = 0

    async def inject(self) -> None:
        state_dir = self.own.state_dir
        assert state_dir is not None
        filler = state_dir / "chaos-filler.bin"
        hold = round(self.ctx.rng.uniform(1.0, 4.0), 2)
        self.ctx.disk_full = True
        written = await trio.to_thread.run_sync(_fill, filler)
        record = self.ctx.report.fault(self.kind, str(state_dir), bytes=written, seconds=hold)
        with trio.move_on_after(hold):
            # A write while full: 507 (or success, if it fits the last blocks), never a 500.
            self.counter += 1
            name = f"diskfull-{self.counter}"
            created = await self.ctx.api("POST", "/api/v1/vms", json={
                "name": name, "plugin": PLUGIN, "restart_policy": {"name": "no"}})
            record.details["create_while_full"] = None if created is None else created.status_code
            await trio.sleep_forever()
        filler.unlink(missing_ok=True)
        if created is not None and created.status_code == 201:
            await self.ctx.api("DELETE", f"/api/v1/vms/{name}", timeout=40)
        filler.unlink(missing_ok=True)
        await trio.sleep(0.5)  # requests answered while full are still in flight
        self.ctx.disk_full = False


def _fill(path: Path) -> int:
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as fh:
        while True:
            try:
                written += fh.write(chunk)
                fh.flush()
            except OSError:
                break
        with contextlib.suppress(OSError):  # the last partial chunk: fill every block
            fh.write(b"\0" * 4096 * 8)
    return written


class FloodAPI(Fault):
    kind = "flood_api"
    needs_host = False
    description = "50 concurrent clients hammer read routes for 2 s"
    CLIENTS = 50
    SECONDS = 2.0
    PATHS = ("/api/v1/vms", "/healthz", "/api/v1/deployments", "/api/v1/plugins")

    async def inject(self) -> None:
        counts: dict[str, int] = {}
        self.ctx.report.fault(self.kind, "api", clients=self.CLIENTS, seconds=self.SECONDS)

        async def client(index: int) -> None:
            path = self.PATHS[index % len(self.PATHS)]
            with trio.move_on_after(self.SECONDS):
                async with self.ctx.target.client(timeout=10.0) as http:
                    while True:
                        try:
                            response = await http.get(path)
                        except httpx.HTTPError as exc:
                            key = type(exc).__name__
                            counts[key] = counts.get(key, 0) + 1
                            await trio.sleep(0.05)
                            continue
                        self.ctx.record("GET", path, response)
                        key = str(response.status_code)
                        counts[key] = counts.get(key, 0) + 1

        async with trio.open_nursery() as nursery:
            for index in range(self.CLIENTS):
                nursery.start_soon(client, index)
        self.ctx.report.faults[-1].details["responses"] = counts


class StallSSE(Fault):
    kind = "stall_sse"
    needs_host = False
    description = "open 5 SSE streams and never read them for 2-6 s"
    STREAMS = 5

    async def inject(self) -> None:
        hold = round(self.ctx.rng.uniform(2.0, 6.0), 2)
        self.ctx.report.fault(self.kind, "sse", streams=self.STREAMS, seconds=hold)

        async def stalled() -> None:
            try:
                async with (
                    self.ctx.target.client(timeout=10.0) as http,
                    http.stream("GET", "/api/v1/events/vms",
                                headers={"Last-Event-ID": "0"}) as response,
                ):
                    self.ctx.record("GET", "/api/v1/events/vms (stalled)", response)
                    await trio.sleep(hold)  # headers read; the body is never consumed
            except httpx.HTTPError:
                pass

        async with trio.open_nursery() as nursery:
            for _ in range(self.STREAMS):
                nursery.start_soon(stalled)


#: Faults between daemon kills, by scenario name.
BETWEEN_KILLS: dict[str, type[Fault]] = {
    "vmm-kill": KillVMM,
    "vmm-stop": StopContVMM,
    "tap-delete": DeleteTap,
    "bridge-delete": DeleteBridge,
    "disk-full": FillDisk,
    "api-flood": FloodAPI,
    "sse-stall": StallSSE,
}
