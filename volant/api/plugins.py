"""Plugin routes (upstream section 1.2): install, list, show, enable/disable, delete."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from volant.api.common import call, json_body, json_object
from volant.errors import ConflictError, ValidationError
from volant.orchestrator.plugins import Get, Install, ListPlugins, Remove, SetEnabled

blueprint = Blueprint("plugins", __name__)


@blueprint.get("/api/v1/plugins")
async def list_plugins() -> Response:
    plugins = await call("plugins", ListPlugins())
    return jsonify({"plugins": [p.name for p in plugins],
                    "items": [p.summary() for p in plugins]})


@blueprint.post("/api/v1/plugins")
async def install_plugin() -> tuple[Response, int]:
    plugin = await call("plugins", Install(await json_body()))
    return jsonify(plugin.summary()), 201


@blueprint.get("/api/v1/plugins/<name>")
async def get_plugin(name: str) -> Response:
    plugin = await call("plugins", Get(name))
    return jsonify(plugin.manifest_json())


@blueprint.get("/api/v1/plugins/<name>/manifest")
async def get_plugin_manifest(name: str) -> Response:
    """What guest agents fetch; 409 while the plugin is disabled (upstream)."""
    plugin = await call("plugins", Get(name))
    if not plugin.enabled:
        raise ConflictError(f"plugin {name} disabled", plugin=name)
    return jsonify(plugin.manifest_json())


@blueprint.delete("/api/v1/plugins/<name>")
async def delete_plugin(name: str) -> tuple[str, int]:
    await call("plugins", Remove(name))
    return "", 204


@blueprint.post("/api/v1/plugins/<name>/enabled")
async def set_plugin_enabled(name: str) -> Response:
    body = await json_object()
    if "enabled" not in body:
        raise ValidationError("enabled: field required", field="enabled")
    plugin = await call("plugins", SetEnabled(name, body["enabled"]))
    return jsonify(plugin.summary())
