"""Helpers: a real EventBus and the app served by hypercorn on a free loopback port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from quart_trio import QuartTrio

from volant.api.app import create_app
from volant.api.context import ApiContext
from volant.api.server import serve_api
from volant.config import load_config
from volant.orchestrator.events import EventBus

API_KEY = "integration-secret"


@pytest.fixture
async def bus(nursery: trio.Nursery, tmp_path: Path) -> EventBus:
    event_bus = EventBus(tmp_path / "events")
    await nursery.start(event_bus.run)
    return event_bus


def build_app(tmp_path: Path, env: dict[str, str] | None = None,
              services: dict[str, Any] | None = None) -> QuartTrio:
    cfg = load_config(environ={
        "VOLANT_STATE_DIR": str(tmp_path / "state"),
        "VOLANT_RUNTIME_DIR": str(tmp_path / "run"),
        "VOLANT_API_LISTEN": "127.0.0.1:0",
        **(env or {}),
    })
    return create_app(ApiContext(config=cfg, version="test", services=dict(services or {})))


ServeApp = Callable[[QuartTrio], Awaitable[str]]


@pytest.fixture
def serve(nursery: trio.Nursery) -> ServeApp:
    """Serve an app with the daemon's own hypercorn settings; returns its base URL."""

    async def start(app: QuartTrio) -> str:
        ctx: ApiContext = app.config["VOLANT_CONTEXT"]
        shutdown = trio.Event()
        binds: list[str] = await nursery.start(serve_api, app, ctx.config, shutdown)
        return binds[0]

    return start


async def settle(bus: EventBus, timeout: float = 5.0) -> None:
    """Wait until everything published so far is durable and delivered.

    (``bus.ref.call("flush")`` is not a barrier: it returns at once when the commit
    loop has already taken the pending batch and is still writing it.)
    """
    target = bus._seq
    with trio.fail_after(timeout):
        while bus.last_seq < target:
            await trio.sleep(0.005)
