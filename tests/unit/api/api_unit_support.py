"""Helpers for the API unit tests: apps built from a test config, a live EventBus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from quart_trio import QuartTrio

from volant.api.app import create_app
from volant.api.context import ApiContext
from volant.config import load_config
from volant.orchestrator.events import EventBus

MakeApp = Callable[..., QuartTrio]


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    def make(env: dict[str, str] | None = None,
             services: dict[str, Any] | None = None) -> QuartTrio:
        cfg = load_config(environ={
            "VOLANT_STATE_DIR": str(tmp_path / "state"),
            "VOLANT_RUNTIME_DIR": str(tmp_path / "run"),
            **(env or {}),
        })
        return create_app(ApiContext(config=cfg, version="test", services=dict(services or {})))

    return make


@pytest.fixture
async def bus(nursery: trio.Nursery, tmp_path: Path) -> EventBus:
    event_bus = EventBus(tmp_path / "events")
    await nursery.start(event_bus.run)
    return event_bus


async def settle(bus: EventBus, timeout: float = 5.0) -> None:
    """Wait until everything published so far is durable and delivered.

    (``bus.ref.call("flush")`` is not a barrier: it returns at once when the commit
    loop has already taken the pending batch and is still writing it.)
    """
    target = bus._seq
    with trio.fail_after(timeout):
        while bus.last_seq < target:
            await trio.sleep(0.005)
