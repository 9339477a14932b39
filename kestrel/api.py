"""The agent's HTTP routes (what volantd proxies to on <vm>:8080).

GET  /healthz                 agent version/uptime, workload state and health
GET  /v1/logs?tail=N          recent workload lines [{stream, line, timestamp}]
GET  /v1/logs/stream[?tail=N] SSE, one ``data: {stream, line, timestamp}`` per line
GET  /v1/openapi              the workload's OpenAPI document
GET  /v1/system/info          kernel, uptime, addresses, block devices
POST /v1/system/shutdown      202, then stop the workload and power off
*    /v1/<action.path>        manifest actions, proxied with the action's timeout
*    /v1/*                    passthrough to workload.base_url with /v1 stripped

Handlers are plain functions run in the connection's thread: the state they read
(timeline, ring, reaper, workload) is there from the moment the API listens, and the
routes that need the workload answer 503 until it is configured.
"""

from __future__ import annotations

import os
import time

from kestrel.config import VERSION
from kestrel.httpclient import HttpClientError, join_url, request
from kestrel.httpserver import Request, Response, error_response, json_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from kestrel.agent import Agent

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
PROXY_TIMEOUT = 120.0
SSE_HEARTBEAT = 15.0
SSE_TICK = 0.25  # how soon a stream notices that its client hung up
RESERVED = ("/v1/logs", "/v1/logs/stream", "/v1/openapi", "/v1/system/info", "/v1/system/shutdown")


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(), which upstream's /healthz used."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes >= 1:
        return f"{int(minutes)}m{text}"
    return text


def _forward_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    connection_tokens = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    skip = HOP_BY_HOP | connection_tokens | {"host", "content-length"}
    return [(name, value) for name, value in headers if name.lower() not in skip]


def _tail(req: Request, default: int | None) -> int | None:
    raw = req.query("tail")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"tail must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError("tail must not be negative")
    return value


