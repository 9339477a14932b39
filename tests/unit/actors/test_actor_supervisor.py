"""Supervisor semantics, each in its own test, all under MockClock (simulated time)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
import trio
from actor_helpers import Boom, Journal, Stubborn, Worker, settle, worker_spec

from volant.actors import (
    ActorStopped,
    Backoff,
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    actor_child,
)
from volant.errors import NotFoundError, UnavailableError, ValidationError


@asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield nursery
        supervisor.request_stop()


def three_workers(journal: Journal, middle: Restart = Restart.PERMANENT) -> list[ChildSpec]:
    return [
        worker_spec("a", journal),
        worker_spec("b", journal, restart=middle),
        worker_spec("c", journal),
    ]


EXPECTED_STARTS = {
    Strategy.ONE_FOR_ONE: {"a": 1, "b": 2, "c": 1},
    Strategy.ONE_FOR_ALL: {"a": 2, "b": 2, "c": 2},
    Strategy.REST_FOR_ONE: {"a": 1, "b": 2, "c": 2},
}


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("restart", list(Restart))
@pytest.mark.parametrize("abnormal", [True, False], ids=["crash", "normal-exit"])
async def test_strategy_and_restart_type(
    autojump_clock: trio.abc.Clock, strategy: Strategy, restart: Restart, abnormal: bool
) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s",
        three_workers(journal, middle=restart),
        strategy=strategy,
        intensity=5,
        on_event=journal.on_event,
    )
    async with running(supervisor):
        ref = supervisor.ref("b")
        ref.cast("crash" if abnormal else "exit")
        await settle()
        restarted = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and abnormal)
        states = {info.id: info.state for info in supervisor.which_children()}
        assert ("child_crashed" if abnormal else "child_exited") in journal.kinds("b")
        if restarted:
            assert dict(journal.starts) == EXPECTED_STARTS[strategy]
            assert set(states.values()) == {"running"}
            assert await ref.call("incarnation") == 2  # same ref, new instance
        else:
            assert dict(journal.starts) == {"a": 1, "b": 1, "c": 1}  # siblings untouched
            assert states == {"a": "running", "b": "terminated", "c": "running"}
            assert "child_restarting" not in journal.kinds()
            with pytest.raises(ActorStopped):
                ref.cast("ping")


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_temporary_sibling_is_not_restarted_by_group_restart(
    autojump_clock: trio.abc.Clock, strategy: Strategy
) -> None:
    journal = Journal()
    children = [
        worker_spec("a", journal),
        worker_spec("t", journal, restart=Restart.TEMPORARY),
        worker_spec("c", journal),
    ]
    supervisor = Supervisor("s", children, strategy=strategy, intensity=5)
    async with running(supervisor):
        supervisor.ref("a").cast("crash")
        await settle()
        states = {info.id: info.state for info in supervisor.which_children()}
        assert states == {"a": "running", "t": "terminated", "c": "running"}
        assert journal.starts["t"] == 1
        assert journal.starts["c"] == 2
        assert journal.order("exited")[:3] == ["a", "c", "t"]  # crash, then reverse order


async def test_mailbox_survives_restart_and_calls_wait_through_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s",
        [worker_spec("w", journal)],
        intensity=5,
        backoff=Backoff(initial=1.0, jitter=0.0),
    )
    answers: list[tuple[Any, float]] = []

    async def ask() -> None:
        answers.append((await supervisor.ref("w").call("incarnation"), trio.current_time()))

    async with running(supervisor) as nursery:
        ref = supervisor.ref("w")
        ref.cast("crash")
        for _ in range(3):
            nursery.start_soon(ask)
        await settle()
        assert not ref.alive  # waiting out the 1 s backoff
        await trio.sleep(2)
        # Queued messages were handled by the restarted instance, after the backoff;
        # the message being handled at the crash was not redelivered (no second crash).
        assert [value for value, _ in answers] == [2, 2, 2]
        assert [when for _, when in answers] == [pytest.approx(1.0)] * 3
        assert journal.starts["w"] == 2
        assert ref.alive


async def test_restarts_within_intensity_do_not_escalate(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = Supervisor("s", [worker_spec("w", journal)], intensity=2, period=5)
    async with running(supervisor):
        for _ in range(2):
            supervisor.ref("w").cast("crash")
            await trio.sleep(1)
        assert supervisor.which_children()[0].restart_count == 2
        assert supervisor.which_children()[0].state == "running"


async def test_intensity_exceeded_escalates_after_stopping_children_in_reverse(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s", three_workers(journal), intensity=1, period=5, on_event=journal.on_event
    )
    with pytest.RaisesGroup(SupervisorEscalation):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            supervisor.ref("b").cast("crash")
            await trio.sleep(1)
            supervisor.ref("b").cast("crash")
            await trio.sleep(1)
            pytest.fail("the supervisor should have escalated")
    assert journal.order("exited") == ["b", "b", "c", "a"]
    assert journal.kinds()[-1] == "escalated"
    assert [info.state for info in supervisor.which_children()] == ["terminated"] * 3


async def test_crashes_spaced_beyond_the_period_never_escalate(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    supervisor = Supervisor("s", [worker_spec("w", journal)], intensity=1, period=5)
    async with running(supervisor):
        for _ in range(10):
            supervisor.ref("w").cast("crash")
            await trio.sleep(6)
        assert journal.starts["w"] == 11


async def test_nested_supervisor_escalates_and_parent_restarts_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    inner = Supervisor("inner", [worker_spec("leaf", journal)], intensity=0)
    outer = Supervisor(
        "outer",
        [ChildSpec("inner", lambda: inner), worker_spec("sibling", journal)],
        intensity=3,
        on_event=journal.on_event,
    )
    async with running(outer):
        leaf = inner.ref("leaf")
        leaf.cast("crash")  # intensity 0: inner gives up at once
        await settle()
        crashed = [e for e in journal.events if e.kind == "child_crashed"]
        assert [e.child for e in crashed] == ["inner"]
        assert "SupervisorEscalation" in (crashed[0].error or "")
        assert journal.starts == {"leaf": 2, "sibling": 1}
        assert await leaf.call("incarnation") == 2  # refs survive the supervisor's restart


async def test_supervisor_whose_child_never_starts_escalates_on_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s", [worker_spec("bad", journal, crash_on_start=True)], intensity=2, period=5
    )
    with pytest.RaisesGroup(SupervisorEscalation):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
    assert journal.order("starting") == ["bad"] * 3


async def test_backoff_grows_with_jitter_and_resets(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s",
        [worker_spec("w", journal)],
        intensity=100,
        period=1,
        backoff=Backoff(initial=1, maximum=8, multiplier=2, jitter=0.1, reset_after=30),
        rng=random.Random(7),
        on_event=journal.on_event,
    )

    async def crash_and_measure() -> float:
        ref = supervisor.ref("w")
        crashed_at = trio.current_time()
        ref.cast("crash")
        await ref.call("ping", timeout=100)  # queued: answered by the next instance
        restarted_at: float = journal.times("started", "w")[-1]
        return restarted_at - crashed_at

    async with running(supervisor):
        observed = [await crash_and_measure() for _ in range(6)]
        announced = [e.delay for e in journal.events if e.kind == "child_restarting"]
        assert observed == pytest.approx(announced, abs=1e-3)  # restart = crash + delay
        for delay, base in zip(observed, [1, 2, 4, 8, 8, 8], strict=True):
            assert base * 0.9 <= delay <= base * 1.1
        assert any(abs(d - b) > 1e-6 for d, b in zip(observed, [1, 2, 4, 8, 8, 8], strict=True))
        await trio.sleep(31)  # up longer than reset_after
        assert 0.9 <= await crash_and_measure() <= 1.1


async def test_request_stop_interrupts_a_pending_backoff(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s",
        three_workers(journal),
        strategy=Strategy.ONE_FOR_ALL,
        intensity=5,
        backoff=Backoff(initial=100, jitter=0),
    )
    async with running(supervisor):
        supervisor.ref("a").cast("crash")
        await trio.sleep(1)
    assert trio.current_time() == pytest.approx(1)
    assert journal.starts == {"a": 1, "b": 1, "c": 1}


async def test_ordered_start_waits_for_on_start(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    children = [
        worker_spec("a", journal, start_delay=5),
        worker_spec("b", journal, start_delay=2),
        worker_spec("c", journal),
    ]
    async with running(Supervisor("s", children)):
        assert trio.current_time() == pytest.approx(7)  # run() reported started after all
    sequence = [(kind, who) for kind, who, _ in journal.entries if kind in ("starting", "started")]
    assert sequence == [
        ("starting", "a"),
        ("started", "a"),
        ("starting", "b"),
        ("started", "b"),
        ("starting", "c"),
        ("started", "c"),
    ]


@pytest.mark.parametrize("failures", [1, 2])
@pytest.mark.parametrize("strategy", list(Strategy))
async def test_dependants_wait_for_a_child_that_failed_to_start(
    autojump_clock: trio.abc.Clock, failures: int, strategy: Strategy
) -> None:
    journal = Journal()
    attempts = {"a": 0}

    def flaky() -> Worker:
        attempts["a"] += 1
        return Worker("a", journal, crash_on_start=attempts["a"] <= failures)

    supervisor = Supervisor(
        "s",
        [ChildSpec("a", flaky), worker_spec("b", journal), worker_spec("c", journal)],
        strategy=strategy,
        intensity=3,
    )
    async with running(supervisor):
        assert {info.state for info in supervisor.which_children()} == {"running"}
    sequence = [(kind, who) for kind, who, _ in journal.entries if kind in ("starting", "started")]
    assert sequence == [("starting", "a")] * (failures + 1) + [
        ("started", "a"),
        ("starting", "b"),
        ("started", "b"),
        ("starting", "c"),
        ("started", "c"),
    ]


async def test_shutdown_is_in_reverse_order(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    names = ["a", "b", "c", "d"]
    supervisor = Supervisor("s", [worker_spec(n, journal) for n in names])
    async with running(supervisor):
        pass
    assert journal.order("started") == names
    assert journal.order("on_stop") == names[::-1]
    assert journal.order("exited") == names[::-1]


async def test_shutdown_timeout_forces_a_child_that_ignores_the_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = Journal()
    stubborn = Stubborn("s", journal)
    supervisor = Supervisor(
        "sup",
        [
            worker_spec("a", journal),
            ChildSpec("s", lambda: stubborn, shutdown_timeout=2),
            worker_spec("c", journal, shutdown_timeout=2),
        ],
        on_event=journal.on_event,
    )
    async with running(supervisor):
        pass
    exits = [(who, t) for kind, who, t in journal.entries if kind == "exited"]
    assert exits == [("c", 0), ("s", pytest.approx(2)), ("a", pytest.approx(2))]
    assert stubborn.stop_requests == 1
    terminated = {e.child: e.error for e in journal.events if e.kind == "child_terminated"}
    assert terminated == {"c": None, "s": "killed after shutdown timeout", "a": None}


async def test_crash_is_logged_and_reported_not_raised(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    with structlog.testing.capture_logs() as logs:
        supervisor = Supervisor("sup", three_workers(journal), on_event=journal.on_event)
        async with running(supervisor):
            supervisor.ref("b").cast("crash")
            await settle()
    crash_logs = [entry for entry in logs if entry["event"] == "child crashed"]
    assert len(crash_logs) == 1
    assert crash_logs[0]["actor"] == "b"
    assert crash_logs[0]["log_level"] == "error"
    assert isinstance(crash_logs[0]["exc_info"], Boom)
    crashed = [e for e in journal.events if e.kind == "child_crashed"]
    assert [(e.supervisor, e.child) for e in crashed] == [("sup", "b")]
    assert "b crashed" in (crashed[0].error or "")
    restarting = [e for e in journal.events if e.kind == "child_restarting"]
    assert restarting[0].restart_count == 1


async def test_ref_lookup_errors(autojump_clock: trio.abc.Clock) -> None:
    journal = Journal()
    supervisor = Supervisor(
        "s",
        [
            actor_child("w", lambda: Worker("w", journal)),
            ChildSpec("x", lambda: Stubborn("x", journal)),
        ],
    )
    with pytest.raises(UnavailableError):
        supervisor.ref("w")  # not started yet
    async with running(supervisor):
        assert await supervisor.ref("w").call("ping") == "pong"
        with pytest.raises(NotFoundError):
            supervisor.ref("nope")
        with pytest.raises(NotFoundError):
            supervisor.ref("x")  # not an actor


def test_duplicate_child_ids_are_rejected() -> None:
    journal = Journal()
    with pytest.raises(ValidationError):
        Supervisor("s", [worker_spec("a", journal), worker_spec("a", journal)])


def test_backoff_formula_and_determinism() -> None:
    backoff = Backoff(initial=0.5, maximum=10, multiplier=3, jitter=0.2)
    assert [backoff.base_delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]
    assert backoff.base_delay(10_000) == 10
    assert Backoff().delay(3, random.Random(1)) == 0.0  # default: restart at once
    first = [backoff.delay(n, random.Random(42)) for n in range(1, 6)]
    again = [backoff.delay(n, random.Random(42)) for n in range(1, 6)]
    assert first == again
    rng = random.Random(3)
    samples = [backoff.delay(2, rng) for _ in range(200)]
    assert all(1.5 * 0.8 <= s <= 1.5 * 1.2 for s in samples)
    assert max(samples) - min(samples) > 0.3  # the jitter is actually applied
