"""The EventBus actor: sequence-numbered events, durable before anyone sees them.

Why publishing is a plain method and not a mailbox message: an event must never
be lost because a mailbox is full, and publishers (VM actors, supervisors) must
never block on it. All actors share one trio thread, so ``publish`` is atomic:
it assigns the next sequence number and queues the event for the journal.

The actor's own loop is the *group commit*: it appends the queued events to
``events/journal.jsonl``, fsyncs once per batch, and only then puts them in the
in-memory ring and fans them out. So a client never sees an id that could be
lost in a crash, and after a restart numbering continues from the last durable
id: replay has no duplicates and no gaps. An event queued but not yet durable
when volantd is killed is lost unseen (recovery re-announces what matters).

A failed journal write (disk full) leaves no torn fragment behind (the file is cut back
to where the batch began; a torn tail left by a crash is cut at startup), and the batch
is neither delivered nor dropped: it stays queued and the commit is retried with a
backoff, so clients see events late rather than ids the journal does not have. Only a
backlog beyond ``MAX_UNDURABLE`` events is delivered without the journal (availability
over durability at that point, logged and counted in ``journal_errors``).

Subscribers get a bounded queue each. A subscriber that falls behind further than
its queue is not silently skipped: its stream is ended with an overflow marker
that tells the client to reconnect with its last id (replay fills the hole).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from volant.actors import Actor
from volant.logging import get_logger

log = get_logger("volant.events")

#: Upstream's VM event types plus ours.
VM_EVENT_TYPES = (
    "VM_CREATED", "VM_STARTING", "VM_RUNNING", "VM_STOPPED", "VM_CRASHED", "VM_RESTARTING",
    "VM_FAILED", "VM_ADOPTED", "VM_DELETED", "VM_LOG",
)

RING_SIZE = 10_000
JOURNAL_ROTATE_BYTES = 8 * 1024 * 1024
COMMIT_INTERVAL = 0.01
#: Longest pause between retries of a failing journal write.
MAX_RETRY_DELAY = 1.0
#: Events held back by a failing journal before they are delivered regardless.
MAX_UNDURABLE = 20_000


def utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@attrs.frozen
class Event:
    """One event. ``to_json`` is upstream's VMEvent shape plus ``id`` and extras."""

    seq: int
    type: str
    name: str
    status: str = ""
    timestamp: str = attrs.field(factory=utc_now)
    pid: int | None = None
    ip_address: str | None = None
    mac_address: str | None = None
    message: str | None = None
    stream: str | None = None
    line: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.seq,
            "type": self.type,
            "name": self.name,
            "status": self.status,
            "timestamp": self.timestamp,
        }
        for key in ("pid", "ip_address", "mac_address", "message", "stream", "line"):
            value = getattr(self, key)
            if value is not None and value != "":
                body[key] = value
        body.update(self.extra)
        return body

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        known = {"id", "type", "name", "status", "timestamp", "pid", "ip_address",
                 "mac_address", "message", "stream", "line"}
        return cls(
            seq=int(data["id"]),
            type=str(data["type"]),
            name=str(data.get("name", "")),
            status=str(data.get("status", "")),
            timestamp=str(data.get("timestamp", "")),
            pid=data.get("pid"),
            ip_address=data.get("ip_address"),
            mac_address=data.get("mac_address"),
            message=data.get("message"),
            stream=data.get("stream"),
            line=data.get("line"),
            extra={k: v for k, v in data.items() if k not in known},
        )


@attrs.frozen
class EventFilter:
    names: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def matches(self, event: Event) -> bool:
        if self.names and event.name not in self.names:
            return False
        return not (self.types and event.type not in self.types)