class AgentApi:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def handle(self, req: Request) -> Response:
        path = req.path
        if path == "/healthz" and req.method in ("GET", "HEAD"):
            return json_response(self.healthz())
        if path in RESERVED:
            return self._reserved(req)
        action = self._match_action(req)
        if action is not None:
            target, timeout = action
            return self.proxy(req, target, timeout)
        if path == "/v1" or path.startswith("/v1/"):
            stripped = path[len("/v1") :] or "/"
            return self.proxy(req, stripped, PROXY_TIMEOUT)
        return error_response(404, f"no route for {req.method} {path}")

    def _reserved(self, req: Request) -> Response:
        path = req.path
        if path == "/v1/system/shutdown":
            if req.method != "POST":
                return error_response(405, "use POST")
            self.agent.request_shutdown("api")
            return json_response({"status": "shutting down"}, 202)
        if req.method not in ("GET", "HEAD"):
            return error_response(405, "use GET")
        if path == "/v1/logs":
            try:
                tail = _tail(req, 100)
            except ValueError as exc:
                return error_response(400, str(exc))
            return json_response([line.to_json() for line in self.agent.ring.tail(tail)])
        if path == "/v1/logs/stream":
            try:
                tail = _tail(req, 0)
            except ValueError as exc:
                return error_response(400, str(exc))
            return Response(
                200,
                headers=[
                    ("Content-Type", "text/event-stream"),
                    ("Cache-Control", "no-cache"),
                    ("X-Accel-Buffering", "no"),
                ],
                stream=self._sse(tail or 0),
            )
        if path == "/v1/openapi":
            return self.openapi(req)
        from kestrel.sysinfo import system_info

        return json_response(system_info(self.agent.config, self.agent.seed))

    def healthz(self) -> dict[str, Any]:
        agent = self.agent
        seconds = time.monotonic() - agent.started
        body: dict[str, Any] = {
            "status": "ok",
            "version": VERSION,
            "uptime": go_duration(seconds),
            "uptime_seconds": round(seconds, 3),
            "boot_timeline": agent.timeline.as_dict(),
            "manifest": None,
            "workload": None,
            "reaper": {"orphans_reaped": agent.reaper.orphans_reaped},
        }
        if agent.manifest is not None:
            body["manifest"] = {
                "name": agent.manifest.get("name"),
                "version": agent.manifest.get("version"),
                "source": agent.manifest_source,
            }
        if agent.manifest_error:
            body["manifest_error"] = agent.manifest_error
        if agent.workload is not None:
            workload = agent.workload.status()
            health = agent.health.status() if agent.health is not None else None
            workload["healthy"] = bool(health and health["healthy"])
            workload["health"] = health
            body["workload"] = workload
        return body

    def _match_action(self, req: Request) -> tuple[str, float] | None:
        manifest = self.agent.manifest or {}
        actions = manifest.get("actions") or {}
        if not isinstance(actions, dict):
            return None
        for spec in actions.values():
            if not isinstance(spec, dict):
                continue
            action_path = str(spec.get("path") or "").strip()
            if not action_path:
                continue
            if not action_path.startswith("/"):
                action_path = "/" + action_path
            method = str(spec.get("method") or "POST").strip().upper()
            # Upstream's volantd called the action path without /v1; accept both spellings.
            routes = {"/v1" + action_path}
            if action_path.startswith("/v1/"):
                routes.add(action_path)
            if req.path in routes and req.method == method:
                timeout_ms = spec.get("timeout_ms") or 0
                timeout = float(timeout_ms) / 1000 if timeout_ms else PROXY_TIMEOUT
                return action_path, timeout
        return None

    def proxy(self, req: Request, target_path: str, timeout: float) -> Response:
        workload = self.agent.workload
        if workload is None:
            return error_response(503, "no workload configured")
        url = join_url(workload.spec.base_url, target_path)
        if req.query_string:
            url += "?" + req.query_string
        headers = _forward_headers(req.headers)
        if req.peer:
            headers.append(("X-Forwarded-For", req.peer))
        try:
            answer = request(req.method, url, headers, req.body, timeout)
        except HttpClientError as exc:
            status = 504 if "timed out" in str(exc) else 502
            return error_response(status, f"workload unreachable: {exc}")
        return Response(answer.status, answer.body, _forward_headers(answer.headers))

    def openapi(self, req: Request) -> Response:
        manifest = self.agent.manifest or {}
        reference = str(manifest.get("openapi") or "").strip()
        local = reference[len("file://") :] if reference.startswith("file://") else reference
        if local.startswith("/") and os.path.isfile(local):
            try:
                with open(local, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                return error_response(500, f"cannot read {local}: {exc}")
            kind = "application/yaml" if local.endswith((".yaml", ".yml")) else "application/json"
            return Response(200, data, [("Content-Type", kind)])
        return self.proxy(req, "/openapi", 30.0)

    def _sse(self, tail: int) -> Iterator[bytes]:
        """The log stream; yields b"" every SSE_TICK so the server can notice a hang-up."""
        ring = self.agent.ring
        subscription = ring.subscribe()
        try:
            backlog = ring.tail(tail) if tail else []
            yield b": kestrel log stream\n\n"
            for line in backlog:
                yield _sse_event(line.to_json())
            reported_drops = 0
            heartbeat_at = time.monotonic() + SSE_HEARTBEAT
            while True:
                waited = subscription.get(min(SSE_TICK, heartbeat_at - time.monotonic()))
                if waited is None:
                    if time.monotonic() >= heartbeat_at:
                        heartbeat_at = time.monotonic() + SSE_HEARTBEAT
                        yield b": keepalive\n\n"
                    else:
                        yield b""
                    continue
                line = waited
                heartbeat_at = time.monotonic() + SSE_HEARTBEAT
                if subscription.dropped != reported_drops:
                    yield f": dropped {subscription.dropped - reported_drops} lines\n\n".encode()
                    reported_drops = subscription.dropped
                yield _sse_event(line.to_json())
        finally:
            ring.unsubscribe(subscription)


def _sse_event(payload: dict[str, Any]) -> bytes:
    import json

    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
