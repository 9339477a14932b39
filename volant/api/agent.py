"""Talking to a VM's guest agent (kestrel): proxy, actions, the workload's OpenAPI.

Upstream section 1.5/1.6 with its [GAP]s fixed: actions call the agent's
``/v1/<path>`` (where kestrel serves them), responses and request bodies stream
both ways instead of being buffered, and there is no 30 s write timeout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from quart import Blueprint, Response, request

from volant.api import spec
from volant.api.common import call, json_body, service
from volant.errors import (
    ConflictError,
    NotFoundError,
    UpstreamError,
    ValidationError,
    VolantError,
)
from volant.orchestrator.plugins import Get
from volant.orchestrator.vms import VMManager

blueprint = Blueprint("agent", __name__)

AGENT_PORT = 8080
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
    "x-volant-api-key", "authorization",
})
PROXY_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=120.0, pool=10.0)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def agent_base(name: str) -> str:
    """The agent's URL for a running VM, or a clear 404/409/502."""
    manager: VMManager = service("vm_manager")
    view = manager.get_view(name)
    if view["status"] != "running":
        raise ConflictError(f"vm {name} not running", status=view["status"])
    if view.get("hypervisor") == "hollow":
        raise UpstreamError(f"vm {name} runs on the hollow stand-in VMM: it has no guest agent")
    if not view["ip_address"] or view["network_mode"] != "bridged":
        raise UpstreamError(
            f"vm {name}: agent unreachable in {view['network_mode']} network mode on this host "
            "(needs a guest address on the bridge)", network_mode=view["network_mode"])
    return f"http://{view['ip_address']}:{AGENT_PORT}"


def _forward_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


@blueprint.route("/api/v1/vms/<name>/agent", methods=METHODS, defaults={"path": ""})
@blueprint.route("/api/v1/vms/<name>/agent/<path:path>", methods=METHODS)
@spec.api_doc(summary="Proxy a request to the VM's guest agent (streams both ways)",
              tags=["agent"], responses={200: spec.Response("the agent's answer, as is"),
                                         404: spec.ERROR, 409: spec.ERROR, 502: spec.ERROR})
async def agent_proxy(name: str, path: str) -> Response:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        raise ValidationError("websocket upgrade not supported")
    target = f"{agent_base(name)}/{path}"
    client = httpx.AsyncClient(timeout=PROXY_TIMEOUT)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.body:
            yield chunk

    try:
        upstream_request = client.build_request(
            request.method, target, params=list(request.args.items(multi=True)),
            headers=_forward_headers(request.headers), content=body())
        upstream = await client.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise UpstreamError(f"agent of vm {name} unreachable: {exc}") from None

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    return Response(relay(), status=upstream.status_code,
                    headers=_forward_headers(upstream.headers))


@blueprint.post("/api/v1/vms/<name>/actions/<plugin>/<action>")
@spec.api_doc(summary="Invoke a manifest action on the VM's agent (/v1/<path>)",
              tags=["agent"], operation_id="invokeVMAction", request=spec.ANY_OBJECT,
              request_required=False,
              responses={200: spec.ANY_OBJECT, 202: spec.ANY_OBJECT, 400: spec.ERROR,
                         404: spec.ERROR, 409: spec.ERROR, 502: spec.ERROR})
async def vm_action(name: str, plugin: str, action: str) -> Response | tuple[Response, int]:
    installed = await call("plugins", Get(plugin))
    spec = installed.manifest.actions.get(action)
    if spec is None:
        raise NotFoundError(f"action {action} not found in plugin {plugin}")
    payload = await json_body(required=False)
    if payload is not None and not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object")
    manager: VMManager = service("vm_manager")
    view = manager.get_view(name)
    if view["plugin"] != plugin:
        raise ConflictError(f"vm {name} runs plugin {view['plugin']}, not {plugin}")
    base = agent_base(name)
    path = spec.path if spec.path.startswith("/") else f"/{spec.path}"
    timeout = spec.timeout_ms / 1000 if spec.timeout_ms else 60.0
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            answer = await client.request(spec.method or "POST", f"{base}/v1{path}",
                                          json=payload or {})
    except httpx.HTTPError as exc:
        raise UpstreamError(f"action {action} on vm {name} failed: {exc}") from None
    if answer.status_code >= 300:
        try:
            message = answer.json().get("error") or answer.reason_phrase
        except (ValueError, AttributeError):
            message = answer.text.strip() or answer.reason_phrase
        return Response(_json({"error": message}), status=answer.status_code,
                        content_type="application/json")
    try:
        decoded = answer.json() if answer.content else None
    except ValueError:
        return Response(answer.content, status=200,
                        content_type=answer.headers.get("content-type", "text/plain"))
    if decoded is None:
        return Response(_json({"status": "accepted"}), status=202,
                        content_type="application/json")
    return Response(_json(decoded), status=200, content_type="application/json")


@blueprint.get("/api/v1/vms/<name>/openapi")
@spec.api_doc(summary="The workload's OpenAPI document", tags=["agent"],
              operation_id="getVMOpenAPI",
              responses={200: spec.ANY_OBJECT, 404: spec.ERROR, 502: spec.ERROR})
async def vm_openapi(name: str) -> Response:
    """The workload's OpenAPI document: from the agent, else the manifest's http(s) URL."""
    manager: VMManager = service("vm_manager")
    view = manager.get_view(name)
    try:
        base: str | None = agent_base(name)
    except VolantError:
        base = None  # not running or no agent: fall back to the manifest's reference
    if base is not None:
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                answer = await client.get(f"{base}/v1/openapi")
            if answer.status_code == 200:
                return _document(answer.content, answer.headers.get("content-type", ""), "")
        except httpx.HTTPError:
            pass
    installed = await call("plugins", Get(view["plugin"]))
    reference = installed.manifest.openapi
    if not reference:
        raise NotFoundError("openapi spec unavailable")
    if not reference.startswith(("http://", "https://")):
        # A path names a file inside the guest (upstream read the host's filesystem).
        raise NotFoundError(f"openapi spec {reference} is inside the guest; start the vm")
    try:
        async with httpx.AsyncClient(timeout=15.0, follow_redirects=True) as client:
            answer = await client.get(reference)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot fetch {reference}: {exc}") from None
    if answer.status_code != 200:
        raise UpstreamError(f"manifest openapi returned {answer.status_code}")
    return _document(answer.content, answer.headers.get("content-type", ""), reference)


def _document(body: bytes, content_type: str, reference: str) -> Response:
    kind = content_type.split(";", maxsplit=1)[0].strip()
    if kind not in ("application/json", "application/yaml", "application/x-yaml", "text/yaml"):
        if reference.endswith((".yaml", ".yml")):
            kind = "application/yaml"
        else:
            kind = "application/json" if body.lstrip()[:1] in (b"{", b"[") else "application/yaml"
    return Response(body, status=200, content_type=kind)


def _json(value: Any) -> str:
    return json.dumps(value)
