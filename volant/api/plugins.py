"""Plugin routes (upstream section 1.2): install, list, show, enable/disable, delete.

The artifact routes under ``/api/v1/plugins/<name>/artifacts`` are in ``artifacts.py``.
"""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from volant.api import spec
from volant.api.common import call, json_body, json_object
from volant.errors import ConflictError, ValidationError, VolantError
from volant.logging import get_logger
from volant.orchestrator.artifacts import DropPlugin
from volant.orchestrator.plugins import Get, Install, ListPlugins, Remove, SetEnabled

log = get_logger("volant.api")

blueprint = Blueprint("plugins", __name__)


@blueprint.get("/api/v1/plugins")
@spec.api_doc(summary="List plugins (sorted)", tags=["plugin"], operation_id="listPlugins",
              responses={200: spec.PLUGIN_LIST})
async def list_plugins() -> Response:
    plugins = await call("plugins", ListPlugins())
    return jsonify({"plugins": [p.name for p in plugins],
                    "items": [p.summary() for p in plugins]})


@blueprint.post("/api/v1/plugins")
@spec.api_doc(summary="Install a plugin manifest (enabled unless it says otherwise)",
              tags=["plugin"], operation_id="installPlugin", request=spec.MANIFEST,
              responses={201: spec.PLUGIN_SUMMARY, 400: spec.ERROR, 422: spec.ERROR,
                         507: spec.ERROR})
async def install_plugin() -> tuple[Response, int]:
    plugin = await call("plugins", Install(await json_body()))
    return jsonify(plugin.summary()), 201


@blueprint.get("/api/v1/plugins/<name>")
@spec.api_doc(summary="A plugin's manifest (even when disabled)", tags=["plugin"],
              operation_id="getPlugin", responses={200: spec.MANIFEST, 404: spec.ERROR})
async def get_plugin(name: str) -> Response:
    plugin = await call("plugins", Get(name))
    return jsonify(plugin.manifest_json())


@blueprint.get("/api/v1/plugins/<name>/manifest")
@spec.api_doc(summary="A plugin's manifest for guest agents (409 while disabled)",
              tags=["plugin"], operation_id="getPluginManifest",
              responses={200: spec.MANIFEST, 404: spec.ERROR, 409: spec.ERROR})
async def get_plugin_manifest(name: str) -> Response:
    """What guest agents fetch; 409 while the plugin is disabled (upstream)."""
    plugin = await call("plugins", Get(name))
    if not plugin.enabled:
        raise ConflictError(f"plugin {name} disabled", plugin=name)
    return jsonify(plugin.manifest_json())


@blueprint.delete("/api/v1/plugins/<name>")
@spec.api_doc(summary="Remove a plugin and its artifact records (effective immediately)",
              tags=["plugin"], operation_id="deletePlugin",
              responses={204: None, 404: spec.ERROR})
async def delete_plugin(name: str) -> tuple[str, int]:
    await call("plugins", Remove(name))
    try:
        await call("artifacts", DropPlugin(name))
    except VolantError as exc:
        # The plugin is gone either way; the artifact registry drops the records of
        # plugins that are no longer installed when it next starts.
        log.warning("artifact records of a removed plugin kept for now", plugin=name,
                    error=exc.message)
    return "", 204


@blueprint.post("/api/v1/plugins/<name>/enabled")
@spec.api_doc(summary="Enable or disable a plugin (effective immediately)", tags=["plugin"],
              operation_id="setPluginEnabled",
              request=spec.obj({"enabled": spec.BOOLEAN}, required=["enabled"]),
              responses={200: spec.PLUGIN_SUMMARY, 400: spec.ERROR, 404: spec.ERROR})
async def set_plugin_enabled(name: str) -> Response:
    body = await json_object()
    if "enabled" not in body:
        raise ValidationError("enabled: field required", field="enabled")
    plugin = await call("plugins", SetEnabled(name, body["enabled"]))
    return jsonify(plugin.summary())
