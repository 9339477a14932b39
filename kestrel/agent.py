"""The agent root: wires the reaper, HTTP API, manifest, workload and health actors.

Order matters for boot time: the API listens first (volantd polls /healthz), the
manifest is decoded or fetched next, then the workload starts. A missing manifest
or a broken workload never stops the API.

Each actor is a thread (the API's are started by the server itself). Under TCG the
cost of booting is dominated by code the interpreter runs for the first time, so
nothing before the API listens imports more than the interpreter already has
(``_socket``, ``_thread``); ``threading``, ``signal``, ``subprocess`` and ``json``
come after, while the API already answers.
"""

from __future__ import annotations

import _socket
import _thread
import os
import time

from kestrel.api import AgentApi
from kestrel.children import ChildReaper
from kestrel.console import Timeline, echo
from kestrel.httpserver import HttpServer
from kestrel.latch import Latch
from kestrel.logring import LogRing
from kestrel.seed import SeedMount

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions and constants, typed
    from collections.abc import Callable
    from typing import Any

    from kestrel.config import AgentConfig
    from kestrel.dhcp import DhcpClient
    from kestrel.health import HealthMonitor
    from kestrel.powerbutton import PowerButton
    from kestrel.workload import Workload
else:
    import _signal  # what signal wraps in enums, already loaded by the interpreter

