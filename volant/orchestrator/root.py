"""The root of the supervision tree (DESIGN.md section 3)."""

from __future__ import annotations

import trio

from volant import __version__
from volant.api.app import create_app
from volant.api.context import ApiContext
from volant.api.server import serve_api
from volant.config import Config
from volant.logging import get_logger

log = get_logger("volant.root")


async def run_root(cfg: Config, stop: trio.Event) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    ctx = ApiContext(config=cfg, version=__version__)
    app = create_app(ctx)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_api, app, cfg, stop)
        log.info("api listening", binds=binds)
