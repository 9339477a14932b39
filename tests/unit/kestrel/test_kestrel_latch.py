"""The thread primitives kestrel uses before ``threading`` is imported, and the log ring."""

from __future__ import annotations

import threading
import time

from kestrel.latch import Latch, Wakeup
from kestrel.logring import LogRing


def test_latch_wakes_every_waiter_and_stays_set() -> None:
    latch = Latch()
    assert not latch.wait(0.01)
    woken: list[bool] = []
    waiters = [threading.Thread(target=lambda: woken.append(latch.wait(5))) for _ in range(8)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.05)
    assert woken == []
    setters = [threading.Thread(target=latch.set) for _ in range(4)]  # concurrent sets are fine
    for setter in setters:
        setter.start()
    for thread in waiters + setters:
        thread.join(5)
    assert woken == [True] * 8
    assert latch.is_set() and latch.wait() and latch.wait(0)


def test_latch_set_inside_a_set_does_not_deadlock() -> None:
    """A signal handler may run set() while the main thread is inside set()."""
    latch = Latch()
    latch.set()
    latch.set()
    assert latch.wait(0)


def test_wakeup_coalesces_notifications() -> None:
    wakeup = Wakeup()
    assert not wakeup.wait(0.01)
    wakeup.notify()
    wakeup.notify()
    assert wakeup.wait(0.01)
    assert not wakeup.wait(0.01)  # two notifications before a wait count as one


def test_a_slow_subscriber_loses_its_oldest_lines_and_is_told() -> None:
    ring = LogRing(5)
    subscription = ring.subscribe()
    subscription.maxsize = 3
    for index in range(5):
        ring.append("stdout", f"line {index}")
    assert [line.line for line in ring.tail()] == [f"line {i}" for i in range(5)]
    assert subscription.dropped == 2
    got = [subscription.get(0.1) for _ in range(4)]
    assert [line.line if line else None for line in got] == ["line 2", "line 3", "line 4", None]
    ring.append("stderr", "late")
    assert [line.line for line in ring.tail(2)] == ["line 4", "late"]
    ring.unsubscribe(subscription)
    assert ring.subscriber_count == 0


def test_a_waiting_subscriber_gets_a_line_from_another_thread() -> None:
    ring = LogRing(10)
    subscription = ring.subscribe()
    threading.Timer(0.05, lambda: ring.append("stdout", "hello")).start()
    started = time.monotonic()
    line = subscription.get(5)
    assert line is not None and line.line == "hello"
    assert time.monotonic() - started < 2
