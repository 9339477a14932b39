"""The workload actor: start ``workload.entrypoint``, restart it with backoff, stop it.

One thread owns the process (``run``). Its stdout/stderr are read line by line by
two reader threads into the log ring and echoed to the console. Exit statuses
arrive from the ChildReaper (never from a waitpid of our own, which could race
with the PID-1 reaper).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import time

from kestrel.latch import Latch

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import IO, Any

    from kestrel.children import ChildReaper, ExitStatus
    from kestrel.logring import LogRing

MAX_LINE = 16 * 1024
STABLE_AFTER = 30.0  # a run this long resets the backoff
PIPE_DRAIN_SECONDS = 1.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class WorkloadSpec:
    __slots__ = ("base_url", "entrypoint", "env", "workdir")

    def __init__(
        self,
        entrypoint: list[str],
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        base_url: str = "http://127.0.0.1:8080",
    ) -> None:
        self.entrypoint = entrypoint
        self.env: dict[str, str] = {} if env is None else env
        self.workdir = workdir
        self.base_url = base_url

    def __repr__(self) -> str:
        return (
            f"WorkloadSpec(entrypoint={self.entrypoint!r}, env={self.env!r}, "
            f"workdir={self.workdir!r}, base_url={self.base_url!r})"
        )

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


def pump_lines(pipe: IO[bytes], stream: str, sink: Callable[[str, str], None]) -> None:
    """Split a pipe into lines for the ring until EOF; long lines are cut, not buffered."""

    def emit(raw: bytes) -> None:
        sink(stream, raw.rstrip(b"\r").decode("utf-8", "replace"))

    fd = pipe.fileno()
    buffer = b""
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                emit(line)
            while len(buffer) > MAX_LINE:
                emit(buffer[:MAX_LINE])
                buffer = buffer[MAX_LINE:]
        if buffer:
            emit(buffer)
    finally:
        pipe.close()


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
        self._stopping = Latch()
        self._exit: ExitStatus | None = None
        # Spawning and stop() exclude each other: a stop never misses a just-started run.
        self._spawn_lock = _thread.allocate_lock()

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

    def _start(self) -> list[threading.Thread] | None:
        """Spawn one run and its pipe readers; None when a stop came first."""
        import subprocess
        import threading

        with self._spawn_lock:
            if self._stopping.is_set():
                return None
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
        readers = []
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            assert pipe is not None
            reader = threading.Thread(
                target=pump_lines, args=(pipe, name, self._line), name=name, daemon=True
            )
            reader.start()
            readers.append(reader)
        return readers

    def run(self) -> None:
        """Keep the workload running until stop() is called (blocks; run it in a thread)."""
        delay = self.backoff_initial
        while not self._stopping.is_set():
            self.state = "starting"
            readers: list[threading.Thread] | None = []
            try:
                readers = self._start()
            except (OSError, ValueError) as exc:
                self.state = "failed"
                self.pid = None
                self.last_error = f"cannot start {self.spec.entrypoint[0]}: {exc}"
                self.echo(f"kestrel: {self.last_error}")
            else:
                if readers is None:
                    break
                assert self._exit is not None
                code = self._exit.wait()
                assert code is not None
                ran_for = time.monotonic() - (self.started_monotonic or time.monotonic())
                self._kill_group(signal.SIGKILL)
                # Let the pipes drain so the last lines of a crash reach the ring.
                drain_until = time.monotonic() + PIPE_DRAIN_SECONDS
                for reader in readers:
                    reader.join(max(drain_until - time.monotonic(), 0))
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
            if self._stopping.wait(delay):
                break
            self.restarts += 1
            delay = min(delay * 2, self.backoff_max)
        self.state = "stopped"

    def _kill_group(self, sig: int) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self) -> int | None:
        """SIGTERM to the process group, then SIGKILL after stop_timeout; blocks."""
        with self._spawn_lock:
            self._stopping.set()
            exit_status = self._exit
            running = self.pid is not None
        if not running or exit_status is None or exit_status.done():
            return None
        self.state = "stopping"
        self._kill_group(signal.SIGTERM)
        code = exit_status.wait(self.stop_timeout)
        if code is None:
            self._kill_group(signal.SIGKILL)
            code = exit_status.wait()
        return code
