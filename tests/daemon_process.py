"""Run a real volantd as a subprocess for integration tests.

Each instance gets its own state/runtime dirs and a free loopback port; the
process is killed by PID in ``stop`` (and on garbage collection) so a failing
test never leaves a daemon behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

VOLANTD = [sys.executable, "-m", "volant.daemon"]

#: Every daemon a test started; tests/conftest.py kills their VMMs at the end of the session.
STARTED: list[VolantdProcess] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class VolantdProcess:
    def __init__(self, base_dir: Path, env: dict[str, str] | None = None,
                 netns: str | None = None) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self.netns = netns
        self.env = {
            **os.environ,
            "VOLANT_API_LISTEN": f"127.0.0.1:{self.port}",
            "VOLANT_STATE_DIR": str(base_dir / "state"),
            "VOLANT_RUNTIME_DIR": str(base_dir / "run"),
            "VOLANT_LOG_FORMAT": "json",
            "VOLANT_HYPERVISOR": "hollow",
            "VOLANT_MANAGE_NETWORK": "false",
            **(env or {}),
        }
        if netns:
            # The daemon's loopback is inside the namespace; reach it through a Unix socket.
            self.socket_path = base_dir / "api.sock"
            self.env["VOLANT_API_UNIX_SOCKET"] = str(self.socket_path)
        self.log_path = base_dir / "volantd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        STARTED.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 30.0) -> VolantdProcess:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        argv = VOLANTD
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *VOLANTD]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_healthy(wait)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"volantd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with self.client(timeout=1.0) as client:
                    if client.get("/healthz").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"volantd not healthy after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def client(self, **kwargs: Any) -> httpx.Client:
        if self.netns:
            kwargs["transport"] = httpx.HTTPTransport(uds=str(self.socket_path))
            return httpx.Client(base_url="http://volantd", timeout=kwargs.pop("timeout", 30.0),
                                **kwargs)
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill9(self) -> None:
        """Simulate a crash of volantd: SIGKILL, no cleanup of any kind."""
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def kill_vmms(self) -> list[int]:
        """Kill (SIGKILL, by pid) every VMM carrying this daemon's marker; returns the pids.

        VMMs outlive volantd by design, so a test's teardown must end them itself.
        """
        from volant.runtime import find_marked_processes, instance_id_for

        state_dir = Path(self.env["VOLANT_STATE_DIR"])
        killed = []
        for proc in find_marked_processes(instance_id_for(state_dir)):
            try:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
            except ProcessLookupError:
                pass
        return killed

    def close(self) -> None:
        """Test teardown: stop volantd, then end every VMM it left (they outlive it)."""
        try:
            self.stop()
        finally:
            self.kill_vmms()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


@contextmanager
def running_daemon(base_dir: Path, env: dict[str, str] | None = None,
                   netns: str | None = None) -> Iterator[VolantdProcess]:
    """A started volantd for the duration of the block; its VMMs are killed afterwards."""
    daemon = VolantdProcess(base_dir, env=env, netns=netns).start()
    try:
        yield daemon
    finally:
        daemon.close()
