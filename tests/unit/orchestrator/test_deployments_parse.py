"""Deployment request parsing, replica naming and the status word (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from volant.errors import ValidationError
from volant.orchestrator.deployments import (
    create_body,
    deployment_status,
    new_document,
    parse_create_deployment,
    parse_patch,
    replica_index,
    replica_name,
)
from volant.orchestrator.vmrequest import parse_create


def test_replica_names_round_trip_and_reject_lookalikes() -> None:
    assert replica_name("web", 3) == "web-3"
    assert replica_index("web", "web-3") == 3
    assert replica_index("web", "web-12") == 12
    for other in ("web-0", "web-03", "web-x", "web-", "webx-1", "web-1-2", "web1", "api-1"):
        assert replica_index("web", other) is None, other
    # A deployment whose name is a prefix of another's must not claim its replicas.
    assert replica_index("web", "web-api-1") is None


def test_create_defaults_and_limits() -> None:
    spec = parse_create_deployment({"name": "web", "config": {"plugin": "demo"}})
    assert spec.replicas == 0  # upstream's default when omitted
    assert spec.config == {"plugin": "demo"}
    spec = parse_create_deployment({"name": "web", "replicas": 4, "rollout_timeout": 5,
                                    "min_ready_seconds": 0, "config": {"plugin": "demo"}})
    assert (spec.replicas, spec.rollout_timeout, spec.min_ready_seconds) == (4, 5.0, 0.0)


@pytest.mark.parametrize("body", [
    {"config": {"plugin": "demo"}},
    {"name": "", "config": {"plugin": "demo"}},
    {"name": "UPPER", "config": {"plugin": "demo"}},
    {"name": "x" * 60, "config": {"plugin": "demo"}},  # no room for "-<index>"
    {"name": "web"},
    {"name": "web", "config": "demo"},
    {"name": "web", "config": {"plugin": "demo", "name": "web-1"}},
    {"name": "web", "config": {"plugin": "demo", "surprise": True}},
    {"name": "web", "replicas": True, "config": {"plugin": "demo"}},
    {"name": "web", "replicas": 1.5, "config": {"plugin": "demo"}},
    {"name": "web", "replicas": 100000, "config": {"plugin": "demo"}},
    {"name": "web", "rollout_timeout": 0, "config": {"plugin": "demo"}},
    {"name": "web", "min_ready_seconds": "1", "config": {"plugin": "demo"}},
    {"name": "web", "other": 1, "config": {"plugin": "demo"}},
])
def test_create_rejects_bad_bodies(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_create_deployment(body)


def test_patch_needs_replicas_or_config() -> None:
    with pytest.raises(ValidationError, match="replicas field required"):
        parse_patch({})
    with pytest.raises(ValidationError):
        parse_patch({"replicas": -1})
    with pytest.raises(ValidationError):
        parse_patch({"replicas": 2, "colour": "red"})
    assert parse_patch({"replicas": 2}).replicas == 2
    both = parse_patch({"replicas": 0, "config": {"plugin": "demo"}, "rollout_timeout": 9})
    assert (both.replicas, both.config, both.rollout_timeout) == (0, {"plugin": "demo"}, 9.0)


def test_create_body_is_a_valid_vm_request_with_every_section() -> None:
    config = {"plugin": "demo", "cpu_cores": 3, "kernel_cmdline": "quiet",
              "resources": {"memory_mb": 256}, "network": {"mode": "vsock"},
              "restart_policy": {"name": "no"}}
    body = create_body("web-2", config)
    request = parse_create(body)
    assert request.name == "web-2"
    assert request.plugin == "demo"
    assert request.cpu_cores == 3 and request.memory_mb == 256
    assert request.kernel_cmdline == "quiet"
    assert request.restart_policy.name.value == "no"
    assert body["config"]["network"] == {"mode": "vsock"}
    assert "name" not in config  # the deployment's config is not modified


def test_status_word() -> None:
    doc = new_document(parse_create_deployment(
        {"name": "web", "replicas": 2, "config": {"plugin": "demo"}}))
    assert deployment_status(doc, [1, 2], 2) == "ready"
    assert deployment_status(doc, [1, 2], 1) == "degraded"
    assert deployment_status(doc, [1], 1) == "scaling"
    assert deployment_status(doc, [1, 2, 3], 3) == "scaling"
    assert deployment_status({**doc, "rollout": {"state": "in_progress"}}, [1, 2], 2) == (
        "rolling_out")
    assert deployment_status({**doc, "rollout": {"state": "failed"}}, [1, 2], 2) == (
        "rollout_failed")
    assert deployment_status({**doc, "deleting": True}, [1, 2], 2) == "deleting"


def test_config_nulls_are_dropped_so_the_stored_config_compares_equal() -> None:
    spec = parse_create_deployment({"name": "web", "config": {
        "plugin": "demo", "api_port": None, "resources": {"cpu_cores": 2, "memory_mb": None}}})
    assert spec.config == {"plugin": "demo", "resources": {"cpu_cores": 2}}
