"""Route documentation for the generated OpenAPI document, and the shared schemas.

Every route handler carries its own documentation, so the published contract is
built from the code and cannot drift from it (``volant/api/openapi.py`` walks
``app.url_map`` and reads what this decorator attached).

How to document a route::

    from volant.api import spec

    @blueprint.get("/api/v1/vms/<name>")
    @spec.api_doc(
        summary="Fetch VM by name",
        tags=["vm"],
        operation_id="getVMByName",                 # optional; default: the endpoint name
        responses={200: spec.VM, 404: spec.ERROR},  # a schema dict, or a Response(...)
    )
    async def get_vm(name: str) -> Response: ...

- ``@api_doc`` goes *below* the route decorator (it must see the plain function).
- Path parameters come from the URL rule (``<name>``, ``<int:n>``, ``<path:p>``);
  pass ``parameters=[spec.path_param("name", description=...)]`` only to describe them.
- Query parameters and headers: ``spec.query_param("limit", spec.INTEGER)``,
  ``spec.header_param("Last-Event-ID", spec.STRING)``.
- ``request=`` is the JSON request body schema (``request_required=False`` if optional).
- ``responses`` maps a status to a schema dict (served as ``application/json``), to
  ``None`` (no body, e.g. 204), or to ``spec.Response(description, schema, media_type)``
  for other media types or descriptions (``content={type: schema, ...}`` for several).
- Schemas are plain JSON Schema 2020-12 dicts (OpenAPI 3.1). Name a shared one with
  ``component("Name", {...})``: it returns ``{"$ref": "#/components/schemas/Name"}``
  and the generator emits every registered component. Nullable fields use
  ``nullable(schema)`` (OpenAPI 3.1 has no ``nullable: true``).
- Every operation automatically gets 401/403/default error responses (the auth
  middleware may answer any route with them); ``public=True`` marks a route that
  needs no API key (only ``/healthz``), ``websocket=True`` is implied for websocket rules.

The upstream shapes (``VM``, ``VM_EVENT``, ``ERROR``, ``PLUGIN_SUMMARY``...) are taken
field for field from the original's published contract: we may add fields, never
drop or retype one, so tools written for the original keep working.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

Schema = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

DOC_ATTRIBUTE = "__volant_api_doc__"

#: Named schemas emitted under ``components.schemas`` (registered at import time).
COMPONENTS: dict[str, Schema] = {}


@attrs.frozen
class Response:
    """A documented response: description, optional body schema and its media type.

    ``content`` documents several media types at once (``{media_type: schema}``);
    when given it replaces ``schema``/``media_type``.
    """

    description: str = ""
    schema: Schema | None = None
    media_type: str = "application/json"
    headers: Mapping[str, Schema] = attrs.field(factory=dict)
    content: Mapping[str, Schema] = attrs.field(factory=dict)

    def media(self) -> dict[str, Schema]:
        if self.content:
            return dict(self.content)
        return {} if self.schema is None else {self.media_type: self.schema}


@attrs.frozen
class RouteDoc:
    """What ``api_doc`` attaches to a handler; read by the OpenAPI generator."""

    summary: str
    description: str = ""
    tags: tuple[str, ...] = ()
    operation_id: str | None = None
    request: Schema | None = None
    request_required: bool = True
    request_media_type: str = "application/json"
    responses: Mapping[int | str, Response] = attrs.field(factory=dict)
    parameters: tuple[Schema, ...] = ()
    public: bool = False
    websocket: bool = False
    deprecated: bool = False


def api_doc(
    summary: str,
    *,
    description: str = "",
    tags: Sequence[str] = (),
    operation_id: str | None = None,
    request: Schema | None = None,
    request_required: bool = True,
    request_media_type: str = "application/json",
    responses: Mapping[int | str, Schema | Response | None] | None = None,
    parameters: Sequence[Schema] = (),
    public: bool = False,
    websocket: bool = False,
    deprecated: bool = False,
) -> Callable[[F], F]:
    """Attach OpenAPI documentation to a route handler (see the module docstring)."""
    normalised: dict[int | str, Response] = {}
    for status, value in (responses or {}).items():
        if isinstance(value, Response):
            normalised[status] = value
        elif value is None:
            normalised[status] = Response(description=_reason(status))
        else:
            normalised[status] = Response(description=_reason(status), schema=value)
    doc = RouteDoc(
        summary=summary,
        description=description,
        tags=tuple(tags),
        operation_id=operation_id,
        request=request,
        request_required=request_required,
        request_media_type=request_media_type,
        responses=normalised,
        parameters=tuple(parameters),
        public=public,
        websocket=websocket,
        deprecated=deprecated,
    )

    def decorate(func: F) -> F:
        setattr(func, DOC_ATTRIBUTE, doc)
        return func

    return decorate


def route_doc(func: Callable[..., Any]) -> RouteDoc | None:
    doc = getattr(func, DOC_ATTRIBUTE, None)
    return doc if isinstance(doc, RouteDoc) else None


_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 101: "Switching Protocols",
    400: "Bad request", 401: "Missing or invalid API key", 403: "Access denied",
    404: "Not found", 409: "Conflict", 422: "Unprocessable request",
    429: "Too many requests (retry after the Retry-After delay)", 500: "Internal error",
    502: "Upstream error", 503: "Unavailable", 507: "Insufficient storage",
}


def _reason(status: int | str) -> str:
    return _REASONS.get(status, "Response") if isinstance(status, int) else "Error"


# -- schema helpers -------------------------------------------------------------------------

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
DATE_TIME: Schema = {"type": "string", "format": "date-time"}
ANY_OBJECT: Schema = {"type": "object"}


def component(name: str, schema: Schema) -> Schema:
    """Register ``schema`` under ``components.schemas[name]`` and return a ``$ref`` to it."""
    existing = COMPONENTS.get(name)
    if existing is not None and existing != schema:
        raise ValueError(f"component {name!r} is already registered with another schema")
    COMPONENTS[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Mapping[str, Schema], required: Sequence[str] = (),
        additional: bool | Schema = True, description: str = "") -> Schema:
    """An object schema; extra properties are allowed by default (we may add fields)."""
    schema: Schema = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    if additional is not True:
        schema["additionalProperties"] = additional
    if description:
        schema["description"] = description
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def string_map(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null, written the OpenAPI 3.1 way."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        out["type"] = [*kind, "null"]
    return out


def enum(values: Sequence[str], description: str = "") -> Schema:
    schema: Schema = {"type": "string", "enum": list(values)}
    if description:
        schema["description"] = description
    return schema


def _param(location: str, name: str, schema: Schema | None, description: str,
           required: bool, **extra: Any) -> Schema:
    param: Schema = {"name": name, "in": location, "required": required,
                     "schema": schema if schema is not None else STRING}
    if description:
        param["description"] = description
    param.update(extra)
    return param


def path_param(name: str, schema: Schema | None = None, description: str = "") -> Schema:
    return _param("path", name, schema, description, True)


def query_param(name: str, schema: Schema | None = None, description: str = "",
                required: bool = False, explode: bool | None = None) -> Schema:
    extra: dict[str, Any] = {} if explode is None else {"explode": explode, "style": "form"}
    return _param("query", name, schema, description, required, **extra)


def header_param(name: str, schema: Schema | None = None, description: str = "",
                 required: bool = False) -> Schema:
    return _param("header", name, schema, description, required)


# -- shared models (upstream shapes, fields only ever added) --------------------------------

ERROR = component("Error", obj(
    {
        "error": {"type": "string", "description": "Human-readable message"},
        "details": string_map(STRING),
    },
    required=["error"],
    description="The single error model of every route",
))

PLUGIN_SUMMARY = component("pluginSummary", obj(
    {"name": STRING, "version": STRING, "enabled": BOOLEAN}
))

VM = component("VM", obj(
    {
        "id": {"type": "integer", "format": "int64"},
        "name": STRING,
        "status": STRING,
        "runtime": STRING,
        "pid": nullable({"type": "integer", "format": "int64"}),
        "ip_address": STRING,
        "mac_address": STRING,
        "cpu_cores": INTEGER,
        "memory_mb": INTEGER,
        "kernel_cmdline": STRING,
        "serial_socket": STRING,
        "created_at": nullable(DATE_TIME),
        "updated_at": nullable(DATE_TIME),
        "plugin": STRING,
        "vsock_cid": INTEGER,
        "network_mode": enum(["bridged", "dhcp", "vsock"]),
        "tap": STRING,
        "restart_count": INTEGER,
        "restart_policy": obj({"name": enum(["no", "always", "on-failure"]),
                               "max_retries": INTEGER}),
        "deployment": nullable(STRING),
        "desired_state": enum(["running", "stopped"]),
        "config_version": INTEGER,
        "console_log": STRING,
        "last_exit": nullable(STRING),
        "hypervisor": nullable(STRING),
        "restart_required": BOOLEAN,
        "current_config_version": INTEGER,
        "pci_devices": array(STRING),
    },
    description="A VM as upstream returned it, plus our additional fields",
))

CREATE_VM = component("CreateVMRequest", obj(
    {
        "name": {"type": "string", "description": "DNS label, 1-63 characters"},
        "plugin": STRING,
        "runtime": STRING,
        "cpu_cores": INTEGER,
        "memory_mb": INTEGER,
        "kernel_cmdline": {"type": "string", "description": "Extra kernel arguments"},
        "api_host": STRING,
        "api_port": INTEGER,
        "config": ANY_OBJECT,
        "restart_policy": obj({"name": enum(["no", "always", "on-failure"]),
                               "max_retries": INTEGER}),
    },
    required=["name"],
))

MANIFEST = component("Manifest", {
    "type": "object",
    "description": "A plugin manifest (upstream plugin-manifest-v1 schema)",
})

PLUGIN_LIST = component("PluginList", obj(
    {"plugins": array(STRING), "items": array(PLUGIN_SUMMARY)}, required=["plugins"]))

VM_EVENT = component("VMEvent", obj(
    {
        "id": {"type": "integer", "description": "Global sequence number (also the SSE id)"},
        "type": STRING,
        "name": STRING,
        "status": STRING,
        "timestamp": DATE_TIME,
        "ip_address": STRING,
        "mac_address": STRING,
        "pid": INTEGER,
        "message": STRING,
        "stream": STRING,
        "line": STRING,
    },
    required=["id", "type", "name", "status", "timestamp"],
))

EVENT_PAGE = component("VMEventPage", obj(
    {
        "events": array(VM_EVENT),
        "last_event_id": {
            "type": "integer",
            "description": "Pass as ?after= (or Last-Event-ID) to continue without a gap",
        },
    },
    required=["events", "last_event_id"],
))

HEALTH = component("Health", obj({"status": STRING, "version": STRING, "uptime_seconds": NUMBER}))

SYSTEM_INFO = component("SystemInfo", obj(
    {
        "status": STRING,
        "api_listen_addr": STRING,
        "api_advertise_addr": STRING,
        "host_ip": STRING,
        "version": STRING,
    }
))

SYSTEM_STATUS = component("SystemStatus", obj(
    {
        "vm_count": INTEGER,
        "cpu_percent": {"type": "number", "format": "double"},
        "mem_percent": {"type": "number", "format": "double"},
    },
    required=["vm_count", "cpu_percent", "mem_percent"],
))

SYSTEM_SUMMARY = component("SystemSummary", obj(
    {
        "total_vms": INTEGER,
        "by_status": string_map(INTEGER),
        "by_runtime": string_map(INTEGER),
        "total_plugins": INTEGER,
        "enabled_plugins": INTEGER,
        "plugins": array(PLUGIN_SUMMARY),
    },
    required=["total_vms", "by_status", "by_runtime", "total_plugins", "enabled_plugins",
              "plugins"],
))
