"""Child processes and the orphan reaper: the only code in kestrel that calls waitpid.

As PID 1 kestrel inherits every orphan in the VM and must reap them, but a blind
``wait(-1)`` loop (upstream's reaper) races with whoever waits for the workload
and steals its exit status. Here there is one reaper: it collects *every* exit
and hands the status of a registered child (the workload, the debug shell, a
helper) to that child's ExitStatus; anything else is counted as a reaped orphan.
The fork and the registration happen under one lock, and the reaper only collects
a child while holding that lock, so a child can never exit before it is known.

The reaper thread sleeps in ``waitid(WNOWAIT)``, which reports an exited child
without collecting it; the collection itself happens under the lock.

When kestrel is not PID 1 (tests, a developer host) it only waits for the pids it
registered (one waiting thread per child), unless it was made a child subreaper, so
it never takes another program's children.
"""

from __future__ import annotations

import _thread
import os

from kestrel.latch import Latch, Wakeup

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any

RECENT_ORPHANS = 32


class ExitStatus:
    """The exit code of a supervised child (negative signal number when killed)."""

    __slots__ = ("_done", "code")

    def __init__(self) -> None:
        self.code: int | None = None
        self._done = Latch()

    def set(self, code: int) -> None:
        if self.code is None:
            self.code = code
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> int | None:
        """The code, or None when ``timeout`` seconds passed first."""
        self._done.wait(timeout)
        return self.code


class ChildReaper:
    def __init__(self, reap_all: bool) -> None:
        self.reap_all = reap_all
        self._waiters: dict[int, ExitStatus] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self.orphans_reaped = 0
        self.recent_orphans: list[tuple[int, int]] = []
        self._lock = _thread.allocate_lock()
        self._spawned = Wakeup()
        self._started = False
        self._stopped = False

    def start(self) -> None:
        """Collect exits in the background from now on (idempotent)."""
        if self._started:
            return
        self._started = True
        if self.reap_all:
            import threading

            threading.Thread(target=self._reap_forever, name="reaper", daemon=True).start()

    def stop(self) -> None:
        """Stop collecting for all (the thread ends at the next exit it sees, untouched)."""
        self._stopped = True
        self._spawned.notify()

    def spawn(
        self, argv: list[str], **popen_kwargs: Any
    ) -> tuple[subprocess.Popen[bytes], ExitStatus]:
        """Start a supervised child; its ExitStatus receives the exit code."""
        import subprocess  # lazily: not needed before the API is up

        self.start()
        with self._lock:
            process: subprocess.Popen[bytes] = subprocess.Popen(argv, **popen_kwargs)
            status = ExitStatus()
            self._waiters[process.pid] = status
            self._processes[process.pid] = process
        if self.reap_all:
            self._spawned.notify()
        else:
            import threading

            threading.Thread(
                target=self._wait_for, args=(process.pid,), name="wait", daemon=True
            ).start()
        return process, status

    @property
    def supervised_pids(self) -> set[int]:
        return set(self._waiters)

    def _deliver(self, pid: int, status: int) -> None:
        """Called with the lock held."""
        code = os.waitstatus_to_exitcode(status)
        waiter = self._waiters.pop(pid, None)
        process = self._processes.pop(pid, None)
        if process is not None:
            # Tell Popen the child is gone so it never calls waitpid itself.
            process.returncode = code
        if waiter is not None:
            waiter.set(code)
        else:
            self.orphans_reaped += 1
            self.recent_orphans.append((pid, code))
            del self.recent_orphans[:-RECENT_ORPHANS]

    def reap(self) -> None:
        """Collect every exited child that is ours to collect; never blocks."""
        with self._lock:
            if self.reap_all:
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        return
                    if pid == 0:
                        return
                    self._deliver(pid, status)
            for pid in list(self._waiters):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    # Someone else reaped it (cannot happen in kestrel); report it as lost.
                    self._deliver(pid, 255 << 8)
                    continue
                if done:
                    self._deliver(pid, status)

    def _reap_forever(self) -> None:
        while not self._stopped:
            try:
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                # No children at all: wait for the next spawn (or look again in a second).
                self._spawned.wait(1.0)
                continue
            if self._stopped:
                return  # leave the exit to whoever owns the process now
            self.reap()

    def _wait_for(self, pid: int) -> None:
        """Scoped mode: wait for one registered child, then collect it under the lock."""
        import contextlib

        while True:
            with contextlib.suppress(ChildProcessError):  # collected below, or lost
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            with self._lock:
                if pid not in self._waiters:
                    return
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 255 << 8
                if done:
                    self._deliver(pid, status)
                    return
