"""Console output and the boot timeline.

Lines go straight to fd 1 with os.write (no Python buffering), which is the serial
console when kestrel is PID 1. The timeline records guest uptime (seconds since the
kernel started, from /proc/uptime) at each boot milestone.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath


def echo(line: str) -> None:
    data = (line + "\n").encode("utf-8", "replace")
    try:
        while data:
            written = os.write(1, data)
            data = data[written:]
    except OSError:
        pass


def uptime(proc: StrPath) -> float | None:
    try:
        with open(os.path.join(proc, "uptime")) as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


INIT_MESSAGE = "Run /init as init process"


def init_start_from_kmsg(kmsg: StrPath, message: str = INIT_MESSAGE) -> float | None:
    """When the kernel handed over to /init, from its log (seconds since boot).

    PID 1's start time in /proc is the kernel's own early boot and its CPU time includes
    every driver initcall, so the kernel's "Run /init" record is the honest marker.
    /dev/kmsg records look like ``6,421,6673273,-;Run /init as init process``.
    """
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        for _ in range(100_000):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return None
            except OSError:
                continue  # EPIPE: records were overwritten while reading; go on
            if not record:
                return None
            for line in record.decode("utf-8", "replace").splitlines():
                prefix, _, text = line.partition(";")
                if text.startswith(message):
                    fields = prefix.split(",")
                    try:
                        return int(fields[2]) / 1_000_000
                    except (IndexError, ValueError):
                        return None
        return None
    finally:
        os.close(fd)


class Timeline:
    """Milestones in guest uptime; ``kernel`` is 0 by definition."""

    ORDER = ("kernel", "init", "python", "kestrel", "network", "api", "workload_started",
             "workload_healthy")

    def __init__(self, proc: StrPath) -> None:
        self.proc = proc
        self.marks: dict[str, float] = {"kernel": 0.0}
        self.printed = False

    def mark(self, name: str, at: float | None = None) -> None:
        if name in self.marks:
            return
        value = uptime(self.proc) if at is None else at
        if value is not None:
            self.marks[name] = round(value, 2)

    def line(self) -> str:
        ordered = [n for n in self.ORDER if n in self.marks]
        ordered += sorted(n for n in self.marks if n not in self.ORDER)
        return "kestrel: timeline " + " ".join(f"{n}={self.marks[n]:.2f}" for n in ordered)

    def as_dict(self) -> dict[str, float]:
        return dict(self.marks)
