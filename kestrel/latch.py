"""A one-shot event on a bare ``_thread`` lock.

The agent's state that the API reads exists before the API listens, and importing
``threading`` there (functools, collections, weakref sets...) costs start-up time
under TCG. ``threading`` is used freely once the API is up.
"""

from __future__ import annotations

import _thread


def _release(lock: _thread.LockType) -> None:
    # contextlib.suppress would import contextlib before the API listens.
    try:  # noqa: SIM105
        lock.release()
    except RuntimeError:
        pass  # already released: nothing was waiting for this release


class Latch:
    """Set once, never cleared; any number of threads may wait for it.

    No lock guards set(): it is called from signal handlers, which run in the main
    thread between any two bytecodes, and must never wait for the thread they interrupt.
    """

    __slots__ = ("_gate", "_set")

    def __init__(self) -> None:
        self._set = False
        self._gate = _thread.allocate_lock()
        self._gate.acquire()  # held until set()

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        _release(self._gate)

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False when ``timeout`` seconds passed first.

        In the main thread the wait is interrupted by signals, so their Python
        handlers run while it waits."""
        if self._set:
            return True
        if self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            _release(self._gate)  # let the next waiter through
            return True
        return self._set


class Wakeup:
    """A binary "something changed" signal: notify() wakes one wait(), never queues more."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def notify(self) -> None:
        _release(self._lock)  # an unconsumed notification stays a single one

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=max(timeout, 0.0))
