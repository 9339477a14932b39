"""Auth and exposure: API key, peer-address allow list, CORS and websocket Origin.

This is ASGI middleware around the whole app rather than Quart ``before_request``
hooks, so it sees every HTTP request *and* every websocket handshake before any
route code runs; a route added later cannot forget to be protected.

Order: CIDR allow list (on the real socket peer) -> CORS preflight -> API key.

- The key is accepted from ``X-Volant-API-Key`` or ``Authorization: Bearer``,
  compared in constant time. The ``api_key`` query parameter is honoured only on a
  websocket handshake (browsers cannot set headers there); on plain HTTP it would
  end up in access logs and browser history, so it is ignored.
- ``/healthz`` needs no key (liveness probes carry no secrets) but is still
  subject to the CIDR allow list.
- ``X-Forwarded-For`` is read only when the socket peer is a configured trusted
  proxy; the client is then the right-most address that is not itself a trusted
  proxy (everything left of it could have been written by the client).
- A Unix-socket peer has no address: file permissions guard that listener, so the
  CIDR list does not apply to it.
- CORS: a listed origin is echoed (with credentials allowed); ``*`` answers ``*``
  and never together with ``Access-Control-Allow-Credentials``. A preflight is
  answered 204 only for an allowed origin. A websocket handshake that carries an
  ``Origin`` must come from a listed origin or from the API's own host.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from volant.config import Config
from volant.logging import get_logger

log = get_logger("volant.api.auth")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PUBLIC_PATHS = frozenset({"/healthz"})
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Content-Type, Authorization, X-Requested-With, X-Volant-API-Key, Last-Event-ID"
CORS_EXPOSE = "Content-Type, X-Total-Count, X-Request-Id, Retry-After"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}

#: Scope key under which the resolved client address is handed to the app.
CLIENT_IP_SCOPE_KEY = "volant.client_ip"


class InvalidClientAddress(ValueError):
    """An address in ``X-Forwarded-For`` (from a trusted proxy) did not parse."""


def _parse_ip(text: str) -> IPAddress:
    """An address as it appears in a header or ASGI ``client``: bare, bracketed, or with port."""
    value = text.strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    addr = ipaddress.ip_address(value)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            log.warning("ignoring invalid CIDR", cidr=cidr)
    return tuple(out)


def _contains(networks: Iterable[IPNetwork], addr: IPAddress) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


class ExposurePolicy:
    """The decisions, free of ASGI plumbing (unit-testable on their own)."""

    def __init__(self, cfg: Config) -> None:
        self.api_key = cfg.api_key.encode()
        self.allow = _networks(cfg.api_allow_cidr)
        self.trusted = _networks(cfg.trusted_proxies)
        origins = [o.strip().rstrip("/").lower() for o in cfg.cors_origins if o.strip()]
        self.any_origin = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    @property
    def cors_enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    # -- addresses ----------------------------------------------------------------------
    def client_address(self, peer: str | None, forwarded_for: list[str]) -> IPAddress | None:
        """The address the allow list judges; ``None`` for a Unix-socket peer."""
        if not peer:
            return None
        addr = _parse_ip(peer)
        if not forwarded_for or not _contains(self.trusted, addr):
            return addr
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            try:
                hop_addr = _parse_ip(hop)
            except ValueError:
                raise InvalidClientAddress(hop) from None
            if not _contains(self.trusted, hop_addr):
                return hop_addr
            addr = hop_addr
        return addr  # every hop was a trusted proxy: the left-most one is the client

    def address_allowed(self, addr: IPAddress | None) -> bool:
        return not self.allow or addr is None or _contains(self.allow, addr)

    # -- key ------------------------------------------------------------------------------
    def key_valid(self, headers: dict[bytes, bytes], query_string: bytes,
                  websocket: bool) -> bool:
        if not self.api_key:
            return True
        candidates: list[bytes] = []
        if b"x-volant-api-key" in headers:
            candidates.append(headers[b"x-volant-api-key"].strip())
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            candidates.append(token.strip())
        if websocket and not candidates:
            values = parse_qs(query_string.decode("latin-1")).get("api_key", [])
            candidates.extend(v.encode("latin-1") for v in values[:1])
        # Compare every candidate so timing does not reveal which header was tried.
        results = [hmac.compare_digest(c, self.api_key) for c in candidates]
        return any(results)

    # -- origins --------------------------------------------------------------------------
    def origin_listed(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def websocket_origin_allowed(self, origin: str, host: str, secure: bool) -> bool:
        if self.origin_listed(origin):
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if not parts.hostname:
            return False
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        host_parts = urlsplit(f"//{host}")
        if not host_parts.hostname:
            return False
        try:
            host_port = host_parts.port or (443 if secure else 80)
        except ValueError:
            return False
        return (parts.hostname.lower(), origin_port) == (host_parts.hostname.lower(), host_port)

    def cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        """Headers for an actual (non-preflight) response to a cross-origin request."""
        if not self.cors_enabled:
            return []
        headers = [(b"vary", b"Origin")]
        normalised = origin.rstrip("/").lower()
        if normalised in self.origins:
            headers += [(b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-allow-credentials", b"true")]
        elif self.any_origin:
            headers.append((b"access-control-allow-origin", b"*"))
        else:
            return headers
        headers.append((b"access-control-expose-headers", CORS_EXPOSE.encode()))
        return headers


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Lower-case header map; repeated headers are joined with commas."""
    out: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        key = bytes(name).lower()
        out[key] = out[key] + b", " + bytes(value) if key in out else bytes(value)
    return out


