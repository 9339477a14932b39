"""Deployments (incl. rollout status), websockets (console via tmux, logs) and agent calls."""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import VolantdProcess
from tests.integration.cli.volar_run import VOLAR, volar
from tests.tmux import Tmux


@pytest.fixture(scope="module")
def plugin(daemon: VolantdProcess, manifest_path: Path) -> str:
    assert volar(daemon.url, "plugins", "install", str(manifest_path)).code == 0
    return "demo"


@pytest.fixture(scope="module")
def vm(daemon: VolantdProcess, plugin: str) -> str:
    assert volar(daemon.url, "vms", "create", "streams", "--plugin", plugin).code == 0
    return "streams"


def api(daemon: VolantdProcess, path: str) -> Any:
    with daemon.client() as client:
        response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


def test_deployment_commands(daemon: VolantdProcess, plugin: str) -> None:
    config = json.dumps({"plugin": plugin})
    created = volar(daemon.url, "deployments", "create", "grp", "--config", config,
                    "--replicas", "2", "-o", "json")
    assert created.code == 0, created.err
    assert created.json()["ready_replicas"] == 2  # waited for the rollout
    assert created.json() == api(daemon, "/api/v1/deployments/grp")

    listed = volar(daemon.url, "deployments", "list")
    rows = [line.split() for line in listed.out.splitlines()]
    assert rows[0] == ["NAME", "DESIRED", "READY", "STATUS", "CONFIG", "UPDATED"]
    assert rows[1][:5] == ["grp", "2", "2", "ready", "1"]
    assert volar(daemon.url, "deployments", "list", "-o", "json").json() == api(
        daemon, "/api/v1/deployments")
    got = volar(daemon.url, "deployments", "get", "grp").out
    assert "desired_replicas" in got and "grp-1" in got

    scaled = volar(daemon.url, "deployments", "scale", "grp", "3")
    assert scaled.out.strip() == "deployment grp scaled to 3: 3/3 ready"
    assert api(daemon, "/api/v1/vms/grp-3")["status"] == "running"
    via_vms = volar(daemon.url, "vms", "scale", "grp", "--replicas", "1", "-o", "json")
    assert via_vms.json()["desired_replicas"] == 1

    new_config = json.dumps({"plugin": plugin, "resources": {"cpu_cores": 2, "memory_mb": 192}})
    updated = volar(daemon.url, "deployments", "update", "grp", "--config", new_config,
                    "-o", "json", timeout=120)
    assert updated.code == 0, updated.err
    assert updated.json()["config_version"] == 2
    assert api(daemon, "/api/v1/vms/grp-1")["memory_mb"] == 192
    status = volar(daemon.url, "deployments", "status", "grp", "--wait")
    assert status.out.strip().startswith("deployment grp: 1/1 replicas ready, status ready")

    assert volar(daemon.url, "deployments", "delete", "grp").out.strip() == \
        "deployment grp deleted"
    volar(daemon.url, "deployments", "get", "grp").assert_one_line_error("http 404", "grp")


def test_deployment_bad_config_is_one_line(daemon: VolantdProcess, plugin: str) -> None:
    result = volar(daemon.url, "deployments", "create", "bad", "--config",
                   '{"plugin": "missing"}')
    result.assert_one_line_error("http 404", "missing")
    volar(daemon.url, "deployments", "create", "bad", "--config", "{oops"
          ).assert_one_line_error("--config", "invalid JSON")


def test_logs_errors_are_one_line(daemon: VolantdProcess, vm: str) -> None:
    volar(daemon.url, "vms", "logs", "ghost").assert_one_line_error("ghost not found")
    # The hollow VMM has no guest agent, so there is no log stream to relay.
    volar(daemon.url, "vms", "logs", vm).assert_one_line_error("1013", "not ready")


def test_console_unknown_vm(daemon: VolantdProcess) -> None:
    result = volar(daemon.url, "vms", "console", "ghost", stdin="")
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == "volar: vm ghost not found"


def test_agent_call_without_agent_is_one_line(daemon: VolantdProcess, vm: str) -> None:
    result = volar(daemon.url, "vms", "call", vm, "GET:/v1/health")
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith("volar: http 5")



@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is required for the console test")
    session = Tmux(tmp_path / "tmux.sock")
    try:
        yield session
    finally:
        session.kill_server()