VSOCK_PORT = 8080
SHUTDOWN_SIGNALS: dict[int, str] = {_signal.SIGTERM: "SIGTERM", _signal.SIGINT: "SIGINT"}
#: Between the 202 of POST /v1/system/shutdown and stopping: the answer reaches the caller.
SHUTDOWN_GRACE = 0.05


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        timeline: Timeline | None = None,
        dhcp_device: str | None = None,
        late_modules: list[str] | None = None,
    ) -> None:
        self.config = config
        self.dhcp_device = dhcp_device
        self.late_modules = late_modules or []
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
        # The seed is mounted only once its filesystem modules are in (see pid1.SEED_MODULES).
        self.modules_loaded = Latch()
        self.seed = SeedMount(config, modules_loaded=self.modules_loaded)
        self.server = HttpServer(AgentApi(self).handle)
        self._stop = Latch()
        self._lock = _thread.allocate_lock()
        self._stopping = False
        self._dhcp: DhcpClient | None = None
        self._power_button: PowerButton | None = None

    @property
    def port(self) -> int:
        return self.server.bound_port()

    def request_shutdown(self, reason: str) -> None:
        if self._stop.is_set():
            return
        self.shutdown_reason = reason
        echo(f"kestrel: shutdown requested ({reason})")
        self._stop.set()

    def _spawn(self, target: Callable[[], object], name: str) -> None:
        """Run an actor in a daemon thread; a crash is reported, never silent."""
        import threading

        def body() -> None:
            try:
                target()
            except Exception as error:
                echo(f"kestrel: task {name} crashed: {error!r}")

        threading.Thread(target=body, name=name, daemon=True).start()

    def start(self) -> None:
        """Everything up to a listening API, then the actors and the manifest in the background."""
        self._install_signal_handlers()
        self.server.listen_tcp(self.config.listen_host, self.config.listen_port)
        if self.config.vsock:
            self._listen_vsock()
        self.timeline.mark("api")
        echo(f"kestrel: listening on {self.config.listen_host}:{self.port}")
        echo("kestrel: ready")
        echo("VOLANT_BOOT_OK")
        # From here on the API answers while the rest is imported and started; the
        # workload first, as it is what the VM is for.
        self.reaper.start()
        self._spawn(self._manifest_then_workload, "manifest")
        if self.late_modules:
            self._spawn(self._load_late_modules, "modules")
        else:
            self.modules_loaded.set()
        if self.dhcp_device is not None:
            self._start_dhcp(self.dhcp_device)
        if self.config.pid1 and self.config.debug_shell:
            from kestrel.debug_shell import DebugShell

            shell = DebugShell(self.reaper, os.path.join(self.config.dev, "ttyS0"))
            self._spawn(shell.run, "debug-shell")
        if self.config.pid1:
            from kestrel.powerbutton import PowerButton

            buttons = PowerButton.find(self.config.dev)
            if buttons:
                self._power_button = PowerButton(buttons, self.request_shutdown)
                self._spawn(self._power_button.run, "power-button")

    def _load_late_modules(self) -> None:
        from kestrel.pid1 import load_module_list, report_module_failures

        try:
            report_module_failures(load_module_list(self.late_modules))
        finally:
            self.modules_loaded.set()

    def _install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT request a shutdown (handlers run in the main thread)."""

        def handler(signum: int, _frame: object) -> None:
            self.request_shutdown(SHUTDOWN_SIGNALS.get(signum, str(signum)))

        for sig in SHUTDOWN_SIGNALS:
            try:  # noqa: SIM105 -- contextlib is not imported before the API listens
                _signal.signal(sig, handler)
            except ValueError:
                pass  # not the main thread (an embedded agent): no signal handling

    def _start_dhcp(self, device: str) -> None:
        from kestrel.dhcp import DhcpClient, find_busybox

        busybox = find_busybox()
        if busybox is None:
            echo(f"kestrel: ip= asks for DHCP on {device} but there is no busybox udhcpc")
            return
        self._dhcp = DhcpClient(self.reaper, device, busybox, "/run", echo=echo)
        self._spawn(self._dhcp.run, "dhcp")

    def _listen_vsock(self) -> None:
        family = getattr(_socket, "AF_VSOCK", None)
        if family is None:
            return
        try:
            sock = _socket.socket(family, _socket.SOCK_STREAM)
        except OSError:
            return
        try:
            sock.bind((_socket.VMADDR_CID_ANY, VSOCK_PORT))
            sock.listen(64)
        except OSError:
            sock.close()
            return
        self.server.listen_socket(sock)
        echo(f"kestrel: listening on vsock port {VSOCK_PORT}")

    def _manifest_then_workload(self) -> None:
        from kestrel.manifest_source import ManifestUnavailable, fetch_manifest, local_manifest

        try:
            loaded = local_manifest(self.config.env_manifest, self.config.cmdline)
            if loaded is None:
                loaded = fetch_manifest(self.config.cmdline, log=echo)
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
        if self._stop.is_set():
            return
        self.manifest = loaded.manifest
        self.manifest_source = loaded.source
        echo(f"kestrel: manifest {loaded.manifest.get('name')} from {loaded.source}")
        self.start_workload(loaded.manifest)

    def start_workload(self, manifest: dict[str, Any]) -> None:
        from kestrel.health import HealthMonitor
        from kestrel.workload import Workload, WorkloadSpec

        spec = WorkloadSpec.from_manifest(manifest)
        if spec is None:
            self.manifest_error = "manifest has no workload.entrypoint"
            echo(f"kestrel: {self.manifest_error}")
            self._print_timeline()
            return
        workload = Workload(
            spec,
            self.reaper,
            self.ring,
            echo,
            backoff_initial=self.config.backoff_initial,
            backoff_max=self.config.backoff_max,
            stop_timeout=self.config.stop_timeout,
        )
        check = manifest.get("health_check") or {}
        health = HealthMonitor(
            workload,
            check.get("endpoint") or None,
            check.get("timeout_ms") or None,
            on_first_healthy=self._on_healthy,
        )
        with self._lock:
            if self._stopping:
                return  # stop() already ran: no workload after it
            self.workload = workload
            self.health = health
        self.timeline.mark("workload_started")
        self._spawn(workload.run, "workload")
        self._spawn(health.run, "health")

    def _on_healthy(self) -> None:
        self.timeline.mark("workload_healthy")
        echo("kestrel: workload healthy")
        self._print_timeline()

    def _print_timeline(self) -> None:
        with self._lock:
            if self.timeline.printed:
                return
            self.timeline.printed = True
        echo(self.timeline.line())

    def wait_stopped(self) -> None:
        """Block until a shutdown is requested (signal handlers run meanwhile)."""
        self._stop.wait()
        time.sleep(SHUTDOWN_GRACE)  # let the 202 reach the caller before stopping

    def stop(self) -> None:
        """Stop the workload (TERM, then KILL), close the listeners, end the actors."""
        with self._lock:
            self._stopping = True
            workload, health = self.workload, self.health
        if workload is not None:
            code = workload.stop()
            echo(f"kestrel: workload stopped ({code})")
        if health is not None:
            health.stop()
        self.server.close()
        if self._dhcp is not None:
            self._dhcp.stop()
        if self._power_button is not None:
            self._power_button.stop()
        self.reaper.stop()

    def run(self) -> None:
        self.start()
        self.wait_stopped()
        self.stop()
