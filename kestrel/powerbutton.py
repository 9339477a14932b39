"""The power-button actor: an ACPI power button press becomes a graceful shutdown.

QEMU's ``system_powerdown`` (QMP) raises an ACPI power-button event; with the
``button`` and ``evdev`` modules loaded it shows up as KEY_POWER on
/dev/input/event*. Without this, PID 1 would ignore it and the host would have to
kill the VMM.
"""

from __future__ import annotations

import os
import struct

from kestrel.latch import Latch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from _typeshed import StrPath

EV_KEY = 1
KEY_POWER = 116
_EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit: timeval, type, code, value
POLL_SECONDS = 0.5  # how often run() looks at its stop flag


def is_power_press(record: bytes) -> bool:
    _sec, _usec, kind, code, value = _EVENT.unpack(record)
    return bool(kind == EV_KEY and code == KEY_POWER and value == 1)


class PowerButton:
    def __init__(self, devices: Sequence[StrPath], on_press: Callable[[str], None]) -> None:
        self.devices = [os.fspath(device) for device in devices]
        self.on_press = on_press
        self.presses = 0
        self._stopped = Latch()

    @staticmethod
    def find(dev_root: StrPath) -> list[str]:
        directory = os.path.join(dev_root, "input")
        try:
            names = os.listdir(directory)
        except OSError:
            return []
        return sorted(os.path.join(directory, n) for n in names if n.startswith("event"))

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        """Read key events until stop() (blocks; run it in a thread)."""
        import select

        fds: list[int] = []
        buffers: dict[int, bytes] = {}
        for path in self.devices:
            try:
                fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError:
                continue
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        open_fds = set(fds)
        try:
            while open_fds and not self._stopped.is_set():
                for fd, _events in poller.poll(POLL_SECONDS * 1000):
                    if not self._readable(fd, buffers):
                        poller.unregister(fd)
                        open_fds.discard(fd)
        finally:
            for fd in fds:
                os.close(fd)

    def _readable(self, fd: int, buffers: dict[int, bytes]) -> bool:
        """Handle what the device has; False when it is gone (EOF or an error)."""
        try:
            data = os.read(fd, _EVENT.size * 64)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        data = buffers.get(fd, b"") + data
        usable = len(data) - len(data) % _EVENT.size
        buffers[fd] = data[usable:]
        for offset in range(0, usable, _EVENT.size):
            if is_power_press(data[offset : offset + _EVENT.size]):
                self.presses += 1
                self.on_press("power button")
        return True
