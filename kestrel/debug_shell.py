"""The opt-in root shell on the serial console (``volant.debug_shell=1``).

Off by default: upstream exposed an unauthenticated root shell to anyone who could
reach the console websocket. When enabled, busybox ``setsid -c`` gives the shell a
controlling terminal, and the shell is respawned with backoff when it exits.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kestrel.children import ChildReaper
from kestrel.console import echo


class DebugShell:
    def __init__(self, reaper: ChildReaper, tty: Path, shell: str = "/bin/sh") -> None:
        self.reaper = reaper
        self.tty = tty
        self.shell = shell
        self.spawns = 0

    def argv(self) -> list[str]:
        if os.path.exists("/bin/busybox"):
            return ["/bin/busybox", "setsid", "-c", self.shell]
        return [self.shell]

    async def run(self) -> None:
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
            started = asyncio.get_running_loop().time()
            await exited
            if asyncio.get_running_loop().time() - started > 30:
                delay = 1.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