class ExposureMiddleware:
    """Wraps ``app.asgi_app``; rejects before the app sees the request."""

    def __init__(self, app: ASGIApp, policy: ExposurePolicy,
                 on_reject: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.policy = policy
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        websocket = kind == "websocket"
        path: str = scope.get("path", "")
        peer = scope.get("client")
        peer_host = str(peer[0]) if peer else None

        forwarded = [headers[b"x-forwarded-for"].decode("latin-1")] \
            if b"x-forwarded-for" in headers else []
        try:
            addr = self.policy.client_address(peer_host, forwarded)
        except (InvalidClientAddress, ValueError):
            await self._reject(scope, receive, send, headers=headers, status=403,
                               message="invalid client IP", reason="address")
            return
        scope[CLIENT_IP_SCOPE_KEY] = str(addr) if addr is not None else ""
        if not self.policy.address_allowed(addr):
            log.warning("request denied by allow list", client=str(addr), path=path)
            await self._reject(scope, receive, send, headers=headers, status=403,
                               message="access denied", reason="cidr")
            return

        origin = headers.get(b"origin", b"").decode("latin-1")
        if websocket and origin:
            host = headers.get(b"host", b"").decode("latin-1")
            secure = scope.get("scheme") in ("wss", "https")
            if not self.policy.websocket_origin_allowed(origin, host, secure):
                log.warning("websocket origin refused", origin=origin, path=path)
                await self._reject(scope, receive, send, headers=headers, status=403,
                                   message="origin not allowed", reason="origin")
                return

        if (not websocket and scope.get("method") == "OPTIONS" and origin
                and b"access-control-request-method" in headers
                and self.policy.cors_enabled and self.policy.origin_listed(origin)):
            await self._preflight(send, origin, headers)
            return

        if path not in PUBLIC_PATHS and not self.policy.key_valid(
                headers, scope.get("query_string", b""), websocket):
            await self._reject(scope, receive, send, headers=headers, status=401,
                               message="invalid api key", reason="key")
            return

        if origin and not websocket and self.policy.cors_enabled:
            extra = self.policy.cors_headers(origin)

            async def send_with_cors(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = dict(message)
                    message["headers"] = [*message.get("headers", []), *extra]
                await send(message)

            await self.app(scope, receive, send_with_cors)
            return
        await self.app(scope, receive, send)

    async def _preflight(self, send: Send, origin: str, headers: dict[bytes, bytes]) -> None:
        response_headers = [
            *self.policy.cors_headers(origin),
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-allow-headers", CORS_HEADERS.encode()),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _reject(self, scope: Scope, receive: Receive, send: Send, *,
                      headers: dict[bytes, bytes], status: int, message: str,
                      reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(reason)
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        body = json.dumps({"error": message}).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if status == 401:
            response_headers.append((b"www-authenticate", b'Bearer realm="volant"'))
        if scope["type"] == "http":
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin:
                response_headers += self.policy.cors_headers(origin)
            await send({"type": "http.response.start", "status": status,
                        "headers": response_headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": response_headers})
            await send({"type": "websocket.http.response.body", "body": body,
                        "more_body": False})
            return
        # No denial-response extension: refuse the handshake (the server answers 403).
        await receive()
        await send({"type": "websocket.close", "code": 1008})


def install_auth(app: Any, cfg: Config, on_reject: Callable[[str], None] | None = None) -> None:
    """Wrap the app's ASGI callable so every request and handshake passes the policy."""
    app.asgi_app = ExposureMiddleware(app.asgi_app, ExposurePolicy(cfg), on_reject)
