"""The DHCP actor for ``ip=dhcp`` (volantd's ``dhcp`` network mode).

kestrel does not speak DHCP itself: busybox ``udhcpc`` does, in the foreground so it
keeps renewing the lease, supervised and restarted like any other child. udhcpc
calls a script on every lease change; kestrel writes that script at start-up
(busybox ``ifconfig``/``route``), so the image needs nothing beyond busybox.
"""

from __future__ import annotations

import contextlib
import os
import signal

from kestrel.latch import Latch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import StrPath

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
    import shutil

    return shutil.which("busybox")


class DhcpClient:
    def __init__(
        self,
        reaper: ChildReaper,
        device: str,
        busybox: str,
        script_dir: StrPath,
        resolv_conf: str = "/etc/resolv.conf",
        echo: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.reaper = reaper
        self.device = device
        self.busybox = busybox
        self.script_path = os.path.join(script_dir, "kestrel-udhcpc.sh")
        self.resolv_conf = resolv_conf
        self.echo = echo
        self.starts = 0
        self.pid: int | None = None
        self._stopped = Latch()

    def write_script(self) -> None:
        os.makedirs(os.path.dirname(self.script_path), exist_ok=True)
        with open(self.script_path, "w") as handle:
            handle.write(SCRIPT.format(busybox=self.busybox, resolv=self.resolv_conf))
        os.chmod(self.script_path, 0o755)

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
            self.script_path,
            "-t",
            "5",
            "-T",
            "1",
            "-A",
            "3",
        ]

    def stop(self) -> None:
        """End the client; udhcpc releases nothing on SIGTERM, the lease ends with the VM."""
        self._stopped.set()
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> None:
        """Keep udhcpc running until stop() (blocks; run it in a thread)."""
        self.write_script()
        delay = 1.0
        while not self._stopped.is_set():
            try:
                process, exited = self.reaper.spawn(self.argv())
            except OSError as exc:
                self.echo(f"kestrel: cannot start udhcpc: {exc}")
                return
            self.pid = process.pid
            self.starts += 1
            if self._stopped.is_set():
                self.stop()  # stop() ran between the check and the spawn
            code = exited.wait()
            self.pid = None
            if self._stopped.is_set():
                return
            self.echo(f"kestrel: udhcpc exited with {code}, restarting in {delay:.0f}s")
            if self._stopped.wait(delay):
                return
            delay = min(delay * 2, 30.0)
