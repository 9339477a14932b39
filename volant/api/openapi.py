"""The OpenAPI 3.1 document, generated from the app's routes (no hand-kept JSON).

The generator walks ``app.url_map`` (every HTTP route and websocket route), takes
path parameters from each URL rule and everything else from the ``@spec.api_doc``
metadata on the handler (see ``volant/api/spec.py``). A route without metadata is
still listed (marked ``x-undocumented``) so the document never hides a route.

Served at ``GET /openapi`` and ``GET /openapi.json`` (``servers[0].url`` is the
request's own scheme and host). ``python -m volant.api.openapi --output
docs/openapi.json`` writes it from an app built with the default configuration;
``--check`` exits 1 when the file is stale (a test does the same).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from quart import Blueprint, Quart, Response, current_app, jsonify, request

from volant.api import spec
from volant.api.context import ApiContext

blueprint = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
TITLE = "Volant REST API"
DESCRIPTION = (
    "REST, SSE and websocket interface of volantd, the Volant microVM control plane. "
    "When VOLANT_API_KEY is set every route except /healthz requires it, in the "
    "X-Volant-API-Key header or as `Authorization: Bearer <key>` (websocket handshakes "
    "may pass it as the api_key query parameter instead). Errors share one model: "
    '`{"error": "...", "details": {...}}`.'
)
_METHOD_ORDER = ("get", "put", "post", "patch", "delete", "options", "head", "trace")
_RULE_PARAM = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\((?P<args>[^)]*)\))?:)?"
    r"(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>"
)
_CONVERTER_SCHEMAS: dict[str, spec.Schema] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "uuid": {"type": "string", "format": "uuid"},
    "path": {"type": "string", "description": "may contain '/'"},
}
SECURITY_SCHEMES: dict[str, spec.Schema] = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Volant-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
    "ApiKeyQuery": {
        "type": "apiKey", "in": "query", "name": "api_key",
        "description": "Accepted on websocket handshakes only",
    },
}
HTTP_SECURITY: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
WEBSOCKET_SECURITY: list[dict[str, list[str]]] = [*HTTP_SECURITY, {"ApiKeyQuery": []}]


def openapi_path(rule: str) -> tuple[str, list[spec.Schema]]:
    """``/vms/<name>/agent/<path:rest>`` -> ``/vms/{name}/agent/{rest}`` plus path params."""
    params: list[spec.Schema] = []

    def replace(match: re.Match[str]) -> str:
        converter = match.group("converter") or "default"
        schema = dict(_CONVERTER_SCHEMAS.get(converter, spec.STRING))
        params.append(spec.path_param(match.group("name"), schema))
        return "{" + match.group("name") + "}"

    return _RULE_PARAM.sub(replace, rule), params


def _operation(doc: spec.RouteDoc | None, endpoint: str, method: str, websocket: bool,
               path_params: list[spec.Schema]) -> dict[str, Any]:
    if doc is None:
        doc = spec.RouteDoc(summary=endpoint.replace("_", " ").replace(".", ": "))
        undocumented = True
    else:
        undocumented = False
    websocket = websocket or doc.websocket
    op: dict[str, Any] = {"summary": doc.summary}
    if doc.description:
        op["description"] = doc.description
    if doc.tags:
        op["tags"] = list(doc.tags)
    op["operationId"] = doc.operation_id or re.sub(r"[^A-Za-z0-9_]", "_", endpoint)

    described = {p["name"]: p for p in doc.parameters if p.get("in") == "path"}
    parameters = [described.get(p["name"], p) for p in path_params]
    parameters += [p for p in doc.parameters if p.get("in") != "path"]
    if parameters:
        op["parameters"] = parameters
    if doc.request is not None:
        op["requestBody"] = {
            "required": doc.request_required,
            "content": {doc.request_media_type: {"schema": doc.request}},
        }

    responses: dict[str, Any] = {}
    if websocket and 101 not in doc.responses:
        responses["101"] = {"description": "Switching Protocols (WebSocket)"}
    for status, response in doc.responses.items():
        entry: dict[str, Any] = {"description": response.description or "Response"}
        media = response.media()
        if media:
            entry["content"] = {kind: {"schema": schema} for kind, schema in media.items()}
        if response.headers:
            entry["headers"] = {name: {"schema": schema}
                                for name, schema in response.headers.items()}
        responses[str(status)] = entry
    if not doc.responses and not websocket:
        responses["200"] = {"description": "OK"}
    error = {"content": {"application/json": {"schema": spec.ERROR}}}
    if not doc.public:
        responses.setdefault("401", {"description": "Missing or invalid API key", **error})
    responses.setdefault(
        "403", {"description": "Client address or websocket Origin not allowed", **error}
    )
    responses.setdefault("default", {"description": "Error", **error})
    op["responses"] = dict(sorted(responses.items(), key=lambda item: _status_key(item[0])))

    if doc.public:
        op["security"] = []
    elif websocket:
        op["security"] = WEBSOCKET_SECURITY
    if websocket:
        op["x-websocket"] = True
    if doc.deprecated:
        op["deprecated"] = True
    if undocumented:
        op["x-undocumented"] = True
    return op


def _method_rank(method: str) -> int:
    return _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)


def _status_key(status: str) -> tuple[int, str]:
    return (int(status), "") if status.isdigit() else (1000, status)


def build_openapi(app: Quart, server_url: str, version: str) -> dict[str, Any]:
    """The document for every route registered on ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: dict[str, int] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        view = app.view_functions.get(rule.endpoint)
        doc = spec.route_doc(view) if view is not None else None
        websocket = bool(getattr(rule, "websocket", False))
        path, path_params = openapi_path(rule.rule)
        methods = ["get"] if websocket else sorted(
            (m.lower() for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS")),
            key=_method_rank,
        )
        for method in methods:
            op = _operation(doc, rule.endpoint, method, websocket, path_params)
            if len(methods) > 1 and (doc is None or doc.operation_id is None):
                op["operationId"] = f"{op['operationId']}_{method}"
            seen = operation_ids.get(op["operationId"], 0)
            operation_ids[op["operationId"]] = seen + 1
            if seen:
                op["operationId"] = f"{op['operationId']}_{seen + 1}"
            paths.setdefault(path, {})[method] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "servers": [{"url": server_url}],
        "security": HTTP_SECURITY,
        "paths": {
            path: dict(sorted(ops.items(), key=lambda item: _method_rank(item[0])))
            for path, ops in sorted(paths.items())
        },
        "components": {
            "schemas": {name: spec.COMPONENTS[name] for name in sorted(spec.COMPONENTS)},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@blueprint.get("/openapi")
@spec.api_doc(summary="This OpenAPI document", tags=["system"], operation_id="getOpenAPI",
              responses={200: spec.ANY_OBJECT})
async def openapi_document() -> Response:
    ctx: ApiContext = current_app.config["VOLANT_CONTEXT"]
    server_url = f"{request.scheme}://{request.host}"
    return jsonify(build_openapi(current_app, server_url, ctx.version))


@blueprint.get("/openapi.json")
@spec.api_doc(summary="This OpenAPI document (alias of /openapi)", tags=["system"],
              operation_id="getOpenAPIJson", responses={200: spec.ANY_OBJECT})
async def openapi_json() -> Response:
    return await openapi_document()


def default_document() -> dict[str, Any]:
    """The document as built from the default configuration (what docs/openapi.json holds)."""
    from volant import __version__
    from volant.api.app import create_app
    from volant.config import load_config

    cfg = load_config(environ={})
    app = create_app(ApiContext(config=cfg, version=__version__))
    return build_openapi(app, f"http://{cfg.api_listen}", __version__)


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volant.api.openapi",
                                     description="Write the generated OpenAPI document.")
    parser.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if --output differs from the generated one")
    args = parser.parse_args(argv)
    text = render(default_document())
    if args.check:
        if args.output is None:
            parser.error("--check needs --output")
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale; regenerate with "
                  f"python -m volant.api.openapi --output {args.output}", file=sys.stderr)
            return 1
        return 0
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
