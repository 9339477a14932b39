"""The agent root: wires the reaper, HTTP API, manifest, workload and health actors.

Order matters for boot time: the API listens first (volantd polls /healthz), the
manifest is decoded or fetched next, then the workload starts. A missing manifest
or a broken workload never stops the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from typing import Any

from kestrel.api import AgentApi
from kestrel.children import ChildReaper
from kestrel.config import AgentConfig
from kestrel.console import Timeline, echo
from kestrel.health import HealthMonitor
from kestrel.httpserver import HttpServer
from kestrel.logring import LogRing
from kestrel.seed import SeedMount
from kestrel.workload import Workload, WorkloadSpec

VSOCK_PORT = 8080


class Agent:
    def __init__(
        self, config: AgentConfig, timeline: Timeline | None = None, dhcp_device: str | None = None
    ) -> None:
        self.config = config
        self.dhcp_device = dhcp_device
        self.timeline = timeline or Timeline(config.proc)
        self.ring = LogRing(config.log_lines)
        self.reaper = ChildReaper(reap_all=config.pid1 or config.subreaper)
        self.manifest: dict[str, Any] | None = None
        self.manifest_source: str | None = None
        self.manifest_error: str | None = None
        self.workload: Workload | None = None
        self.health: HealthMonitor | None = None
        self.started = time.monotonic()
        self.shutdown_reason: str | None = None
        self.seed = SeedMount(config)
        self.server = HttpServer(AgentApi(self).handle)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        return self.server.bound_port()

    def request_shutdown(self, reason: str) -> None:
        if self._stop is None or self._stop.is_set():
            return
        self.shutdown_reason = reason
        echo(f"kestrel: shutdown requested ({reason})")
        # Let the 202 reach the caller before the workload is stopped.
        asyncio.get_running_loop().call_later(0.05, self._stop.set)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            echo(f"kestrel: task {task.get_name()} crashed: {error!r}")

    async def start(self) -> None:
        """Everything up to a listening API; the manifest and workload follow in the background."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_shutdown, sig.name)
        self._spawn(self.reaper.run(), "reaper")
        if self.dhcp_device is not None:
            self._start_dhcp(self.dhcp_device)
        if self.config.pid1 and self.config.debug_shell:
            from kestrel.debug_shell import DebugShell

            self._spawn(DebugShell(self.reaper, self.config.dev / "ttyS0").run(), "debug-shell")
        if self.config.pid1:
            from kestrel.powerbutton import PowerButton

            buttons = PowerButton.find(self.config.dev)
            if buttons:
                self._spawn(PowerButton(buttons, self.request_shutdown).run(), "power-button")
        await self.server.listen_tcp(self.config.listen_host, self.config.listen_port)
        if self.config.vsock:
            await self._listen_vsock()
        self.timeline.mark("api")
        echo(f"kestrel: listening on {self.config.listen_host}:{self.port}")
        echo("kestrel: ready")
        echo("VOLANT_BOOT_OK")
        self._spawn(self._manifest_then_workload(), "manifest")

    def _start_dhcp(self, device: str) -> None:
        from pathlib import Path

        from kestrel.dhcp import DhcpClient, find_busybox

        busybox = find_busybox()
        if busybox is None:
            echo(f"kestrel: ip= asks for DHCP on {device} but there is no busybox udhcpc")
            return
        client = DhcpClient(self.reaper, device, busybox, Path("/run"), echo=echo)
        self._spawn(client.run(), "dhcp")

    async def _listen_vsock(self) -> None:
        family = getattr(socket, "AF_VSOCK", None)
        if family is None:
            return
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((socket.VMADDR_CID_ANY, VSOCK_PORT))
            sock.listen(64)
            sock.setblocking(False)
            await self.server.listen_socket(sock)
            echo(f"kestrel: listening on vsock port {VSOCK_PORT}")
        except OSError:
            pass

    async def _manifest_then_workload(self) -> None:
        from kestrel.manifest_source import ManifestUnavailable, fetch_manifest, local_manifest

        try:
            loaded = local_manifest(self.config.env_manifest, self.config.cmdline)
            if loaded is None:
                loaded = await fetch_manifest(self.config.cmdline, log=echo)
        except ManifestUnavailable as exc:
            self.manifest_error = str(exc)
            echo(f"kestrel: {exc}")
            self._print_timeline()
            return
        except Exception as exc:  # ManifestDecodeError and friends
            self.manifest_error = f"manifest unusable: {exc}"
            echo(f"kestrel: {self.manifest_error}")
            self._print_timeline()
            return
        self.manifest = loaded.manifest
        self.manifest_source = loaded.source
        echo(f"kestrel: manifest {loaded.manifest.get('name')} from {loaded.source}")
        self.start_workload(loaded.manifest)

    def start_workload(self, manifest: dict[str, Any]) -> None:
        spec = WorkloadSpec.from_manifest(manifest)
        if spec is None:
            self.manifest_error = "manifest has no workload.entrypoint"
            echo(f"kestrel: {self.manifest_error}")
            self._print_timeline()
            return
        self.workload = Workload(
            spec,
            self.reaper,
            self.ring,
            echo,
            backoff_initial=self.config.backoff_initial,
            backoff_max=self.config.backoff_max,
            stop_timeout=self.config.stop_timeout,
        )
        check = manifest.get("health_check") or {}
        self.health = HealthMonitor(
            self.workload,
            check.get("endpoint") or None,
            check.get("timeout_ms") or None,
            on_first_healthy=self._on_healthy,
        )
        self.timeline.mark("workload_started")
        self._spawn(self.workload.run(), "workload")
        self._spawn(self.health.run(), "health")

    def _on_healthy(self) -> None:
        self.timeline.mark("workload_healthy")
        echo("kestrel: workload healthy")
        self._print_timeline()

    def _print_timeline(self) -> None:
        if not self.timeline.printed:
            self.timeline.printed = True
            echo(self.timeline.line())

    async def wait_stopped(self) -> None:
        assert self._stop is not None
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop the workload (TERM, then KILL), close the listeners, cancel the actors."""
        if self.workload is not None:
            code = await self.workload.stop()
            echo(f"kestrel: workload stopped ({code})")
        await self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self) -> None:
        await self.start()
        await self.wait_stopped()
        await self.stop()
