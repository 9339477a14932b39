"""Websockets and agent-facing routes against a live volantd (hollow VMM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import create, install, write_plugin


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path) as proc:
        yield proc


def ws_url(daemon: VolantdProcess, path: str) -> str:
    return daemon.url.replace("http://", "ws://") + path


async def test_console_bridges_bytes_both_ways(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path, network="vsock"))  # no IP: console still works
        create(client, "con-1")
    payload = bytes(range(256)) + b"hello console\r\n"
    async with open_websocket_url(ws_url(daemon, "/ws/v1/vms/con-1/console")) as ws:
        await ws.send_message(payload)
        received = b""
        with trio.fail_after(10):
            while payload not in received:
                message = await ws.get_message()
                assert isinstance(message, bytes)  # binary frames, never re-encoded text
                received += message
    # The hollow VMM's serial socket greets, then echoes byte for byte.
    assert received.endswith(payload)


async def test_console_of_unknown_vm_closes_with_reason(daemon: VolantdProcess) -> None:
    async with open_websocket_url(ws_url(daemon, "/ws/v1/vms/nope/console")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason.code == 1000 and "not found" in (info.value.reason.reason or "")


async def test_logs_of_an_agentless_vm_closes_try_again(daemon: VolantdProcess,
                                                        tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "quiet")
    async with open_websocket_url(ws_url(daemon, "/ws/v1/vms/quiet/logs")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason.code == 1013


def test_agent_routes_refuse_cleanly_without_a_guest_agent(daemon: VolantdProcess,
                                                           tmp_path: Path) -> None:
    manifest = write_plugin(tmp_path, actions={"greet": {"method": "POST", "path": "/greet"}})
    with daemon.client() as client:
        install(client, manifest)
        create(client, "noagent")
        proxied = client.get("/api/v1/vms/noagent/agent/healthz")
        assert proxied.status_code == 502 and "no guest agent" in proxied.json()["error"]
        action = client.post("/api/v1/vms/noagent/actions/demo/greet", json={})
        assert action.status_code == 502
        assert client.post("/api/v1/vms/noagent/actions/demo/nope", json={}).status_code == 404
        assert client.post("/api/v1/vms/noagent/actions/demo/greet",
                           content=b"[1]").status_code == 400
        assert client.get("/api/v1/vms/missing/agent/healthz").status_code == 404
        assert client.get("/api/v1/vms/noagent/openapi").status_code == 404
        client.post("/api/v1/vms/noagent/stop")
        stopped = client.get("/api/v1/vms/noagent/agent/healthz")
        assert stopped.status_code == 409
        assert json.loads(stopped.text)["error"] == "vm noagent not running"
