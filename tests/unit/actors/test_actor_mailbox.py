"""A standalone actor: cast/call, replies, domain errors, crashes, back-pressure, timeouts."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
from actor_helpers import Boom, Journal, Worker, settle

from volant.actors import (
    Actor,
    ActorCrashed,
    ActorStopped,
    CallTimeout,
    MailboxFull,
)
from volant.errors import BackPressureError, NotFoundError, UnavailableError


class Counter(Actor[Any]):
    def __init__(self) -> None:
        self.total = 0

    async def handle(self, msg: Any) -> Any:
        if msg == "get":
            return self.total
        self.total += msg
        return self.total


async def test_cast_and_call_reply_in_order(autojump_clock: trio.abc.Clock) -> None:
    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        ref = actor.ref
        ref.cast(2)
        ref.cast(3)
        assert await ref.call(10) == 15  # casts were handled first, in order
        assert await ref.call("get") == 15
        actor.request_stop()


async def test_domain_error_goes_to_caller_and_actor_keeps_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    worker = Worker("w", journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        with pytest.raises(NotFoundError):
            await worker.ref.call("missing")
        assert worker.ref.alive
        assert await worker.ref.call("ping") == "pong"
        assert journal.starts["w"] == 1
        worker.request_stop()


async def test_crash_gives_caller_actor_crashed_with_cause(
    autojump_clock: trio.abc.Clock,
) -> None:
    worker = Worker("w", Journal())
    ref = worker.ref
    caught: list[BaseException] = []

    async def caller() -> None:
        try:
            await ref.call("crash")
        except ActorCrashed as error:
            caught.append(error)

    with pytest.RaisesGroup(Boom):  # standalone: the crash propagates out of run()
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            nursery.start_soon(caller)
    assert len(caught) == 1
    assert isinstance(caught[0].__cause__, Boom)
    assert isinstance(caught[0], ActorCrashed)
    assert caught[0].status == 500
    with pytest.raises(ActorStopped):  # its own mailbox closed with it
        ref.cast("ping")


async def test_full_mailbox_raises_immediately(autojump_clock: trio.abc.Clock) -> None:
    class Small(Worker):
        mailbox_size = 2

    worker = Small("w", Journal())
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        ref = worker.ref
        nursery.start_soon(partial(ref.call, ("sleep", 100), timeout=1000))
        await settle()  # the actor is now busy sleeping
        ref.cast("a")
        ref.cast("b")
        assert ref.mailbox_depth == 2
        before = trio.current_time()
        with pytest.raises(MailboxFull) as excinfo:
            ref.cast("c")
        with pytest.raises(MailboxFull):
            await ref.call("d", timeout=50)
        assert trio.current_time() == before  # never waited
        assert isinstance(excinfo.value, BackPressureError)
        assert excinfo.value.status == 429
        worker.request_stop()


async def test_call_timeout(autojump_clock: trio.abc.Clock) -> None:
    worker = Worker("w", Journal())
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        start = trio.current_time()
        with pytest.raises(CallTimeout) as excinfo:
            await worker.ref.call(("sleep", 10), timeout=1.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        assert excinfo.value.status == 504
        # The actor still handles the message; later calls work.
        assert await worker.ref.call("ping", timeout=20) == "pong"
        worker.request_stop()


async def test_actor_stopped_after_termination(autojump_clock: trio.abc.Clock) -> None:
    worker = Worker("w", Journal())
    ref = worker.ref
    results: list[BaseException] = []

    async def queued_call() -> None:
        try:
            await ref.call("ping", timeout=100)
        except ActorStopped as error:
            results.append(error)

    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        nursery.start_soon(partial(ref.call, ("sleep", 5), timeout=100))
        await settle()
        nursery.start_soon(queued_call)  # queued behind the sleep
        await settle()
        worker.request_stop()  # stops after the current message; the queued one is refused
    assert len(results) == 1
    assert isinstance(results[0], UnavailableError)
    assert not ref.alive
    with pytest.raises(ActorStopped):
        ref.cast("ping")
    with pytest.raises(ActorStopped):
        await ref.call("ping")


async def test_on_stop_runs_on_graceful_stop_only(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    graceful = Worker("graceful", journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(graceful.run)
        assert await graceful.ref.call("exit") == "bye"  # stop_self: normal exit
    crashing = Worker("crashing", journal)
    with pytest.RaisesGroup(Boom):
        async with trio.open_nursery() as nursery:
            await nursery.start(crashing.run)
            crashing.ref.cast("crash")
    assert journal.order("on_stop") == ["graceful"]
    assert journal.order("exited") == ["graceful", "crashing"]


async def test_helper_task_crash_crashes_the_actor(autojump_clock: trio.abc.Clock) -> None:
    class WithHelper(Actor[Any]):
        async def on_start(self) -> None:
            self.nursery.start_soon(self.helper)

        async def helper(self) -> None:
            await trio.sleep(3)
            raise Boom("helper died")

        async def handle(self, msg: Any) -> Any:
            await trio.sleep(10)

    actor = WithHelper()
    caught: list[BaseException] = []

    async def caller() -> None:
        try:
            await actor.ref.call("work", timeout=100)
        except ActorCrashed as error:
            caught.append(error)

    with pytest.RaisesGroup(Boom):  # run() re-raises Boom itself, not a nested group
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            nursery.start_soon(caller)
    assert trio.current_time() == pytest.approx(3)
    assert len(caught) == 1


async def test_alive_and_depth(autojump_clock: trio.abc.Clock) -> None:
    worker = Worker("w", Journal(), start_delay=1)
    ref = worker.ref
    assert not ref.alive
    assert ref.name == "Worker"
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        assert ref.alive
        assert ref.mailbox_depth == 0
        worker.request_stop()
    assert not ref.alive
    assert ref.mailbox_depth == 0


async def test_timeouts_of_different_lengths_fire_on_time(autojump_clock: trio.abc.Clock) -> None:
    worker = Worker("w", Journal())
    fired: dict[str, float] = {}

    async def call_with(label: str, timeout: float) -> None:
        try:
            await worker.ref.call(("sleep", 100), timeout=timeout)
        except CallTimeout:
            fired[label] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        nursery.start_soon(call_with, "long", 10.0)
        await settle()
        nursery.start_soon(call_with, "short", 2.0)  # earlier than the pending deadline
        await settle()
        nursery.start_soon(call_with, "middle", 5.0)
        await trio.sleep(11)
        nursery.cancel_scope.cancel()
    assert fired == {"short": 2.0, "middle": 5.0, "long": 10.0}


async def test_answered_calls_do_not_pile_up_in_the_deadline_keeper(
    autojump_clock: trio.abc.Clock,
) -> None:
    from volant.actors.timeouts import _KEEPER

    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        for _ in range(20_000):
            await actor.ref.call(1, timeout=60)
        assert await actor.ref.call("get") == 20_000
        assert len(_KEEPER.get()._heap) <= 2 * 4096
        actor.request_stop()
    worker = Worker("w", Journal())
    async with trio.open_nursery() as nursery:  # the same keeper still keeps time
        await nursery.start(worker.run)
        start = trio.current_time()
        with pytest.raises(CallTimeout):
            await worker.ref.call(("sleep", 10), timeout=1)
        assert trio.current_time() - start == pytest.approx(1)
        nursery.cancel_scope.cancel()
