"""Property tests: random crash schedules and shutdowns, each run under MockClock."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio
import trio.testing
from actor_helpers import Journal, Worker
from hypothesis import given, settings
from hypothesis import strategies as st

from volant.actors import (
    ActorStopped,
    Backoff,
    ChildSpec,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
)


def run_simulated(main: Any) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def run_until_escalation(supervisor: Supervisor, driver: Any) -> bool:
    """Run ``supervisor`` with ``driver``; True if it escalated."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await driver()
            supervisor.request_stop()
    except BaseExceptionGroup as group:
        _, rest = group.split(SupervisorEscalation)
        if rest is not None:
            raise
        return True
    return False


class IgnoresStop(Worker):
    """Only a cancel after its shutdown timeout stops it."""

    def request_stop(self) -> None:
        pass


@settings(max_examples=50, deadline=None)
@given(
    intensity=st.integers(min_value=0, max_value=3),
    period=st.sampled_from([1.0, 2.5, 5.0, 10.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 7.0]), min_size=1, max_size=12),
    strategy=st.sampled_from(list(Strategy)),
    initial_backoff=st.sampled_from([0.0, 0.25]),
)
def test_crash_schedules_never_exceed_intensity_without_escalation(
    intensity: int,
    period: float,
    gaps: list[float],
    strategy: Strategy,
    initial_backoff: float,
) -> None:
    events: list[tuple[SupervisorEvent, float]] = []
    journal = Journal()
    supervisor = Supervisor(
        "s",
        [ChildSpec(name, partial(Worker, name, journal)) for name in ("a", "b", "c")],
        strategy=strategy,
        intensity=intensity,
        period=period,
        backoff=Backoff(initial=initial_backoff, jitter=0),
        on_event=lambda e: events.append((e, trio.current_time())),
    )
    outcome: dict[str, bool] = {}

    async def driver() -> None:
        for gap in gaps:
            await trio.sleep(gap)
            try:
                supervisor.ref("b").cast("crash")
            except ActorStopped:
                return
        await trio.sleep(1.0)  # let the last restart happen

    async def main() -> None:
        outcome["escalated"] = await run_until_escalation(supervisor, driver)

    run_simulated(main)

    crash_times = [t for e, t in events if e.kind == "child_crashed" and e.child == "b"]
    restarts = [t for e, t in events if e.kind == "child_restarting" and e.child == "b"]
    # The OTP rule, modelled directly: escalate at the first crash that makes more
    # than `intensity` restarts fall within `period` seconds.
    window: list[float] = []
    predicted: int | None = None
    for index, now in enumerate(crash_times):
        window = [t for t in window if now - t <= period] + [now]
        if len(window) > intensity:
            predicted = index
            break
    assert outcome["escalated"] == (predicted is not None)
    if predicted is not None:
        assert len(crash_times) == predicted + 1  # nothing ran after giving up
        assert [e.kind for e, _ in events][-1] == "escalated"
        assert len(restarts) == predicted
    else:
        assert len(restarts) == len(crash_times)
    for start in restarts:  # never more than `intensity` restarts inside any window
        assert sum(1 for t in restarts if start <= t <= start + period) <= intensity


@settings(max_examples=50, deadline=None)
@given(
    start_delays=st.lists(st.sampled_from([0.0, 0.5, 2.0]), min_size=1, max_size=6),
    ignores_stop=st.lists(st.booleans(), min_size=6, max_size=6),
    strategy=st.sampled_from(list(Strategy)),
    crashes=st.lists(st.integers(min_value=0, max_value=5), max_size=4),
)
def test_shutdown_order_is_reverse_of_start_order(
    start_delays: list[float],
    ignores_stop: list[bool],
    strategy: Strategy,
    crashes: list[int],
) -> None:
    journal = Journal()
    names = [f"c{i}" for i in range(len(start_delays))]

    def spec(index: int) -> ChildSpec:
        kind = IgnoresStop if ignores_stop[index] else Worker
        delay = start_delays[index]
        return ChildSpec(
            names[index],
            lambda: kind(names[index], journal, start_delay=delay),
            shutdown_timeout=1.5,
        )

    supervisor = Supervisor(
        "s", [spec(i) for i in range(len(names))], strategy=strategy, intensity=100
    )
    marks: dict[str, int] = {}

    async def driver() -> None:
        for target in crashes:
            supervisor.ref(names[target % len(names)]).cast("crash")
            await trio.sleep(20)  # every restart (and its on_start) is done
        marks["shutdown"] = len(journal.entries)

    async def main() -> None:
        assert not await run_until_escalation(supervisor, driver)

    run_simulated(main)

    stops = [who for kind, who, _ in journal.entries[marks["shutdown"] :] if kind == "exited"]
    assert stops == names[::-1]  # reverse of the (ordered) start sequence
    if strategy is not Strategy.ONE_FOR_ONE:
        # Group restarts preserve the order, so it is also the reverse of the latest starts.
        latest: dict[str, int] = {}
        for index, (kind, who, _) in enumerate(journal.entries):
            if kind == "started":
                latest[who] = index
        assert stops == sorted(latest, key=latest.__getitem__)[::-1]
