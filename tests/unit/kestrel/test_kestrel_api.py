"""The agent's HTTP API against a real kestrel process on 127.0.0.1 (not PID 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kestrel_testutil import make_ext4, write_workload
from test_kestrel_workload import free_port

from kestrel.codec import encode_manifest

REPO = Path(__file__).resolve().parents[3]


class RunningAgent:
    def __init__(self, process: subprocess.Popen[str], workload_port: int) -> None:
        self.process = process
        self.workload_port = workload_port
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(20):
            raise AssertionError(f"agent did not start: {self.lines}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith("kestrel: listening on 127.0.0.1:"):
                self.port = int(line.rsplit(":", 1)[1])
            if line == "VOLANT_BOOT_OK":
                self._ready.set()

    def healthz(self) -> dict[str, Any]:
        response = self.client.get("/healthz")
        assert response.status_code == 200
        return dict(response.json())

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.healthz()
            if predicate(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"healthz never matched: {body}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def manifest_for(script: Path, port: int, **workload_env: str) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "name": "hello",
        "version": "0.1.0",
        "runtime": "hello",
        "workload": {
            "type": "http",
            "base_url": f"http://127.0.0.1:{port}",
            "entrypoint": [sys.executable, str(script)],
            "env": {"WPORT": str(port), **workload_env},
        },
        "health_check": {"endpoint": "/health", "timeout_ms": 2000},
        "actions": {
            "greet": {"method": "POST", "path": "/greet", "timeout_ms": 5000},
            "legacy": {"method": "GET", "path": "/v1/created"},
            "slow": {"method": "GET", "path": "/slow", "timeout_ms": 300},
        },
    }


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    agents: list[RunningAgent] = []

    def start(
        manifest: dict[str, Any] | None = None, cmdline: str = "", **env: str
    ) -> RunningAgent:
        script = write_workload(tmp_path)
        port = free_port()
        if manifest is None:
            manifest = manifest_for(script, port)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "KESTREL_LISTEN": "127.0.0.1:0",
            "KESTREL_CMDLINE": cmdline,
            "KESTREL_PID1": "0",
            "KESTREL_BACKOFF_INITIAL": "0.1",
            "KESTREL_BACKOFF_MAX": "0.5",
            "KESTREL_STOP_TIMEOUT": "3",
            **env,
        }
        if manifest:
            full_env["VOLANT_MANIFEST"] = encode_manifest(manifest)
        process = subprocess.Popen(
            [sys.executable, "-m", "kestrel"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        agent = RunningAgent(process, port)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


def test_healthz_reports_workload_and_timeline(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    body = agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    assert body["status"] == "ok"
    assert body["version"]
    assert isinstance(body["uptime"], str) and body["uptime"].endswith("s")
    assert body["uptime_seconds"] >= 0
    assert body["manifest"] == {"name": "hello", "version": "0.1.0", "source": "env"}
    workload = body["workload"]
    assert workload["state"] == "running"
    assert workload["restarts"] == 0
    assert isinstance(workload["pid"], int)
    assert {"kestrel", "api", "workload_healthy"} <= set(body["boot_timeline"])
    assert "kestrel: ready" in agent.lines
    assert any(line.startswith("kestrel: timeline ") for line in agent.lines)


def test_logs_tail_and_validation(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    everything = agent.client.get("/v1/logs").json()
    assert {"stream": "stderr", "line": "a line on stderr"} in [
        {"stream": e["stream"], "line": e["line"]} for e in everything
    ]
    assert all(set(entry) == {"stream", "line", "timestamp"} for entry in everything)
    assert everything[0]["timestamp"].endswith("Z")
    assert len(agent.client.get("/v1/logs", params={"tail": 1}).json()) == 1
    assert agent.client.get("/v1/logs", params={"tail": "lots"}).status_code == 400


def test_sse_stream_delivers_a_line_printed_by_the_workload(
    start_agent: Callable[..., RunningAgent],
) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    received: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=agent.url, timeout=10) as client,
        client.stream(
            "GET", "/v1/logs/stream", headers={"Accept": "text/event-stream"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines).startswith(":")  # the opening comment flushes the headers
        agent.client.get("/v1/echo-line?marker-4711")
        for line in lines:
            if line.startswith("data: "):
                received.append(json.loads(line[len("data: ") :]))
                if received[-1]["line"] == "echo:marker-4711":
                    break
    assert received[-1]["stream"] == "stdout"
    assert received[-1]["line"] == "echo:marker-4711"
    assert received[-1]["timestamp"]


def test_sse_backlog_with_tail(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    with (
        httpx.Client(base_url=agent.url, timeout=10) as client,
        client.stream("GET", "/v1/logs/stream", params={"tail": 2}) as response,
    ):
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) == 2:
                break
    assert [e["line"] for e in events] == [
        e["line"] for e in agent.client.get("/v1/logs?tail=2").json()
    ]


def test_action_is_proxied_to_the_workload_path(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    answer = agent.client.post("/v1/greet", json={"who": "kestrel"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["method"] == "POST"
    assert body["path"] == "/greet"
    assert json.loads(body["body"]) == {"who": "kestrel"}
    # An action whose path already starts with /v1 is reachable as written (upstream's volantd).
    legacy = agent.client.get("/v1/created")
    assert legacy.status_code == 201
    assert legacy.json()["path"] == "/v1/created"


def test_passthrough_strips_v1_and_hop_by_hop_headers(
    start_agent: Callable[..., RunningAgent],
) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    answer = agent.client.put(
        "/v1/things/7?x=1&y=2",
        content=b"payload",
        headers={"X-Test": "forwarded", "Connection": "keep-alive, X-Test"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["method"] == "PUT"
    assert body["path"] == "/things/7?x=1&y=2"
    assert body["body"] == "payload"
    # X-Test was named in Connection, so it is hop-by-hop and must not be forwarded.
    assert body["x_test"] is None
    assert answer.headers["x-workload"] == "yes"
    plain = agent.client.get("/v1/things", headers={"X-Test": "kept"}).json()
    assert plain["x_test"] == "kept"
    assert agent.client.get("/nowhere").status_code == 404


def test_openapi_comes_from_the_workload(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    document = agent.client.get("/v1/openapi")
    assert document.status_code == 200
    assert document.json()["openapi"] == "3.0.3"


def test_openapi_from_a_guest_file_and_no_workload(
    start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    spec_file = tmp_path / "openapi.json"
    spec_file.write_text('{"openapi": "3.1.0", "info": {"title": "file", "version": "1"}}')
    agent = start_agent({"name": "doc-only", "version": "1", "openapi": str(spec_file)})
    body = agent.wait_for(lambda b: b.get("manifest_error") is not None)
    assert body["workload"] is None
    assert "entrypoint" in body["manifest_error"]
    assert agent.client.get("/v1/openapi").json()["info"]["title"] == "file"
    assert agent.client.get("/v1/anything").status_code == 503


def test_system_info_structure(start_agent: Callable[..., RunningAgent], tmp_path: Path) -> None:
    root = tmp_path / "fake-root"
    (root / "sys/block/vda").mkdir(parents=True)
    (root / "sys/block/vda/size").write_text("8192\n")
    (root / "dev").mkdir()
    make_ext4(root / "dev/vda", "volant-root")
    (root / "proc").mkdir()
    (root / "proc/uptime").write_text("12.50 3.00\n")
    agent = start_agent(
        cmdline="console=ttyS0 volant.api_key=secret volant.plugin=hello",
        KESTREL_ROOT=str(root),
    )
    info = agent.client.get("/v1/system/info").json()
    assert info["kernel"]["release"] == os.uname().release
    assert info["uptime_seconds"] == 12.5
    assert info["block_devices"] == [
        {
            "name": "vda",
            "path": str(root / "dev/vda"),
            "size_bytes": 8192 * 512,
            "fstype": "ext4",
            "label": "volant-root",
        }
    ]
    assert isinstance(info["interfaces"], list)
    assert info["cloud_init"] is None  # no seed disk
    assert info["cmdline"] == {"console": "ttyS0", "volant.plugin": "hello"}  # key hidden


def test_crashing_workload_restarts_are_visible_in_healthz(
    start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    script = write_workload(tmp_path)
    port = free_port()
    agent = start_agent(manifest_for(script, port, WMODE="crash"))
    body = agent.wait_for(lambda b: b["workload"] and b["workload"]["restarts"] >= 2)
    assert body["workload"]["last_exit"]["code"] == 3
    assert body["workload"]["healthy"] is False
    assert body["status"] == "ok"  # the agent (and the VM) stay up


def test_orphans_are_reaped_and_the_workload_keeps_its_status(
    start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    script = write_workload(tmp_path)
    port = free_port()
    agent = start_agent(manifest_for(script, port, WMODE="orphan"), KESTREL_SUBREAPER="1")
    body = agent.wait_for(lambda b: b["reaper"]["orphans_reaped"] >= 1 and b["workload"]["healthy"])
    assert body["workload"]["restarts"] == 0
    assert body["workload"]["state"] == "running"
    children = Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children")
    if children.exists():
        for pid in children.read_text().split():
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
            assert state != "Z", f"zombie {pid} left behind"


def test_shutdown_endpoint_stops_workload_and_exits(
    start_agent: Callable[..., RunningAgent],
) -> None:
    agent = start_agent()
    body = agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    workload_pid = body["workload"]["pid"]
    answer = agent.client.post("/v1/system/shutdown")
    assert answer.status_code == 202
    assert agent.process.wait(10) == 0
    assert any("workload stopped" in line for line in agent.lines)
    with pytest.raises(ProcessLookupError):
        os.kill(workload_pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{agent.url}/healthz", timeout=2)


def test_sigterm_stops_the_agent(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["state"] == "running")
    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(10) == 0
    assert any("shutdown requested (SIGTERM)" in line for line in agent.lines)


def test_action_timeout_is_enforced(start_agent: Callable[..., RunningAgent]) -> None:
    agent = start_agent()
    agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    started = time.monotonic()
    answer = agent.client.get("/v1/slow")
    elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert "timed out" in answer.json()["error"]
    assert elapsed < 1.5  # the action's 300 ms, not the workload's 2 s
    # The same path without a matching action method falls through to the passthrough.
    assert agent.client.post("/v1/slow").status_code == 200


def test_manifest_fetched_from_the_api_when_not_on_the_cmdline(
    start_agent: Callable[..., RunningAgent], tmp_path: Path
) -> None:
    import http.server

    script = write_workload(tmp_path)
    manifest = manifest_for(script, free_port())
    seen_keys: list[str | None] = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen_keys.append(self.headers.get("X-Volant-API-Key"))
            ok = self.path == "/api/v1/plugins/hello/manifest"
            body = json.dumps(manifest if ok else {"error": "nope"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        agent = start_agent(
            {},
            cmdline=(
                f"volant.api_host=127.0.0.1 volant.api_port={server.server_address[1]} "
                "volant.plugin=hello volant.api_key=k3y"
            ),
        )
        body = agent.wait_for(lambda b: b["workload"] and b["workload"]["healthy"])
    finally:
        server.shutdown()
        server.server_close()
    assert body["manifest"]["source"] == "api"
    assert seen_keys == ["k3y"]
