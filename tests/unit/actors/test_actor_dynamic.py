"""DynamicSupervisor: children added and removed at run time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from actor_helpers import Boom, Journal, Stubborn, settle, worker_spec

from volant.actors import (
    ActorCrashed,
    ActorStopped,
    ChildSpec,
    DynamicSupervisor,
    Restart,
    SupervisorEscalation,
)
from volant.errors import BackPressureError, ConflictError, NotFoundError


@asynccontextmanager
async def running(supervisor: DynamicSupervisor) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield nursery
        supervisor.request_stop()


async def test_add_call_and_remove(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = DynamicSupervisor("vms", on_event=journal.on_event)
    async with running(supervisor):
        ref = await supervisor.start_child(worker_spec("web", journal, start_delay=2))
        assert ref is not None
        assert trio.current_time() == pytest.approx(2)  # returned once on_start finished
        assert "web" in supervisor
        assert await ref.call("ping") == "pong"
        assert supervisor.ref("web").name == "web"
        await supervisor.terminate_child("web")
        assert "web" not in supervisor
        assert journal.order("on_stop") == ["web"]
        with pytest.raises(ActorStopped):
            ref.cast("ping")
        with pytest.raises(NotFoundError):
            await supervisor.terminate_child("web")
    assert journal.kinds("web") == ["child_started", "child_terminated"]


async def test_duplicate_id_is_a_conflict(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = DynamicSupervisor("vms")
    async with running(supervisor):
        await supervisor.start_child(worker_spec("web", journal))
        with pytest.raises(ConflictError) as excinfo:
            await supervisor.start_child(worker_spec("web", journal))
        assert excinfo.value.status == 409
        assert journal.starts["web"] == 1


async def test_temporary_child_is_removed_when_it_exits(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = DynamicSupervisor("vms", intensity=5)
    async with running(supervisor):
        crashing = await supervisor.start_child(
            worker_spec("t1", journal, restart=Restart.TEMPORARY)
        )
        leaving = await supervisor.start_child(
            worker_spec("t2", journal, restart=Restart.TEMPORARY)
        )
        permanent = await supervisor.start_child(worker_spec("p", journal))
        assert crashing is not None and leaving is not None and permanent is not None
        crashing.cast("crash")
        leaving.cast("exit")
        permanent.cast("crash")
        await settle()
        assert [info.id for info in supervisor.which_children()] == ["p"]
        assert journal.starts == {"t1": 1, "t2": 1, "p": 2}
        assert await permanent.call("incarnation") == 2


async def test_child_failing_to_start_is_reported_to_the_caller(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    supervisor = DynamicSupervisor("vms", intensity=0)
    async with running(supervisor):
        with pytest.raises(ActorCrashed) as excinfo:
            await supervisor.start_child(worker_spec("bad", journal, crash_on_start=True))
        assert isinstance(excinfo.value.__cause__, Boom)
        assert "bad" not in supervisor
        await settle()
        # Not counted as a restart: intensity 0 would otherwise have escalated.
        assert await supervisor.start_child(worker_spec("good", journal)) is not None


async def test_max_children(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = DynamicSupervisor("vms", max_children=2)
    async with running(supervisor):
        await supervisor.start_child(worker_spec("a", journal))
        await supervisor.start_child(worker_spec("b", journal))
        with pytest.raises(BackPressureError):
            await supervisor.start_child(worker_spec("c", journal))
        await supervisor.terminate_child("a")
        await supervisor.start_child(worker_spec("c", journal))
        assert [i.id for i in supervisor.which_children()] == ["b", "c"]


async def test_terminate_child_forces_after_timeout(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    stubborn = Stubborn("s", journal)
    supervisor = DynamicSupervisor("vms")
    async with running(supervisor):
        assert (
            await supervisor.start_child(ChildSpec("s", lambda: stubborn, shutdown_timeout=3))
            is None
        )
        await supervisor.terminate_child("s")
        assert trio.current_time() == pytest.approx(3)
        assert stubborn.stop_requests == 1
        assert journal.order("exited") == ["s"]
        assert "s" not in supervisor


async def test_start_child_requires_a_running_supervisor(autojump_clock: trio.abc.Clock) -> None:
    supervisor = DynamicSupervisor("vms")
    with pytest.raises(ActorStopped):
        await supervisor.start_child(worker_spec("a", Journal()))


async def test_dynamic_intensity_escalates_and_stops_children_in_reverse(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    supervisor = DynamicSupervisor("vms", intensity=1, period=10)
    with pytest.RaisesGroup(SupervisorEscalation):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            for name in ("a", "b", "c"):
                await supervisor.start_child(worker_spec(name, journal))
            supervisor.ref("a").cast("crash")
            await settle()
            supervisor.ref("a").cast("crash")
            await settle()
    assert journal.order("exited") == ["a", "a", "c", "b"]
    assert len(supervisor) == 0


async def test_restart_of_one_child_does_not_delay_others(autojump_clock: trio.abc.Clock) -> None:
    from volant.actors import Backoff

    journal = Journal()
    supervisor = DynamicSupervisor("vms", intensity=10, backoff=Backoff(initial=20, jitter=0))
    async with running(supervisor):
        slow = await supervisor.start_child(worker_spec("slow", journal))
        fast = await supervisor.start_child(worker_spec("fast", journal))
        assert slow is not None and fast is not None
        slow.cast("crash")
        await trio.sleep(1)
        fast.cast("crash")
        # Both wait their own 20 s backoff, concurrently: slow restarts at t=20, fast at 21.
        await trio.sleep(19.5)
        assert journal.starts == {"slow": 2, "fast": 1}
        await trio.sleep(1)
        assert journal.starts == {"slow": 2, "fast": 2}
