"""The power-button actor: an ACPI power button press becomes a graceful shutdown.

QEMU's ``system_powerdown`` (QMP) raises an ACPI power-button event; with the
``button`` and ``evdev`` modules loaded it shows up as KEY_POWER on
/dev/input/event*. Without this, PID 1 would ignore it and the host would have to
kill the VMM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

EV_KEY = 1
KEY_POWER = 116
_EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit: timeval, type, code, value


def is_power_press(record: bytes) -> bool:
    _sec, _usec, kind, code, value = _EVENT.unpack(record)
    return bool(kind == EV_KEY and code == KEY_POWER and value == 1)


class PowerButton:
    def __init__(self, devices: list[Path], on_press: Callable[[str], None]) -> None:
        self.devices = devices
        self.on_press = on_press
        self.presses = 0

    @staticmethod
    def find(dev_root: Path) -> list[Path]:
        try:
            return sorted(dev_root.joinpath("input").glob("event*"))
        except OSError:
            return []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        buffers: dict[int, bytes] = {}

        def readable(fd: int) -> None:
            try:
                data = os.read(fd, _EVENT.size * 64)
            except BlockingIOError:
                return
            except OSError:
                loop.remove_reader(fd)
                return
            if not data:
                loop.remove_reader(fd)
                return
            data = buffers.get(fd, b"") + data
            usable = len(data) - len(data) % _EVENT.size
            buffers[fd] = data[usable:]
            for offset in range(0, usable, _EVENT.size):
                if is_power_press(data[offset : offset + _EVENT.size]):
                    self.presses += 1
                    self.on_press("power button")

        for path in self.devices:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            fds.append(fd)
            loop.add_reader(fd, readable, fd)
        try:
            await asyncio.Event().wait()
        finally:
            for fd in fds:
                with contextlib.suppress(Exception):
                    loop.remove_reader(fd)
                os.close(fd)
