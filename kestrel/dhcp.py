"""The DHCP actor for ``ip=dhcp`` (volantd's ``dhcp`` network mode).

kestrel does not speak DHCP itself: busybox ``udhcpc`` does, in the foreground so it
keeps renewing the lease, supervised and restarted like any other child. udhcpc
calls a script on every lease change; kestrel writes that script at start-up
(busybox ``ifconfig``/``route``), so the image needs nothing beyond busybox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from kestrel.children import ChildReaper

SCRIPT = """#!{busybox} sh
# Written by kestrel: apply a udhcpc lease.
bb={busybox}
case "$1" in
  deconfig)
    $bb ifconfig "$interface" 0.0.0.0 up
    ;;
  bound|renew)
    $bb ifconfig "$interface" "$ip" netmask "${{subnet:-255.255.255.0}}" up
    if [ -n "$router" ]; then
      while $bb route del default dev "$interface" 2>/dev/null; do :; done
      for gateway in $router; do
        $bb route add default gw "$gateway" dev "$interface"
        break
      done
    fi
    if [ -n "$dns" ]; then
      for server in $dns; do echo "nameserver $server"; done > {resolv}
    fi
    echo "kestrel: dhcp lease $ip on $interface"
    ;;
esac
exit 0
"""


def find_busybox() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("busybox")


class DhcpClient:
    def __init__(
        self,
        reaper: ChildReaper,
        device: str,
        busybox: str,
        script_dir: Path,
        resolv_conf: str = "/etc/resolv.conf",
        echo: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.reaper = reaper
        self.device = device
        self.busybox = busybox
        self.script_path = script_dir / "kestrel-udhcpc.sh"
        self.resolv_conf = resolv_conf
        self.echo = echo
        self.starts = 0
        self.pid: int | None = None

    def write_script(self) -> None:
        self.script_path.parent.mkdir(parents=True, exist_ok=True)
        self.script_path.write_text(SCRIPT.format(busybox=self.busybox, resolv=self.resolv_conf))
        self.script_path.chmod(0o755)

    def argv(self) -> list[str]:
        # -f: stay in the foreground (renewals); -t/-T: retries and their spacing;
        # -A: pause before retrying after a failed round.
        return [
            self.busybox,
            "udhcpc",
            "-f",
            "-i",
            self.device,
            "-s",
            str(self.script_path),
            "-t",
            "5",
            "-T",
            "1",
            "-A",
            "3",
        ]

    def stop(self) -> None:
        """udhcpc releases nothing on SIGTERM; the lease simply ends with the VM."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    async def run(self) -> None:
        self.write_script()
        delay = 1.0
        while True:
            try:
                process, exited = self.reaper.spawn(self.argv())
            except OSError as exc:
                self.echo(f"kestrel: cannot start udhcpc: {exc}")
                return
            self.pid = process.pid
            self.starts += 1
            try:
                code = await exited
            except asyncio.CancelledError:
                self.stop()
                raise
            self.pid = None
            self.echo(f"kestrel: udhcpc exited with {code}, restarting in {delay:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
