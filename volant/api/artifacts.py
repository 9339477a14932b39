"""Plugin artifact routes (upstream section 1.3), in snake_case, with real fetches.

Upstream served these records with PascalCase keys and never fetched them. Here an
upsert with a source is fetched into the media cache and verified (rules in
``volant/orchestrator/artifactrecord.py``). ``POST`` answers 201 once the record is
accepted (``status: fetching``); ``?wait=ready&timeout=S`` blocks until it is
``ready`` (201), answers the failure's own status when it fails (422 checksum or
size mismatch, 502 unreachable source, 504 too slow, 507 no space; the record stays,
``failed``), or 408 when time runs out (the fetch goes on).
"""

from __future__ import annotations

import trio
from quart import Blueprint, Response, jsonify, request

from volant.api import spec
from volant.api.common import call, json_object, query_int
from volant.errors import ValidationError, VolantError
from volant.orchestrator.artifactrecord import MAX_NAME, STATUSES, ArtifactRecord
from volant.orchestrator.artifacts import (
    DeleteArtifacts,
    GetArtifact,
    ListArtifacts,
    UpsertArtifact,
    Upserted,
)

blueprint = Blueprint("artifacts", __name__)

DEFAULT_WAIT = 120
WAIT_STATES = ("ready",)

ARTIFACT = spec.component("PluginArtifact", spec.obj(
    {
        "id": {"type": "integer", "format": "int64"},
        "plugin_name": spec.STRING,
        "version": spec.STRING,
        "artifact_name": spec.STRING,
        "kind": spec.STRING,
        "source_url": spec.STRING,
        "checksum": {"type": "string", "description": "sha256:<hex>, or empty"},
        "format": spec.STRING,
        "local_path": spec.STRING,
        "size_bytes": {"type": "integer", "format": "int64"},
        "created_at": spec.DATE_TIME,
        "updated_at": spec.DATE_TIME,
        "status": spec.enum(list(STATUSES),
                            "registered: metadata only; fetching; ready: verified and "
                            "cached; failed: see error"),
        "error": spec.nullable(spec.STRING),
        "sha256": spec.nullable({"type": "string", "description": "digest of the cached "
                                                                 "bytes, once ready"}),
        "cached_path": spec.nullable({"type": "string", "description": "the file in the "
                                                                      "media cache"}),
    },
    required=["id", "plugin_name", "version", "artifact_name", "status"],
    description="A plugin artifact (upstream's fields in snake_case, plus its fetch state)",
))

ARTIFACT_REQUEST = spec.component("PluginArtifactRequest", spec.obj(
    {
        "version": {"type": "string", "maxLength": MAX_NAME},
        "artifact_name": {"type": "string", "maxLength": MAX_NAME},
        "kind": spec.STRING,
        "source_url": {"type": "string",
                       "description": "http(s):// or file:///path; needs checksum"},
        "checksum": {"type": "string", "description": "sha256:<64 hex> or 64 hex"},
        "format": spec.STRING,
        "local_path": {"type": "string",
                       "description": "absolute path on volantd's host (not with source_url)"},
        "size_bytes": {"type": "integer", "format": "int64", "minimum": 0,
                       "description": "expected size; 0 or absent: not checked"},
    },
    required=["version", "artifact_name"],
    additional=False,
))

PLUGIN = spec.path_param("plugin", description="installed plugin name")
ARTIFACT_NAME = spec.path_param("artifact", description="artifact name")


def _version(required: bool) -> str | None:
    version = request.args.get("version")
    if version is None or version == "":
        if required:
            raise ValidationError("version: query parameter required", field="version")
        return None
    return version


class WaitTimeout(VolantError):
    status = 408


class FetchFailed(VolantError):
    """A waited-for fetch failed; answers with the status the failure carries."""

    def __init__(self, record: ArtifactRecord) -> None:
        super().__init__(record.error or "fetch failed", status=record.status,
                         artifact=record.artifact_name, version=record.version)
        self.status = record.error_status or 422


@blueprint.get("/api/v1/plugins/<plugin>/artifacts")
@spec.api_doc(summary="List a plugin's artifacts (by version, then name)",
              tags=["plugin", "artifact"], operation_id="listPluginArtifacts",
              parameters=[PLUGIN, spec.query_param("version", spec.STRING,
                                                   "only this version")],
              responses={200: spec.array(ARTIFACT), 404: spec.ERROR})