class Subscription:
    """A subscriber's view: replayed events first, then live ones, in id order."""

    def __init__(self, bus: EventBus, flt: EventFilter, size: int) -> None:
        self._bus = bus
        self.filter = flt
        self._send, self._receive = trio.open_memory_channel[Event](size)
        self.overflowed = False
        self.last_seq = 0

    def _offer(self, event: Event) -> None:
        if self.overflowed or not self.filter.matches(event):
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.overflowed = True
            self._send.close()
        except trio.BrokenResourceError:
            pass

    async def __anext__(self) -> Event:
        try:
            event = await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self.last_seq = event.seq
        return event

    def drain(self, limit: int) -> list[Event]:
        """Up to ``limit`` events already queued, without waiting (for batched writes).

        The end of the stream is left for the next ``__anext__`` to report.
        """
        ready: list[Event] = []
        while len(ready) < limit:
            try:
                ready.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if ready:
            self.last_seq = ready[-1].seq
        return ready

    def __aiter__(self) -> Subscription:
        return self

    def close(self) -> None:
        self._bus._subscribers.discard(self)
        self._send.close()
        self._receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_torn_tail(journal: Path) -> int:
    """Drop a last line without its newline (a write cut short by a crash); returns the
    bytes removed. Such an event was never delivered: delivery follows the fsync."""
    try:
        with open(journal, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return 0  # the common case: one byte read, the load reads the rest
            fh.seek(0)
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    except FileNotFoundError:
        return 0
    log.warning("event journal: a torn last line was cut", path=str(journal),
                bytes=len(data) - keep)
    return len(data) - keep


class EventBus(Actor[Any]):
    """Root-supervisor child. Other code calls ``publish``/``subscribe`` directly."""

    mailbox_size = 16

    def __init__(self, events_dir: Path, ring_size: int = RING_SIZE,
                 subscriber_queue: int = 4096) -> None:
        self.events_dir = events_dir
        self.journal = events_dir / "journal.jsonl"
        self.ring: deque[Event] = deque(maxlen=ring_size)
        self.subscriber_queue = subscriber_queue
        self._subscribers: set[Subscription] = set()
        self._pending: list[Event] = []
        self._wakeup = trio.Event()
        self._seq = 0
        self._durable_seq = 0
        self._commit_lock = trio.Lock()
        self.listeners: list[Callable[[Event], None]] = []
        self.journal_errors = 0
        self._retry_delay = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    async def on_start(self) -> None:
        await trio.to_thread.run_sync(self._load_tail)
        self.nursery.start_soon(self._commit_loop)

    async def on_stop(self) -> None:
        await self._commit()

    async def handle(self, msg: Any) -> Any:
        if msg == "flush":
            await self._commit()
            return self._durable_seq
        raise ValueError(f"unknown message {msg!r}")

    def _journal_files(self) -> list[Path]:
        return [self.events_dir / "journal.1.jsonl", self.journal]

    def _load_tail(self) -> None:
        self.events_dir.mkdir(parents=True, exist_ok=True)
        cut_torn_tail(self.journal)
        for event in self._read_journal(0):
            self.ring.append(event)
            self._seq = max(self._seq, event.seq)
        self._durable_seq = self._seq

    def _read_journal(self, after: int) -> Iterator[Event]:
        for path in self._journal_files():
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        try:
                            event = Event.from_json(json.loads(line))
                        except (ValueError, KeyError, TypeError):
                            continue  # a torn last line after a crash
                        if event.seq > after:
                            yield event
            except FileNotFoundError:
                continue

    # -- publishing --------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The newest id clients can have seen."""
        return self._durable_seq

    def publish(self, type: str, name: str, status: str = "", **fields: Any) -> Event:
        """Queue an event; it is delivered once durable (within ~10 ms)."""
        self._seq += 1
        known = {k: fields.pop(k) for k in list(fields)
                 if k in ("pid", "ip_address", "mac_address", "message", "stream", "line")}
        event = Event(seq=self._seq, type=type, name=name, status=status, extra=fields, **known)
        self._pending.append(event)
        self._wakeup.set()
        return event

    async def _commit_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self._commit()
            await trio.sleep(max(COMMIT_INTERVAL, self._retry_delay))

    async def _commit(self) -> None:
        """Make everything published so far durable and deliver it.

        Serialised by a lock, so a ``flush`` that arrives while the commit loop is
        writing waits for that batch and then commits whatever came after it.
        """
        async with self._commit_lock:
            await self._commit_locked()

    async def _commit_locked(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        lines = "".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in batch)
        try:
            await trio.to_thread.run_sync(self._append, lines)
        except OSError as exc:
            self.journal_errors += 1
            if len(batch) + len(self._pending) <= MAX_UNDURABLE:
                # Durability first: hold the batch (ahead of newer events) and retry.
                self._pending = batch + self._pending
                self._retry_delay = min(MAX_RETRY_DELAY, max(0.05, self._retry_delay * 2))
                self._wakeup.set()
                log.error("event journal write failed; events held back until it works",
                          error=str(exc), held=len(self._pending))
                return
            log.error("event journal write failed for too long; events delivered but "
                      "not durable", error=str(exc), count=len(batch))
        self._retry_delay = 0.0
        for event in batch:
            self._durable_seq = event.seq
            self.ring.append(event)
            for sub in list(self._subscribers):
                sub._offer(event)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception as exc:  # a listener bug must not stop delivery
                    log.error("event listener failed", error=repr(exc))

    def _append(self, lines: str) -> None:
        """Append and fsync one batch; on failure cut the file back to where it began."""
        data = lines.encode()
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # A torn fragment would glue itself to the next batch's first line and
                # make both unreadable: leave the file as it was before this batch.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
            size = start + len(data)
        finally:
            os.close(fd)
        if size > JOURNAL_ROTATE_BYTES:
            os.replace(self.journal, self.events_dir / "journal.1.jsonl")
            fd = os.open(self.events_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- subscribing -------------------------------------------------------------------
    def recent(self, limit: int = 100, flt: EventFilter | None = None,
               after: int | None = None) -> list[Event]:
        flt = flt or EventFilter()
        out = [e for e in self.ring if flt.matches(e) and (after is None or e.seq > after)]
        return out[-limit:] if after is None else out[:limit]

    async def subscribe(self, after: int | None = None, flt: EventFilter | None = None,
                        queue: int | None = None) -> Subscription:
        """Subscribe to live events; with ``after``, first replay every event after that id.

        The subscriber is registered before the replay is read, and replayed events
        are queued before any live one, so nothing falls between the two.
        """
        sub = Subscription(self, flt or EventFilter(), queue or self.subscriber_queue)
        if after is None:
            self._subscribers.add(sub)
            return sub
        horizon = self._durable_seq
        oldest_in_ring = self.ring[0].seq if self.ring else horizon + 1
        replay: Iterable[Event]
        if after + 1 >= oldest_in_ring:
            replay = [e for e in self.ring if after < e.seq <= horizon]
        else:
            replay = await trio.to_thread.run_sync(
                lambda: [e for e in self._read_journal(after) if e.seq <= horizon]
            )
        # Live events published while the journal was read arrive after the horizon.
        live_buffer: list[Event] = [e for e in self.ring if e.seq > horizon]
        for event in replay:
            sub._offer(event)
        for event in live_buffer:
            sub._offer(event)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
