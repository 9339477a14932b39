"""Serving the app with hypercorn on TCP (and optionally a Unix socket)."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from volant.config import Config


def hypercorn_config(cfg: Config) -> HypercornConfig:
    hc = HypercornConfig()
    host, port = cfg.listen_host, cfg.listen_port
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if cfg.api_unix_socket:
        hc.bind.append(f"unix:{cfg.api_unix_socket}")
    hc.accesslog = None
    hc.errorlog = "-"
    hc.loglevel = "WARNING"
    hc.graceful_timeout = 2.0  # open keep-alive and SSE connections get this long
    # A burst of new connections (hundreds of clients) must queue, not be dropped into
    # SYN retransmits (1 s, 3 s...): hypercorn's default backlog is 100.
    hc.backlog = 2048
    hc.keep_alive_timeout = 75.0
    # No read timeout: SSE and websocket clients are legitimately quiet for long periods.
    hc.read_timeout = None
    hc.websocket_ping_interval = 20.0
    return hc


async def serve_api(
    app: QuartTrio,
    cfg: Config,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; report the bound addresses once listening."""
    if cfg.api_unix_socket:
        sock = Path(cfg.api_unix_socket)
        sock.parent.mkdir(parents=True, exist_ok=True)
        if sock.is_socket():
            sock.unlink()
    await serve(app, hypercorn_config(cfg), shutdown_trigger=shutdown.wait, task_status=task_status)
    if cfg.api_unix_socket and os.path.exists(cfg.api_unix_socket):
        os.unlink(cfg.api_unix_socket)