async def list_artifacts(plugin: str) -> Response:
    records = await call("artifacts", ListArtifacts(plugin, _version(required=False)))
    return jsonify([record.to_json() for record in records])


@blueprint.post("/api/v1/plugins/<plugin>/artifacts")
@spec.api_doc(
    summary="Create or replace a plugin artifact; fetch and verify its source",
    description="201 once accepted (status fetching, or registered without a source). "
                "?wait=ready blocks until it is ready; a failed fetch then answers its "
                "own status (422 mismatch, 502 source, 504 too slow, 507 no space) and "
                "the record stays, failed.",
    tags=["plugin", "artifact"], operation_id="upsertPluginArtifact",
    request=ARTIFACT_REQUEST,
    parameters=[PLUGIN, spec.query_param("wait", spec.enum(list(WAIT_STATES))),
                spec.query_param("timeout", {"type": "integer", "minimum": 0},
                                 f"seconds for ?wait (default {DEFAULT_WAIT})")],
    responses={201: ARTIFACT, 400: spec.ERROR, 404: spec.ERROR, 408: spec.ERROR,
               422: spec.ERROR, 502: spec.ERROR, 504: spec.ERROR, 507: spec.ERROR},
)
async def upsert_artifact(plugin: str) -> tuple[Response, int]:
    body = await json_object()
    wait = request.args.get("wait", "")
    if wait and wait not in WAIT_STATES:
        raise ValidationError(f"wait: expected one of {', '.join(WAIT_STATES)}", field="wait")
    timeout = query_int("timeout", DEFAULT_WAIT, minimum=0) or 0
    result: Upserted = await call("artifacts", UpsertArtifact(plugin, body))
    record = result.record
    if wait and record.status == "fetching":
        with trio.move_on_after(timeout):
            await result.settled.wait()
        record = await call("artifacts", GetArtifact(plugin, record.artifact_name,
                                                     record.version))
        if record.status == "failed":
            raise FetchFailed(record)
        if record.status == "fetching":
            raise WaitTimeout(f"artifact {record.artifact_name} not ready within {timeout}s "
                              "(still fetching)", status=record.status)
    return jsonify(record.to_json()), 201


@blueprint.delete("/api/v1/plugins/<plugin>/artifacts")
@spec.api_doc(summary="Delete a plugin's artifacts (all, or one version's)",
              description="Cached bytes stay in the content-addressed media cache.",
              tags=["plugin", "artifact"], operation_id="deletePluginArtifacts",
              parameters=[PLUGIN, spec.query_param("version", spec.STRING,
                                                   "only this version")],
              responses={204: None, 404: spec.ERROR})
async def delete_artifacts(plugin: str) -> tuple[str, int]:
    await call("artifacts", DeleteArtifacts(plugin, _version(required=False)))
    return "", 204


@blueprint.get("/api/v1/plugins/<plugin>/artifacts/<artifact>")
@spec.api_doc(summary="A plugin artifact by name and version",
              tags=["plugin", "artifact"], operation_id="getPluginArtifact",
              parameters=[PLUGIN, ARTIFACT_NAME,
                          spec.query_param("version", spec.STRING, required=True)],
              responses={200: ARTIFACT, 400: spec.ERROR, 404: spec.ERROR})
async def get_artifact(plugin: str, artifact: str) -> Response:
    record = await call("artifacts", GetArtifact(plugin, artifact, _version(required=True)
                                                 or ""))
    return jsonify(record.to_json())


@blueprint.delete("/api/v1/plugins/<plugin>/artifacts/<artifact>")
@spec.api_doc(summary="Delete one plugin artifact (by name and version)",
              tags=["plugin", "artifact"], operation_id="deletePluginArtifact",
              parameters=[PLUGIN, ARTIFACT_NAME,
                          spec.query_param("version", spec.STRING, required=True)],
              responses={204: None, 400: spec.ERROR, 404: spec.ERROR})
async def delete_artifact(plugin: str, artifact: str) -> tuple[str, int]:
    await call("artifacts", DeleteArtifacts(plugin, _version(required=True), artifact))
    return "", 204