def test_console_in_a_terminal(daemon: VolantdProcess, vm: str, tmux: Tmux) -> None:
    command = " ".join(shlex.quote(part) for part in
                       [*VOLAR, "--api", daemon.url, "vms", "console", vm])
    tmux.start(f"{command}; echo EXIT=$?")
    tmux.wait_for(lambda: f"hollow-vmm console for {vm}" in tmux.screen(),
                  "no console banner from the guest")
    tmux.keys("echo-me-123", "Enter")
    tmux.wait_for(lambda: "echo-me-123" in tmux.screen(), "keystrokes not echoed by the guest")
    tmux.keys("C-c")  # raw mode: Ctrl-C goes to the guest, volar keeps running
    time.sleep(0.5)
    assert not tmux.dead() and "EXIT=" not in tmux.screen()
    tmux.keys("C-]")
    tmux.wait_for(lambda: "EXIT=0" in tmux.screen(), "Ctrl-] did not end the session")
    assert "console closed" in tmux.screen()
    assert "Traceback" not in tmux.screen()


def test_console_on_the_local_serial_socket(daemon: VolantdProcess, vm: str,
                                            tmux: Tmux) -> None:
    """Upstream's `vms console --socket PATH`: straight to the serial socket, no API."""
    with daemon.client() as client:
        serial = client.get(f"/api/v1/vms/{vm}").json()["serial_socket"]
    command = " ".join(shlex.quote(part) for part in
                       [*VOLAR, "--api", "http://127.0.0.1:9", "vms", "console", vm,
                        "--socket", serial])
    tmux.start(f"{command}; echo EXIT=$?")
    tmux.wait_for(lambda: f"hollow-vmm console for {vm}" in tmux.screen(),
                  "no console banner from the socket")
    tmux.keys("straight-456", "Enter")
    tmux.wait_for(lambda: "straight-456" in tmux.screen(), "keystrokes not echoed")
    tmux.keys("C-]")
    tmux.wait_for(lambda: "EXIT=0" in tmux.screen(), "Ctrl-] did not end the session")
    assert "Traceback" not in tmux.screen()


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "demo workload", "version": "1"},
    "paths": {
        "/things/{id}": {"get": {"operationId": "getThing", "summary": "One thing"}},
        "/health": {"get": {"operationId": "health", "summary": "Liveness"},
                    "post": {"summary": "no operation id"}},
    },
}


@pytest.fixture
def openapi_url() -> Iterator[str]:
    """The workload's OpenAPI document served on loopback (the manifest points at it)."""
    import http.server
    import threading

    body = json.dumps(OPENAPI).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/openapi.json"
    finally:
        server.shutdown()
        server.server_close()


def test_operations_and_call(daemon: VolantdProcess, tmp_path: Path, openapi_url: str) -> None:
    from tests.vmtools import write_plugin

    manifest = write_plugin(tmp_path, "apidemo", openapi=openapi_url)
    path = tmp_path / "apidemo.json"
    path.write_text(json.dumps(manifest))
    assert volar(daemon.url, "plugins", "install", str(path)).code == 0
    assert volar(daemon.url, "vms", "create", "api-vm", "--plugin", "apidemo").code == 0

    ops = volar(daemon.url, "vms", "operations", "api-vm", "-o", "json").json()
    assert ops == [
        {"operation_id": "health", "method": "GET", "path": "/health", "summary": "Liveness"},
        {"operation_id": "", "method": "POST", "path": "/health",
         "summary": "no operation id"},
        {"operation_id": "getThing", "method": "GET", "path": "/things/{id}",
         "summary": "One thing"},
    ]
    table = volar(daemon.url, "vms", "operations", "api-vm").out.splitlines()
    assert table[0].split() == ["OPERATION", "METHOD", "PATH", "SUMMARY"]
    assert table[3].split()[:3] == ["getThing", "GET", "/things/{id}"]

    # The hollow VMM has no agent: the call is resolved and proxied, then refused cleanly.
    call = volar(daemon.url, "vms", "call", "api-vm", "getThing", "--param", "id=5",
                 "--query", "full=1", "-v")
    assert call.code == 1
    assert f"> GET {daemon.url}/api/v1/vms/api-vm/agent/things/5?full=1" in call.err
    assert call.err.strip().splitlines()[-1].startswith("volar: http 502: ")
    unfilled = volar(daemon.url, "vms", "call", "api-vm", "getThing")
    unfilled.assert_one_line_error("unfilled parameters")
    volar(daemon.url, "vms", "call", "api-vm", "nope").assert_one_line_error("no operation")
