"""The opt-in root shell on the serial console (``volant.debug_shell=1``).

Off by default: upstream exposed an unauthenticated root shell to anyone who could
reach the console websocket. When enabled, busybox ``setsid -c`` gives the shell a
controlling terminal, and the shell is respawned with backoff when it exits.
"""

from __future__ import annotations

import os
import time

from kestrel.console import echo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

    from kestrel.children import ChildReaper


class DebugShell:
    def __init__(self, reaper: ChildReaper, tty: StrPath, shell: str = "/bin/sh") -> None:
        self.reaper = reaper
        self.tty = os.fspath(tty)
        self.shell = shell
        self.spawns = 0

    def argv(self) -> list[str]:
        if os.path.exists("/bin/busybox"):
            return ["/bin/busybox", "setsid", "-c", self.shell]
        return [self.shell]

    def run(self) -> None:
        """Respawn the shell whenever it exits (blocks; run it in a thread)."""
        delay = 1.0
        while True:
            try:
                fd = os.open(self.tty, os.O_RDWR | os.O_NOCTTY)
            except OSError as exc:
                echo(f"kestrel: debug shell: cannot open {self.tty}: {exc}")
                return
            try:
                env = {"TERM": "linux", "HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
                argv = self.argv()
                # busybox setsid must not start as a group leader, or it forks and
                # the shell would escape supervision; it makes its own session.
                _process, exited = self.reaper.spawn(
                    argv,
                    stdin=fd,
                    stdout=fd,
                    stderr=fd,
                    env=env,
                    start_new_session=len(argv) == 1,
                )
                self.spawns += 1
            except OSError as exc:
                echo(f"kestrel: debug shell: cannot start {self.shell}: {exc}")
                os.close(fd)
                return
            os.close(fd)
            started = time.monotonic()
            exited.wait()
            if time.monotonic() - started > 30:
                delay = 1.0
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
