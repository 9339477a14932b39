"""Auth over a real server: every route of the served OpenAPI document, and the socket peer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from api_server_support import API_KEY, ServeApp, build_app
from quart import websocket
from trio_websocket import ConnectionRejected, open_websocket_url

from volant.orchestrator.events import EventBus

WRONG = "not-the-key"


def _concrete(path: str) -> str:
    """Fill every ``{param}`` with a harmless value."""
    out = path
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        out = out[:start] + "x" + out[end + 1:]
    return out


async def _http_status(client: httpx.AsyncClient, method: str, url: str,
                       headers: dict[str, str]) -> int:
    # Streamed, so an SSE route answers with its status without us reading forever.
    async with client.stream(method.upper(), url, headers=headers) as resp:
        return resp.status_code


async def _ws_status(url: str, headers: dict[str, str]) -> int:
    ws_url = url.replace("http://", "ws://", 1)
    try:
        with trio.fail_after(10):
            extra = [(k.encode(), v.encode()) for k, v in headers.items()]
            async with open_websocket_url(ws_url, extra_headers=extra):
                return 101
    except ConnectionRejected as rejected:
        return int(rejected.status_code or 0)


async def test_every_documented_route_enforces_the_key(
        tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    app = build_app(tmp_path, {"VOLANT_API_KEY": API_KEY}, {"events": bus})

    @app.websocket("/ws/v1/test/<name>/echo")
    async def echo(name: str) -> None:
        await websocket.accept()

    url = await serve(app)
    async with httpx.AsyncClient(timeout=15) as client:
        doc_resp = await client.get(f"{url}/openapi", headers={"X-Volant-API-Key": API_KEY})
        assert doc_resp.status_code == 200
        document: dict[str, Any] = doc_resp.json()
        checked = 0
        for path, operations in document["paths"].items():
            target = url + _concrete(path)
            for method, operation in operations.items():
                is_ws = bool(operation.get("x-websocket"))
                public = operation.get("security") == []

                async def status(headers: dict[str, str], method: str = method,
                                 target: str = target, is_ws: bool = is_ws) -> int:
                    if is_ws:
                        return await _ws_status(target, headers)
                    return await _http_status(client, method, target, headers)

                label = f"{method.upper()} {path}"
                if public:
                    assert path == "/healthz", f"{label} must not be public"
                    assert await status({}) == 200, label
                    continue
                assert await status({}) == 401, label
                assert await status({"X-Volant-API-Key": WRONG}) == 401, label
                assert await status({"Authorization": f"Bearer {WRONG}"}) == 401, label
                for good in ({"X-Volant-API-Key": API_KEY},
                             {"Authorization": f"Bearer {API_KEY}"}):
                    got = await status(good)
                    assert got not in (401, 403), (label, good, got)
                checked += 1
    assert checked >= 7  # our own routes at least; the resource modules add theirs
    assert "/ws/v1/test/{name}/echo" in document["paths"]


async def test_websocket_query_key_over_the_wire(
        tmp_path: Path, serve: ServeApp) -> None:
    app = build_app(tmp_path, {"VOLANT_API_KEY": API_KEY})

    @app.websocket("/ws/v1/test/echo")
    async def echo() -> None:
        await websocket.accept()
        await websocket.send(await websocket.receive())

    url = (await serve(app)).replace("http://", "ws://")
    async with open_websocket_url(f"{url}/ws/v1/test/echo?api_key={API_KEY}") as conn:
        await conn.send_message("hello")
        assert await conn.get_message() == "hello"
    assert await _ws_status(f"{url}/ws/v1/test/echo?api_key={WRONG}".replace("ws://", "http://"),
                            {}) == 401
    evil = {"Origin": "https://evil.example"}
    assert await _ws_status(f"{url}/ws/v1/test/echo".replace("ws://", "http://"),
                            {"X-Volant-API-Key": API_KEY, **evil}) == 403


async def test_cidr_judges_the_socket_peer_not_a_spoofed_header(
        tmp_path: Path, serve: ServeApp) -> None:
    denied_url = await serve(build_app(tmp_path, {"VOLANT_API_ALLOW_CIDR": "10.0.0.0/8"}))
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(f"{denied_url}/api/v1/system/info",
                                headers={"X-Forwarded-For": "10.0.0.1", "X-Real-IP": "10.0.0.1"})
        assert resp.status_code == 403
        assert resp.json() == {"error": "access denied"}

        proxied_url = await serve(build_app(tmp_path, {
            "VOLANT_API_ALLOW_CIDR": "10.0.0.0/8", "VOLANT_TRUSTED_PROXIES": "127.0.0.1/32"}))
        ok = await client.get(f"{proxied_url}/api/v1/system/info",
                              headers={"X-Forwarded-For": "10.0.0.1"})
        assert ok.status_code == 200
        direct = await client.get(f"{proxied_url}/api/v1/system/info")
        assert direct.status_code == 403

        loopback_url = await serve(build_app(tmp_path, {"VOLANT_API_ALLOW_CIDR": "127.0.0.0/8"}))
        assert (await client.get(f"{loopback_url}/api/v1/system/info")).status_code == 200
