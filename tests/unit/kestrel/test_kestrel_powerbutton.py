"""ACPI power-button events (as evdev records) trigger a shutdown request."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

from kestrel.powerbutton import EV_KEY, KEY_POWER, PowerButton

EVENT = struct.Struct("llHHi")


def record(kind: int, code: int, value: int) -> bytes:
    return EVENT.pack(1, 2, kind, code, value)


def test_power_key_press_requests_shutdown_and_other_keys_do_not(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    fifo = tmp_path / "input" / "event0"
    os.mkfifo(fifo)
    assert PowerButton.find(tmp_path) == [str(fifo)]

    def scenario() -> tuple[list[str], int]:
        reasons: list[str] = []
        button = PowerButton([fifo], reasons.append)
        runner = threading.Thread(target=button.run, daemon=True)
        runner.start()
        time.sleep(0.05)
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, record(EV_KEY, 30, 1))  # KEY_A
            os.write(writer, record(EV_KEY, KEY_POWER, 0))  # release only
            # A press split across two writes still counts once.
            press = record(EV_KEY, KEY_POWER, 1)
            os.write(writer, press[:10])
            time.sleep(0.05)
            assert reasons == []
            os.write(writer, press[10:])
            for _ in range(100):
                if reasons:
                    break
                time.sleep(0.01)
        finally:
            os.close(writer)
        button.stop()
        runner.join(2)
        assert not runner.is_alive()
        return reasons, button.presses

    reasons, presses = scenario()
    assert reasons == ["power button"]
    assert presses == 1
