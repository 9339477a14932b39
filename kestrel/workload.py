"""The workload actor: start ``workload.entrypoint``, restart it with backoff, stop it.

One asyncio task owns the process. Its stdout/stderr are read line by line into
the log ring and echoed to the console. Exit statuses arrive from the ChildReaper
(never from a waitpid of our own, which could race with the PID-1 reaper).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kestrel.children import ChildReaper
from kestrel.logring import LogRing

MAX_LINE = 16 * 1024
STABLE_AFTER = 30.0  # a run this long resets the backoff
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class WorkloadSpec:
    entrypoint: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    base_url: str = "http://127.0.0.1:8080"

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> WorkloadSpec | None:
        workload = manifest.get("workload") or {}
        entrypoint = [str(part) for part in workload.get("entrypoint") or []]
        if not entrypoint or not entrypoint[0]:
            return None
        env = {str(k): str(v) for k, v in (workload.get("env") or {}).items()}
        return cls(
            entrypoint=entrypoint,
            env=env,
            workdir=workload.get("workdir") or None,
            base_url=str(workload.get("base_url") or "http://127.0.0.1:8080"),
        )


def workload_environment(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("KESTREL_") and k != "VOLANT_MANIFEST"}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root")
    # Output goes to a pipe; without this a Python workload's prints sit in a buffer.
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


class _LineReader(asyncio.Protocol):
    """Split a pipe into lines for the ring; long lines are cut, not buffered forever."""

    def __init__(self, stream: str, sink: Callable[[str, str], None]) -> None:
        self.stream = stream
        self.sink = sink
        self.buffer = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self._emit(line)
        while len(self.buffer) > MAX_LINE:
            self._emit(self.buffer[:MAX_LINE])
            self.buffer = self.buffer[MAX_LINE:]

    def _emit(self, raw: bytes) -> None:
        self.sink(self.stream, raw.rstrip(b"\r").decode("utf-8", "replace"))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buffer:
            self._emit(self.buffer)
            self.buffer = b""
        if not self.closed.done():
            self.closed.set_result(None)


class Workload:
    def __init__(
        self,
        spec: WorkloadSpec,
        reaper: ChildReaper,
        ring: LogRing,
        echo: Callable[[str], None],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.spec = spec
        self.reaper = reaper
        self.ring = ring
        self.echo = echo
        self.backoff_initial = max(backoff_initial, 0.01)
        self.backoff_max = max(backoff_max, self.backoff_initial)
        self.stop_timeout = stop_timeout
        self.state = "pending"
        self.pid: int | None = None
        self.restarts = 0
        self.starts = 0
        self.last_exit: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.started_monotonic: float | None = None
        self._stopping = asyncio.Event()
        self._exit: asyncio.Future[int] | None = None

    def status(self) -> dict[str, Any]:
        uptime = None
        if self.state == "running" and self.started_monotonic is not None:
            uptime = round(time.monotonic() - self.started_monotonic, 3)
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "uptime_seconds": uptime,
            "entrypoint": self.spec.entrypoint,
        }

    def _line(self, stream: str, line: str) -> None:
        self.ring.append(stream, line)
        self.echo(line)

    async def _start(self) -> list[asyncio.Future[None]]:
        import subprocess

        loop = asyncio.get_running_loop()
        process, self._exit = self.reaper.spawn(
            self.spec.entrypoint,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=workload_environment(dict(os.environ), self.spec.env),
            cwd=self.spec.workdir,
            process_group=0,
            close_fds=True,
        )
        self.pid = process.pid
        self.starts += 1
        self.started_monotonic = time.monotonic()
        self.state = "running"
        readers: list[asyncio.Future[None]] = []
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            assert pipe is not None
            reader = _LineReader(name, self._line)
            await loop.connect_read_pipe(lambda r=reader: r, pipe)  # type: ignore[misc]
            readers.append(reader.closed)
        return readers

    async def run(self) -> None:
        """Keep the workload running until stop() is called."""
        delay = self.backoff_initial
        while not self._stopping.is_set():
            self.state = "starting"
            readers: list[asyncio.Future[None]] = []
            try:
                readers = await self._start()
            except (OSError, ValueError) as exc:
                self.state = "failed"
                self.pid = None
                self.last_error = f"cannot start {self.spec.entrypoint[0]}: {exc}"
                self.echo(f"kestrel: {self.last_error}")
            else:
                assert self._exit is not None
                code = await asyncio.shield(self._exit)
                ran_for = time.monotonic() - (self.started_monotonic or time.monotonic())
                self._kill_group(signal.SIGKILL)
                # Let the pipes drain so the last lines of a crash reach the ring.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*readers), 1.0)
                self.last_exit = {"code": code, "at": time.time(), "ran_seconds": round(ran_for, 3)}
                self.pid = None
                self.state = "exited"
                if not self._stopping.is_set():
                    self.echo(f"kestrel: workload exited with {code}, restarting in {delay:.1f}s")
                if ran_for >= STABLE_AFTER:
                    delay = self.backoff_initial
            if self._stopping.is_set():
                break
            self.state = "backoff"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                break
            self.restarts += 1
            delay = min(delay * 2, self.backoff_max)
        self.state = "stopped"

    def _kill_group(self, sig: int) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self) -> int | None:
        """SIGTERM to the process group, then SIGKILL after stop_timeout."""
        self._stopping.set()
        if self.pid is None or self._exit is None or self._exit.done():
            return None
        self.state = "stopping"
        self._kill_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit), self.stop_timeout)
        except TimeoutError:
            self._kill_group(signal.SIGKILL)
            return await asyncio.shield(self._exit)
