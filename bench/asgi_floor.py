"""The floor under the API numbers: a bare ASGI app on volantd's own hypercorn config.

    .venv/bin/python bench/asgi_floor.py PORT

It answers every request with a small constant JSON body and does nothing else (no
Quart, no routing, no actors), served by hypercorn on trio exactly as volantd's API
is (``volant.api.server.hypercorn_config``). bench/api_load.py runs the same wrk load
against it right after volantd, so the report shows how much of the latency is the
HTTP server itself on this machine.
"""

from __future__ import annotations

import sys
from typing import Any

import trio
from hypercorn.trio import serve

from volant.api.server import hypercorn_config
from volant.config import load_config

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    port = int(sys.argv[1])
    cfg = load_config(environ={"VOLANT_API_LISTEN": f"127.0.0.1:{port}",
                               "VOLANT_LOG_LEVEL": "warning"})
    trio.run(serve, app, hypercorn_config(cfg))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
