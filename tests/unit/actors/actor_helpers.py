"""Test actors that record what happens to them, in (simulated) time order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio.testing

from volant.actors import Actor, ChildSpec, Restart, SupervisorEvent
from volant.errors import NotFoundError


class Boom(RuntimeError):
    """The 'bug' our test actors raise to crash."""


@attrs.define
class Journal:
    """Shared record of starts/stops across actor instances (they are recreated on restart)."""

    entries: list[tuple[str, str, float]] = attrs.field(factory=list)
    starts: Counter[str] = attrs.field(factory=Counter)
    events: list[SupervisorEvent] = attrs.field(factory=list)

    def note(self, what: str, who: str) -> None:
        self.entries.append((what, who, trio.current_time()))
        if what == "started":
            self.starts[who] += 1

    def order(self, what: str) -> list[str]:
        return [who for kind, who, _ in self.entries if kind == what]

    def times(self, what: str, who: str) -> list[float]:
        return [t for kind, name, t in self.entries if kind == what and name == who]

    def on_event(self, event: SupervisorEvent) -> None:
        self.events.append(event)

    def kinds(self, child: str | None = None) -> list[str]:
        return [e.kind for e in self.events if child is None or e.child == child]


class Worker(Actor[Any]):
    """Messages: "ping" -> "pong"; "incarnation"; "crash"; "exit"; ("sleep", s); "missing"."""

    def __init__(
        self,
        name: str,
        journal: Journal,
        *,
        start_delay: float = 0.0,
        crash_on_start: bool = False,
    ) -> None:
        self.worker_name = name
        self.journal = journal
        self.start_delay = start_delay
        self.crash_on_start = crash_on_start
        self.handled: list[Any] = []

    async def on_start(self) -> None:
        self.journal.note("starting", self.worker_name)
        if self.start_delay:
            await trio.sleep(self.start_delay)
        if self.crash_on_start:
            raise Boom(f"{self.worker_name} failed to start")
        self.journal.note("started", self.worker_name)

    async def on_stop(self) -> None:
        self.journal.note("on_stop", self.worker_name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            self.journal.note("exited", self.worker_name)

    async def handle(self, msg: Any) -> Any:
        self.handled.append(msg)
        if msg == "ping":
            return "pong"
        if msg == "incarnation":
            return self.journal.starts[self.worker_name]
        if msg == "crash":
            raise Boom(f"{self.worker_name} crashed")
        if msg == "exit":
            self.stop_self()
            return "bye"
        if msg == "missing":
            raise NotFoundError("no such thing")
        if isinstance(msg, tuple) and msg[0] == "sleep":
            await trio.sleep(msg[1])
            return "slept"
        return msg


class Stubborn:
    """A Runnable that ignores graceful stop requests (only a cancel ends it)."""

    def __init__(self, name: str, journal: Journal) -> None:
        self.name = name
        self.journal = journal
        self.stop_requests = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.journal.note("started", self.name)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.journal.note("exited", self.name)

    def request_stop(self) -> None:
        self.stop_requests += 1


def worker_spec(
    name: str,
    journal: Journal,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = 5.0,
    **kwargs: Any,
) -> ChildSpec:
    factory: Callable[[], Worker] = lambda: Worker(name, journal, **kwargs)  # noqa: E731
    return ChildSpec(name, factory, restart=restart, shutdown_timeout=shutdown_timeout)


async def settle() -> None:
    """Let every runnable task go idle (under MockClock no simulated time passes)."""
    await trio.testing.wait_all_tasks_blocked()
