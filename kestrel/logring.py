"""A bounded ring of workload output lines with live subscribers.

Each line is ``{stream, line, timestamp}`` -- the record volantd's logs websocket
relays. Subscribers get a bounded queue; a subscriber that cannot keep up loses
its oldest lines and is told how many (never blocks the workload's pipes).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


def rfc3339(epoch: float) -> str:
    seconds = int(epoch)
    micros = int((epoch - seconds) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


@dataclass(frozen=True)
class LogLine:
    stream: str
    line: str
    timestamp: str

    def to_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "line": self.line, "timestamp": self.timestamp}


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[LogLine] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    dropped: int = 0


class LogRing:
    def __init__(self, capacity: int = 1000) -> None:
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._subscribers: set[Subscription] = set()
        self.total = 0

    def append(self, stream: str, line: str) -> LogLine:
        record = LogLine(stream, line, rfc3339(time.time()))
        self._lines.append(record)
        self.total += 1
        for sub in self._subscribers:
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(record)
        return record

    def tail(self, count: int | None = None) -> list[LogLine]:
        lines = list(self._lines)
        if count is None:
            return lines
        return lines[-count:] if count > 0 else []

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
