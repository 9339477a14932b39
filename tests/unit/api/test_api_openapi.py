"""The generated OpenAPI document: valid 3.1, complete, fresh on disk, upstream-compatible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_unit_support import MakeApp
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from quart import Response, websocket

from volant.api import spec
from volant.api.openapi import build_openapi, default_document, main, openapi_path, render
from volant.orchestrator.events import EventBus

REPO = Path(__file__).resolve().parents[3]
#: The original's published contract (a copy of ../shared/upstream-openapi.json).
UPSTREAM = Path(__file__).with_name("upstream-openapi.json")


def test_default_document_is_valid_openapi_31() -> None:
    document = default_document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_docs_openapi_json_is_up_to_date() -> None:
    on_disk = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert on_disk == json.loads(render(default_document())), (
        "docs/openapi.json is stale: run python -m volant.api.openapi --output docs/openapi.json"
    )


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    assert main(["--output", str(target)]) == 0
    assert main(["--output", str(target), "--check"]) == 0
    target.write_text(target.read_text().replace('"3.1.0"', '"3.0.0"'))
    assert main(["--output", str(target), "--check"]) == 1


def test_every_registered_route_is_documented(make_app: MakeApp) -> None:
    app = make_app()

    @app.websocket("/ws/v1/test/<name>/tail")
    async def tail(name: str) -> None:
        await websocket.accept()

    @app.route("/api/v1/test/<int:n>/<path:rest>", methods=["GET", "POST"])
    async def undocumented(n: int, rest: str) -> Response:
        return Response("")

    document = build_openapi(app, "http://h", "t")
    validate(document)
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path, _ = openapi_path(rule.rule)
        assert path in document["paths"], rule.rule
    ws = document["paths"]["/ws/v1/test/{name}/tail"]["get"]
    assert ws["x-websocket"] is True and "101" in ws["responses"]
    assert {"ApiKeyQuery": []} in ws["security"]
    ops = document["paths"]["/api/v1/test/{n}/{rest}"]
    assert set(ops) == {"get", "post"}
    assert ops["get"]["operationId"] != ops["post"]["operationId"]
    assert ops["get"]["x-undocumented"] is True
    params = {p["name"]: p["schema"] for p in ops["get"]["parameters"]}
    assert params["n"]["type"] == "integer" and params["rest"]["type"] == "string"
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_security_and_public_routes() -> None:
    document = default_document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header",
                                       "name": "X-Volant-API-Key"}
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "401" not in document["paths"]["/healthz"]["get"]["responses"]
    status = document["paths"]["/api/v1/system/status"]["get"]
    assert "security" not in status  # the global requirement applies
    assert status["responses"]["401"]["content"]["application/json"]["schema"] == spec.ERROR


def test_decorator_metadata_lands_in_the_operation(make_app: MakeApp) -> None:
    app = make_app()

    @app.post("/api/v1/test/things/<name>")
    @spec.api_doc(summary="Make a thing", tags=["test"], operation_id="makeThing",
                  request=spec.obj({"size": spec.INTEGER}, required=["size"]),
                  parameters=[spec.path_param("name", description="thing name"),
                              spec.query_param("dry_run", spec.BOOLEAN)],
                  responses={201: spec.VM, 204: None, 409: spec.ERROR})
    async def make_thing(name: str) -> Response:
        return Response("")

    op = build_openapi(app, "http://h", "t")["paths"]["/api/v1/test/things/{name}"]["post"]
    assert op["operationId"] == "makeThing" and op["tags"] == ["test"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["required"] == ["size"]
    assert [p["name"] for p in op["parameters"]] == ["name", "dry_run"]
    assert op["parameters"][0]["description"] == "thing name"
    assert op["responses"]["201"]["content"]["application/json"]["schema"] == spec.VM
    assert "content" not in op["responses"]["204"]
    assert list(op["responses"]) == ["201", "204", "401", "403", "409", "default"]


async def test_served_document_uses_the_request_host(make_app: MakeApp) -> None:
    client = make_app().test_client()
    resp = await client.get("/openapi", headers={"Host": "volant.example:9000"})
    document = await resp.get_json()
    assert document["servers"][0]["url"] == "http://volant.example:9000"
    assert document["paths"].keys() == build_openapi(
        client.app, "x", "test")["paths"].keys()
    assert (await (await client.get("/openapi.json")).get_json())["openapi"] == "3.1.0"


def test_component_names_cannot_be_reused_for_another_shape() -> None:
    with pytest.raises(ValueError):
        spec.component("Error", {"type": "string"})


def test_nullable_is_written_the_31_way() -> None:
    assert spec.nullable(spec.INTEGER) == {"type": ["integer", "null"]}
    assert spec.nullable(spec.VM) == {"anyOf": [spec.VM, {"type": "null"}]}


# -- compatibility with the original's published response schemas -----------------------------

def _inline(node: Any, components: dict[str, Any]) -> Any:
    """Replace ``#/components/schemas/X`` references by the schema they name."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {key: _inline(value, components) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, components) for item in node]
    return node


def _upstream_schema(path: str) -> Any:
    upstream = json.loads(UPSTREAM.read_text())
    schema = upstream["paths"][path]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    return _inline(schema, upstream["components"]["schemas"])


async def test_shared_routes_validate_against_upstream_schemas(
        make_app: MakeApp, bus: EventBus) -> None:
    services = {
        "events": bus,
        "vm_counts": lambda: {"running": 2, "stopped": 1},
        "vm_summary": lambda: {"total_vms": 3, "by_status": {"RUNNING": 2, "stopped": 1},
                               "by_runtime": {"hello": 3}},
        "plugin_summary": lambda: {"plugins": [{"name": "hello", "version": "1.0",
                                                "enabled": True}]},
    }
    client = make_app(services=services).test_client()
    for path in ("/healthz", "/api/v1/system/info", "/api/v1/system/status",
                 "/api/v1/system/summary"):
        resp = await client.get(path)
        assert resp.status_code == 200
        body = await resp.get_json()
        errors = list(OAS30Validator(_upstream_schema(path)).iter_errors(body))
        assert not errors, (path, errors)
    missing = await client.get("/api/v1/nope")
    error_schema = json.loads(UPSTREAM.read_text())["components"]["schemas"]["Error"]
    assert not list(OAS30Validator(error_schema).iter_errors(await missing.get_json()))
