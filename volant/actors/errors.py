"""Errors raised by the actor runtime.

They extend the shared ``VolantError`` hierarchy so an API handler can turn them
into HTTP answers without knowing about actors: a full mailbox is back-pressure
(429), a stopped actor is unavailable (503), a timeout is 504.
"""

from __future__ import annotations

from volant.errors import BackPressureError, UnavailableError, VolantError


class MailboxFull(BackPressureError):
    """The actor's bounded mailbox is full; ``cast``/``call`` never block on it."""


class CallTimeout(VolantError):
    """``call`` got no reply within its timeout (the message may still be handled later)."""

    status = 504


class ActorStopped(UnavailableError):
    """The actor is terminated for good: its mailbox is closed."""


class ActorCrashed(VolantError):
    """The actor crashed while handling this call; ``__cause__`` is the original error."""

    status = 500


class SupervisorEscalation(Exception):
    """Restart intensity exceeded: the supervisor stopped its children and gives up.

    Deliberately *not* a ``VolantError``: it is a crash of the supervisor, which its
    parent handles like any other child crash.
    """

    def __init__(
        self, supervisor: str, *, child: str = "", intensity: int = 0, period: float = 0.0
    ) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: more than {intensity} restart(s) in "
            f"{period:g}s (last crash: child {child!r})"
        )
        self.supervisor = supervisor
        self.child = child
        self.intensity = intensity
        self.period = period
