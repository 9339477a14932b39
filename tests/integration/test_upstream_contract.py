"""On the routes both share, our answers validate against the original's published schemas.

Clients written for upstream Volant must keep working: we may add fields, never drop or
retype one. Every response below comes from a live volantd (hollow VMM) and is checked
against the matching response schema of ../shared/upstream-openapi.json (a copy lives in
tests/unit/api/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import install, write_plugin

UPSTREAM = json.loads(
    (Path(__file__).resolve().parents[1] / "unit" / "api" / "upstream-openapi.json").read_text())


def _inline(node: Any) -> Any:
    components = UPSTREAM["components"]["schemas"]
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return _inline(components[ref.rsplit("/", 1)[1]])
        return {key: _inline(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item) for item in node]
    return node


def check(response: httpx.Response, path: str, method: str) -> None:
    """Validate ``response`` against upstream's schema for (path, method, status)."""
    operation = UPSTREAM["paths"][path][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None or "default" in operation["responses"], (
        f"{method.upper()} {path}: upstream never answers {response.status_code}")
    schema = ((documented or {}).get("content", {}).get("application/json", {})
              .get("schema"))
    if schema is None:
        return
    OAS30Validator(_inline(schema)).validate(response.json())


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path) as proc:
        yield proc


def test_vm_plugin_deployment_and_system_answers_match_upstream(daemon: VolantdProcess,
                                                                tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        check(client.get("/api/v1/plugins"), "/api/v1/plugins", "get")
        check(client.get("/api/v1/plugins/demo"), "/api/v1/plugins/{plugin}", "get")
        created = client.post("/api/v1/vms", params={"wait": "running"},
                              json={"name": "compat", "plugin": "demo"})
        assert created.status_code == 201
        check(created, "/api/v1/vms", "post")
        check(client.get("/api/v1/vms"), "/api/v1/vms", "get")
        check(client.get("/api/v1/vms/compat"), "/api/v1/vms/{name}", "get")
        check(client.get("/api/v1/vms/compat/config"), "/api/v1/vms/{name}/config", "get")
        check(client.get("/api/v1/vms/compat/config/history"),
              "/api/v1/vms/{name}/config/history", "get")
        check(client.post("/api/v1/vms/compat/stop"), "/api/v1/vms/{name}/stop", "post")
        check(client.post("/api/v1/vms/compat/start"), "/api/v1/vms/{name}/start", "post")
        check(client.post("/api/v1/vms/compat/restart"), "/api/v1/vms/{name}/restart", "post")
        deployment = client.post("/api/v1/deployments",
                                 json={"name": "grp", "replicas": 1, "config": {"plugin": "demo"}})
        assert deployment.status_code == 201, deployment.text
        check(deployment, "/api/v1/deployments", "post")
        check(client.get("/api/v1/deployments"), "/api/v1/deployments", "get")
        check(client.get("/api/v1/deployments/grp"), "/api/v1/deployments/{name}", "get")
        check(client.patch("/api/v1/deployments/grp", json={"replicas": 2}),
              "/api/v1/deployments/{name}", "patch")
        for path in ("/api/v1/system/status", "/api/v1/system/summary",
                     "/api/v1/system/info", "/healthz"):
            check(client.get(path), path, "get")
        summary = client.get("/api/v1/system/summary").json()
        assert summary["total_vms"] >= 1 and summary["total_plugins"] == 1
        # Error bodies: upstream's {"error", "details": {string: string}} model.
        check(client.get("/api/v1/vms/nope"), "/api/v1/vms/{name}", "get")
        bad = client.post("/api/v1/vms", json={"name": "x", "plugin": "demo", "cpu_cores": "2"})
        assert bad.status_code == 400
        check(bad, "/api/v1/vms", "post")
        assert client.delete("/api/v1/deployments/grp").status_code == 204
        assert client.delete("/api/v1/vms/compat").status_code == 204
