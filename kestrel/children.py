"""Child processes and the orphan reaper: the only code in kestrel that calls waitpid.

As PID 1 kestrel inherits every orphan in the VM and must reap them, but a blind
``wait(-1)`` loop (upstream's reaper) races with whoever waits for the workload
and steals its exit status. Here there is one reaper: it collects *every* exit
and hands the status of a registered child (the workload, the debug shell, a
helper) to that child's future; anything else is counted as a reaped orphan.
Registration happens in the same event-loop step as the fork, so a child can
never exit before it is known.

When kestrel is not PID 1 (tests, a developer host) it only waits for the pids it
registered, unless it was made a child subreaper, so it never takes another
program's children.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess


class ChildReaper:
    def __init__(self, reap_all: bool) -> None:
        self.reap_all = reap_all
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self.orphans_reaped = 0
        self.recent_orphans: deque[tuple[int, int]] = deque(maxlen=32)

    def spawn(
        self, argv: list[str], **popen_kwargs: Any
    ) -> tuple[subprocess.Popen[bytes], asyncio.Future[int]]:
        """Start a supervised child; the future resolves with its exit code
        (negative signal number when killed by a signal)."""
        import subprocess  # lazily: not needed before the API is up

        process: subprocess.Popen[bytes] = subprocess.Popen(argv, **popen_kwargs)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # No await between fork and registration: the reaper cannot run in between.
        self._waiters[process.pid] = future
        self._processes[process.pid] = process
        return process, future

    @property
    def supervised_pids(self) -> set[int]:
        return set(self._waiters)

    def _deliver(self, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        future = self._waiters.pop(pid, None)
        process = self._processes.pop(pid, None)
        if process is not None:
            # Tell Popen the child is gone so it never calls waitpid itself.
            process.returncode = code
        if future is not None:
            if not future.done():
                future.set_result(code)
        else:
            self.orphans_reaped += 1
            self.recent_orphans.append((pid, code))

    def reap(self) -> None:
        """Collect every exited child that is ours to collect; never blocks."""
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

    async def run(self) -> None:
        """Reap on SIGCHLD, plus a slow sweep in case a signal is coalesced or missed."""
        loop = asyncio.get_running_loop()
        handler_installed = False
        try:
            loop.add_signal_handler(signal.SIGCHLD, self.reap)
            handler_installed = True
        except (RuntimeError, ValueError):
            pass
        try:
            while True:
                self.reap()
                await asyncio.sleep(1.0 if handler_installed else 0.1)
        finally:
            if handler_installed:
                loop.remove_signal_handler(signal.SIGCHLD)
