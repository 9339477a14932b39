"""write_until_stored: a fact's write waits out a full disk; a bug is raised at once."""

from __future__ import annotations

import pytest
import trio

from volant.store import StoreFullError, StoreWriteError
from volant.store.retry import MAX_DELAY, write_until_stored


async def test_retries_until_the_write_lands(autojump_clock: trio.abc.Clock) -> None:
    attempts = 0

    def write() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 9:
            raise (StoreFullError if attempts % 2 else StoreWriteError)("no room")

    start = trio.current_time()
    await write_until_stored(write, what="vms/x/state.json")
    assert attempts == 9
    # Backing off from 50 ms, doubling, capped: 0.05+0.1+...+1.6 then 2.0 twice.
    assert trio.current_time() - start == pytest.approx(3.15 + 2 * MAX_DELAY, abs=0.01)


async def test_other_errors_are_not_retried(autojump_clock: trio.abc.Clock) -> None:
    attempts = 0

    def write() -> None:
        nonlocal attempts
        attempts += 1
        raise TypeError("not serialisable")

    with pytest.raises(TypeError):
        await write_until_stored(write, what="vms/x/state.json")
    assert attempts == 1


async def test_cancellation_ends_the_wait(autojump_clock: trio.abc.Clock) -> None:
    def write() -> None:
        raise StoreFullError("no room")

    with trio.move_on_after(30) as scope:
        await write_until_stored(write, what="vms/x/state.json")
    assert scope.cancelled_caught
