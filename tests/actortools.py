"""Helpers for tests that run one actor by hand in a nursery."""

from __future__ import annotations

from typing import Any

import trio


async def run_until_stopped(actor: Any, nursery: trio.Nursery) -> trio.Event:
    """Start ``actor`` in ``nursery`` (returns once it has started); the event is set
    when its ``run`` returns, however it ends."""
    done = trio.Event()

    async def runner(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await actor.run(task_status=task_status)
        finally:
            done.set()

    await nursery.start(runner)
    return done
