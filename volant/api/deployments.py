"""Deployment routes (upstream sections 1.2-1.3), plus config rollouts through PATCH.

Bodies are checked completely before anything is persisted: the config is turned
into the create-VM request of the first replica by the same rules as
``POST /api/v1/vms`` (unknown plugin 404, disabled 409, bad media 422), so a
deployment cannot be created with a config its replicas could never use.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response, jsonify

from volant.api import spec as doc
from volant.api.common import context, json_object, service
from volant.orchestrator.deployment_manager import CreateDeployment, DeploymentManager
from volant.orchestrator.deployments import (
    DeleteDeployment,
    create_body,
    parse_create_deployment,
    parse_patch,
    replica_name,
)
from volant.orchestrator.vmcreate import prepare_create

blueprint = Blueprint("deployments", __name__)

DEPLOYMENT = doc.component("Deployment", doc.obj({
    "name": doc.STRING,
    "desired_replicas": doc.INTEGER,
    "ready_replicas": doc.INTEGER,
    "config": doc.ANY_OBJECT,
    "created_at": doc.DATE_TIME,
    "updated_at": doc.DATE_TIME,
    "replicas": doc.array(doc.STRING),
    "status": doc.STRING,
    "config_version": doc.INTEGER,
    "rollout": doc.ANY_OBJECT,
}, description="A deployment as upstream returned it, plus rollout state"))

DELETE_TIMEOUT = 600.0


def _manager() -> DeploymentManager:
    manager: DeploymentManager = service("deployments")
    return manager


async def _check_config(name: str, config: dict[str, Any]) -> None:
    """Resolve the config as a real replica would be, failing now rather than later."""
    ctx = context()
    await prepare_create(create_body(replica_name(name, 1), config),
                         ctx.services["plugins"], service("media"), deployment=name)


@blueprint.get("/api/v1/deployments")
@doc.api_doc(summary="List deployments", tags=["deployment"], operation_id="listDeployments",
             responses={200: doc.array(DEPLOYMENT)})
async def list_deployments() -> Response:
    return jsonify(_manager().list_views())


@blueprint.post("/api/v1/deployments")
@doc.api_doc(summary="Create a deployment of N replicas", tags=["deployment"],
             operation_id="createDeployment",
             request=doc.obj({"name": doc.STRING, "replicas": doc.INTEGER,
                              "config": doc.ANY_OBJECT}, required=["name", "config"]),
             responses={201: DEPLOYMENT, 400: doc.ERROR, 404: doc.ERROR, 409: doc.ERROR,
                        422: doc.ERROR})
async def create_deployment() -> tuple[Response, int]:
    spec = parse_create_deployment(await json_object())
    manager = _manager()
    await _check_config(spec.name, spec.config)
    view = await manager.ref.call(CreateDeployment(spec), timeout=30)
    return jsonify(view), 201


@blueprint.get("/api/v1/deployments/<name>")
@doc.api_doc(summary="Fetch a deployment", tags=["deployment"], operation_id="getDeployment",
             responses={200: DEPLOYMENT, 404: doc.ERROR})
async def get_deployment(name: str) -> Response:
    return jsonify(_manager().get_view(name))


@blueprint.patch("/api/v1/deployments/<name>")
@doc.api_doc(summary="Scale (replicas) and/or roll out a new config, one replica at a time",
             tags=["deployment"], operation_id="patchDeployment",
             request=doc.obj({"replicas": doc.INTEGER, "config": doc.ANY_OBJECT}),
             responses={200: DEPLOYMENT, 400: doc.ERROR, 404: doc.ERROR, 409: doc.ERROR,
                        422: doc.ERROR})
async def patch_deployment(name: str) -> Response:
    patch = parse_patch(await json_object())
    manager = _manager()
    ref = manager.deployment_ref(name)  # 404 before any (slower) config check
    if patch.config is not None:
        await _check_config(name, patch.config)
    await ref.call(patch, timeout=30)
    return jsonify(manager.get_view(name))


@blueprint.delete("/api/v1/deployments/<name>")
@doc.api_doc(summary="Delete a deployment and every replica", tags=["deployment"],
             operation_id="deleteDeployment",
             responses={204: None, 202: None, 404: doc.ERROR})
async def delete_deployment(name: str) -> tuple[str, int]:
    """204 once every replica and the file are gone; 202 if that takes very long."""
    ref = _manager().deployment_ref(name)
    done: trio.Event = await ref.call(DeleteDeployment(), timeout=30)
    with trio.move_on_after(DELETE_TIMEOUT):
        await done.wait()
    return ("", 204) if done.is_set() else ("", 202)
