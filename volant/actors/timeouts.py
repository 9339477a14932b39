"""Call deadlines kept by one system task per trio run instead of a cancel scope per call.

A ``trio.move_on_after`` around every ``call`` cost about half of the round-trip rate
(registering and removing a deadline in trio's heap, twice per message).  Here a call
pushes ``(deadline, reply)`` on a heap and waits on its reply alone; one keeper task
sleeps until the earliest deadline and fails the replies still open by then.  Calls
usually share one timeout, so new deadlines come later than the one the keeper sleeps
for and it is woken only when they expire (about once per timeout period).
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio

_MIN_PRUNE = 4096
_KEEPER: trio.lowlevel.RunVar[_DeadlineKeeper] = trio.lowlevel.RunVar("volant_call_deadlines")


class Expirable(Protocol):
    """What the keeper needs from a pending reply."""

    @property
    def done(self) -> bool: ...

    def expire(self) -> None: ...


class _DeadlineKeeper:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Expirable]] = []
        self._order = itertools.count()
        self._sleeping_until = math.inf
        self._sleep: trio.CancelScope | None = None
        self._prune_at = _MIN_PRUNE

    def add(self, deadline: float, pending: Expirable) -> None:
        heap = self._heap
        if len(heap) >= self._prune_at:
            # Answered calls stay in the heap until their deadline comes up; drop them
            # in bulk so memory stays proportional to the calls actually waiting.
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
            self._prune_at = max(_MIN_PRUNE, 2 * len(heap))
        heapq.heappush(heap, (deadline, next(self._order), pending))
        if deadline < self._sleeping_until and self._sleep is not None:
            self._sleep.cancel()  # rare: an earlier deadline than the one we wait for

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and (heap[0][2].done or heap[0][0] <= now):
                _, _, pending = heapq.heappop(heap)
                if not pending.done:
                    pending.expire()
            target = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=target) as scope:
                self._sleep = scope
                self._sleeping_until = target
                await trio.sleep_forever()
            self._sleep = None
            self._sleeping_until = math.inf


def expire_at(deadline: float, pending: Expirable) -> None:
    """Call ``pending.expire()`` at ``deadline`` (trio time) unless it is done by then."""
    if deadline == math.inf:
        return
    try:
        keeper = _KEEPER.get()
    except LookupError:
        keeper = _DeadlineKeeper()
        _KEEPER.set(keeper)
        trio.lowlevel.spawn_system_task(keeper.run, name="volant.actors.call-deadlines")
    keeper.add(deadline, pending)
