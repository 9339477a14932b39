"""A bounded ring of workload output lines with live subscribers.

Each line is ``{stream, line, timestamp}`` -- the record volantd's logs websocket
relays. Subscribers get a bounded buffer; a subscriber that cannot keep up loses
its oldest lines and is told how many (never blocks the workload's pipes).

Thread-safe: the pipe readers append, API connection threads read and subscribe.
"""

from __future__ import annotations

import _thread
import time

from kestrel.latch import Wakeup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUBSCRIBER_BUFFER = 1000


def rfc3339(epoch: float) -> str:
    seconds = int(epoch)
    micros = int((epoch - seconds) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


class LogLine:
    __slots__ = ("line", "stream", "timestamp")

    def __init__(self, stream: str, line: str, timestamp: str) -> None:
        self.stream = stream
        self.line = line
        self.timestamp = timestamp

    def to_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "line": self.line, "timestamp": self.timestamp}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogLine):
            return NotImplemented
        return (self.stream, self.line, self.timestamp) == (
            other.stream,
            other.line,
            other.timestamp,
        )

    def __hash__(self) -> int:
        return hash((self.stream, self.line, self.timestamp))

    def __repr__(self) -> str:
        return f"LogLine({self.stream!r}, {self.line!r}, {self.timestamp!r})"


class Subscription:
    """One reader's buffer of new lines; ``get`` blocks until a line or the timeout."""

    __slots__ = ("_lines", "_wakeup", "dropped", "maxsize")

    def __init__(self, maxsize: int = SUBSCRIBER_BUFFER) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        self._lines: list[LogLine] = []
        self._wakeup = Wakeup()

    def put(self, line: LogLine) -> None:
        """Called by the ring with its lock held."""
        if len(self._lines) >= self.maxsize:
            del self._lines[0]
            self.dropped += 1
        self._lines.append(line)
        self._wakeup.notify()

    def get(self, timeout: float) -> LogLine | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._lines.pop(0)
            except IndexError:
                pass
            if not self._wakeup.wait(deadline - time.monotonic()):
                try:
                    return self._lines.pop(0)
                except IndexError:
                    return None

    def qsize(self) -> int:
        return len(self._lines)


class LogRing:
    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = max(1, capacity)
        self._lines: list[LogLine] = []
        self._subscribers: list[Subscription] = []
        self._lock = _thread.allocate_lock()
        self.total = 0

    def append(self, stream: str, line: str) -> LogLine:
        record = LogLine(stream, line, rfc3339(time.time()))
        with self._lock:
            self._lines.append(record)
            if len(self._lines) > self.capacity:
                del self._lines[0]
            self.total += 1
            for sub in self._subscribers:
                sub.put(record)
        return record

    def tail(self, count: int | None = None) -> list[LogLine]:
        with self._lock:
            lines = list(self._lines)
        if count is None:
            return lines
        return lines[-count:] if count > 0 else []

    def subscribe(self) -> Subscription:
        sub = Subscription()
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
