"""Child specifications and the value types supervisors share."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs
import trio


@runtime_checkable
class Runnable(Protocol):
    """Anything a supervisor can run: ``Actor``, ``Supervisor``, ``DynamicSupervisor``.

    ``run`` calls ``task_status.started()`` once ready; returning normally is a normal
    exit, raising is a crash.  ``request_stop`` asks for a graceful, normal return.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def request_stop(self) -> None: ...


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit (an exception)
    TEMPORARY = "temporary"  # never restarted


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # restart only the child that exited
    ONE_FOR_ALL = "one_for_all"  # stop all others, restart all
    REST_FOR_ONE = "rest_for_one"  # stop and restart the children started after it, and it


@attrs.frozen
class ChildSpec:
    """How to (re)create one child. ``factory`` is called for every (re)start."""

    id: str
    factory: Callable[[], Runnable]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0


def actor_child(
    id: str,
    factory: Callable[[], Runnable],
    *,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = 5.0,
) -> ChildSpec:
    """Convenience spelling of ``ChildSpec`` for an actor child."""
    return ChildSpec(id=id, factory=factory, restart=restart, shutdown_timeout=shutdown_timeout)


@attrs.frozen
class Backoff:
    """Delay before the n-th consecutive restart: ``initial * multiplier**(n-1)``.

    Capped at ``maximum``, then jittered by up to ``±jitter`` (a fraction) so that
    many children crashing together do not restart in lockstep.  The count of
    consecutive restarts resets once a child stayed up ``reset_after`` seconds.
    """

    initial: float = 0.0
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1
    reset_after: float = 30.0

    def base_delay(self, attempt: int) -> float:
        if attempt <= 0 or self.initial <= 0:
            return 0.0
        # Multiply step by step and stop at the cap, so huge attempt counts cannot overflow.
        delay = self.initial
        for _ in range(attempt - 1):
            delay *= self.multiplier
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = self.base_delay(attempt)
        if base == 0.0 or self.jitter <= 0:
            return base
        return max(0.0, base * (1.0 + rng.uniform(-self.jitter, self.jitter)))


EVENT_KINDS = frozenset(
    {
        "child_started",
        "child_exited",
        "child_crashed",
        "child_restarting",
        "child_terminated",
        "escalated",
    }
)


@attrs.frozen
class SupervisorEvent:
    """Reported through ``on_event``: the orchestrator turns these into EventBus events."""

    kind: str = attrs.field(validator=attrs.validators.in_(EVENT_KINDS))
    supervisor: str
    child: str
    error: str | None = None
    restart_count: int = 0
    delay: float = 0.0


@attrs.frozen
class ChildInfo:
    """One row of ``which_children()``."""

    id: str
    state: str  # pending | starting | running | restarting | stopping | stopped | terminated
    restart_count: int
