"""Auth and exposure: API key sources, CIDR on the socket peer, X-Forwarded-For, CORS."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from api_unit_support import MakeApp
from quart import websocket
from quart.testing import WebsocketResponseError
from quart_trio import QuartTrio

from volant.api.auth import ExposurePolicy, InvalidClientAddress
from volant.config import load_config

KEY = "s3cret-key"


def _policy(**env: str) -> ExposurePolicy:
    return ExposurePolicy(load_config(environ=env))


def _with_echo_websocket(app: QuartTrio) -> QuartTrio:
    @app.websocket("/ws/test/echo")
    async def echo() -> None:
        await websocket.accept()
        await websocket.send(await websocket.receive())

    return app


def _response_error(exc: BaseException) -> WebsocketResponseError | None:
    if isinstance(exc, WebsocketResponseError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _response_error(inner)
            if found is not None:
                return found
    return None


async def _handshake(client: Any, path: str, **kwargs: Any) -> int:
    """101 when the echo websocket works, else the HTTP status the handshake was denied with."""
    try:
        async with client.websocket(path, **kwargs) as ws:
            await ws.send("x")
            assert await ws.receive() == "x"
    except BaseException as exc:
        error = _response_error(exc)
        if error is None:
            raise
        return int(error.response.status_code)
    return 101


# -- the key --------------------------------------------------------------------------------

async def test_missing_and_wrong_key_are_401_with_upstream_message(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_KEY": KEY}).test_client()
    for headers in ({}, {"X-Volant-API-Key": "nope"}, {"Authorization": "Bearer nope"},
                    {"Authorization": f"Basic {KEY}"}, {"X-Volant-API-Key": ""}):
        resp = await client.get("/api/v1/system/info", headers=headers)
        assert resp.status_code == 401, headers
        assert await resp.get_json() == {"error": "invalid api key"}
        assert resp.headers["X-Request-Id"]


async def test_header_and_bearer_keys_are_accepted(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_KEY": KEY}).test_client()
    for headers in ({"X-Volant-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"},
                    {"Authorization": f"bearer  {KEY} "}):
        resp = await client.get("/api/v1/system/info", headers=headers)
        assert resp.status_code == 200, headers


async def test_query_key_is_refused_on_plain_http(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_KEY": KEY}).test_client()
    resp = await client.get("/api/v1/system/info", query_string={"api_key": KEY})
    assert resp.status_code == 401


async def test_query_key_is_accepted_on_a_websocket_handshake(make_app: MakeApp) -> None:
    client = _with_echo_websocket(make_app({"VOLANT_API_KEY": KEY})).test_client()
    async with client.websocket("/ws/test/echo", query_string={"api_key": KEY}) as ws:
        await ws.send("ping")
        assert await ws.receive() == "ping"
    assert await _handshake(client, "/ws/test/echo", query_string={"api_key": "bad"}) == 401
    assert await _handshake(client, "/ws/test/echo") == 401


async def test_healthz_needs_no_key_but_openapi_and_metrics_do(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_KEY": KEY}).test_client()
    assert (await client.get("/healthz")).status_code == 200
    for path in ("/openapi", "/openapi.json", "/metrics"):
        assert (await client.get(path)).status_code == 401, path
        assert (await client.get(path, headers={"X-Volant-API-Key": KEY})).status_code == 200


async def test_no_key_configured_means_open(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert (await client.get("/api/v1/system/info")).status_code == 200


# -- the allow list ---------------------------------------------------------------------------

def _peer(address: str) -> dict[str, Any]:
    return {"client": (address, 40000)}


async def test_cidr_denies_a_peer_outside_the_list(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_ALLOW_CIDR": "10.0.0.0/8, fd00::/8"}).test_client()
    denied = await client.get("/api/v1/system/info", scope_base=_peer("192.0.2.7"))
    assert denied.status_code == 403
    assert await denied.get_json() == {"error": "access denied"}
    assert (await client.get("/healthz", scope_base=_peer("192.0.2.7"))).status_code == 403
    allowed = await client.get("/api/v1/system/info", scope_base=_peer("10.1.2.3"))
    assert allowed.status_code == 200
    v6 = await client.get("/api/v1/system/info", scope_base=_peer("fd00::5"))
    assert v6.status_code == 200


async def test_spoofed_forwarded_for_from_untrusted_peer_does_not_bypass(
        make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_ALLOW_CIDR": "10.0.0.0/8"}).test_client()
    for spoof in ("10.0.0.1", "10.0.0.1, 10.0.0.2", "192.0.2.9, 10.0.0.1"):
        resp = await client.get("/api/v1/system/info", scope_base=_peer("192.0.2.7"),
                                headers={"X-Forwarded-For": spoof, "X-Real-IP": "10.0.0.1"})
        assert resp.status_code == 403, spoof


async def test_forwarded_for_from_trusted_proxy_is_honoured(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_API_ALLOW_CIDR": "10.0.0.0/8",
                       "VOLANT_TRUSTED_PROXIES": "192.0.2.0/28"}).test_client()
    proxy = _peer("192.0.2.1")
    ok = await client.get("/api/v1/system/info", scope_base=proxy,
                          headers={"X-Forwarded-For": "10.9.9.9"})
    assert ok.status_code == 200
    # Right-most untrusted hop decides; a client-written left part cannot help.
    spoof = await client.get("/api/v1/system/info", scope_base=proxy,
                             headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.4"})
    assert spoof.status_code == 403
    # The proxy itself, without a forwarded header, is judged by its own address.
    assert (await client.get("/api/v1/system/info", scope_base=proxy)).status_code == 403
    garbage = await client.get("/api/v1/system/info", scope_base=proxy,
                               headers={"X-Forwarded-For": "not-an-ip"})
    assert garbage.status_code == 403
    assert await garbage.get_json() == {"error": "invalid client IP"}


def test_client_address_walks_forwarded_for_from_the_right() -> None:
    policy = _policy(VOLANT_TRUSTED_PROXIES="192.0.2.0/24,2001:db8::/32")
    addr = ipaddress.ip_address
    assert policy.client_address("192.0.2.1", ["203.0.113.1, 198.51.100.2, 192.0.2.9"]) \
        == addr("198.51.100.2")
    assert policy.client_address("192.0.2.1", ["203.0.113.1", "192.0.2.5"]) \
        == addr("203.0.113.1")  # repeated headers are one list
    assert policy.client_address("192.0.2.1", ["192.0.2.7, 192.0.2.8"]) == addr("192.0.2.7")
    assert policy.client_address("2001:db8::1", ["[2001:db9::1]:443"]) == addr("2001:db9::1")
    assert policy.client_address("::ffff:198.51.100.3", ["10.0.0.1"]) == addr("198.51.100.3")
    assert policy.client_address(None, ["10.0.0.1"]) is None
    with pytest.raises(InvalidClientAddress):
        policy.client_address("192.0.2.1", ["10.0.0.1, bogus"])


# -- CORS and websocket Origin ------------------------------------------------------------------

async def test_cors_echoes_a_listed_origin_with_credentials(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_CORS_ORIGINS": "https://ui.example",
                       "VOLANT_API_KEY": KEY}).test_client()
    resp = await client.get("/api/v1/system/info",
                            headers={"Origin": "https://ui.example", "X-Volant-API-Key": KEY})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in resp.headers["Vary"]
    other = await client.get("/api/v1/system/info",
                             headers={"Origin": "https://evil.example", "X-Volant-API-Key": KEY})
    assert "Access-Control-Allow-Origin" not in other.headers
    # The 401 for a listed origin is readable by the page (it carries the CORS headers).
    denied = await client.get("/api/v1/system/info", headers={"Origin": "https://ui.example"})
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "https://ui.example"


async def test_cors_wildcard_never_allows_credentials(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_CORS_ORIGINS": "*"}).test_client()
    resp = await client.get("/api/v1/system/info", headers={"Origin": "https://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_preflight_is_204_only_for_allowed_origins(make_app: MakeApp) -> None:
    client = make_app({"VOLANT_CORS_ORIGINS": "https://ui.example",
                       "VOLANT_API_KEY": KEY}).test_client()
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "X-Volant-API-Key"}
    ok = await client.options("/api/v1/system/info",
                              headers={"Origin": "https://ui.example", **preflight})
    assert ok.status_code == 204
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "X-Volant-API-Key" in ok.headers["Access-Control-Allow-Headers"]
    refused = await client.options("/api/v1/system/info",
                                   headers={"Origin": "https://evil.example", **preflight})
    assert refused.status_code == 401
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_websocket_origin_must_be_listed_or_same_host(make_app: MakeApp) -> None:
    app = _with_echo_websocket(make_app({"VOLANT_CORS_ORIGINS": "https://ui.example"}))
    client = app.test_client()
    for origin in ("https://ui.example", "http://localhost"):
        async with client.websocket("/ws/test/echo",
                                    headers={"Origin": origin, "Host": "localhost"}) as ws:
            await ws.send("x")
            assert await ws.receive() == "x"
    evil = {"Origin": "https://evil.example", "Host": "localhost"}
    assert await _handshake(client, "/ws/test/echo", headers=evil) == 403
    # Without an Origin header (non-browser clients, the CLI) the check does not apply.
    async with client.websocket("/ws/test/echo") as ws:
        await ws.send("y")
        assert await ws.receive() == "y"


def test_websocket_same_host_compares_host_and_port() -> None:
    policy = _policy()
    assert policy.websocket_origin_allowed("http://api.local:7777", "api.local:7777", False)
    assert policy.websocket_origin_allowed("https://api.local", "api.local:443", True)
    assert not policy.websocket_origin_allowed("http://api.local:8000", "api.local:7777", False)
    assert not policy.websocket_origin_allowed("http://other.local:7777", "api.local:7777", False)
    assert not policy.websocket_origin_allowed("null", "api.local:7777", False)
