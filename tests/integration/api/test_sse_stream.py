"""SSE ``/api/v1/events/vms`` over a real hypercorn server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import trio
from api_server_support import API_KEY, ServeApp, build_app, settle
from api_sse_client import Frame, events, frames

from volant.orchestrator.events import EventBus

KEY = {"X-Volant-API-Key": API_KEY}
AUTH_ENV = {"VOLANT_API_KEY": API_KEY}


async def _collect(url: str, count: int, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, timeout: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        async with client.stream("GET", f"{url}/api/v1/events/vms",
                                 headers={**KEY, **(headers or {})}, params=params) as resp:
            assert resp.status_code == 200
            with trio.fail_after(timeout):
                async for frame in events(resp):
                    got.append(frame)
                    if len(got) >= count:
                        break
    return got


async def test_frames_carry_id_event_name_and_upstream_payload(
        tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    url = await serve(build_app(tmp_path, AUTH_ENV, {"events": bus}))
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"{url}/api/v1/events/vms", headers=KEY) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["cache-control"] == "no-cache"
            bus.publish("VM_CREATED", "web1", "starting", message="vm record created")
            bus.publish("VM_RUNNING", "web1", "running", pid=4242, ip_address="192.168.127.5")
            got: list[Frame] = []
            with trio.fail_after(5):
                async for frame in events(resp):
                    got.append(frame)
                    if len(got) == 2:
                        break
    assert [f.event for f in got] == ["VM_CREATED", "VM_RUNNING"]
    first, second = (f.json for f in got)
    assert [f.id for f in got] == [str(first["id"]), str(second["id"])]
    assert second["id"] == first["id"] + 1
    assert first["type"] == "VM_CREATED" and first["name"] == "web1"
    assert first["status"] == "starting" and first["message"] == "vm record created"
    assert second["pid"] == 4242 and second["ip_address"] == "192.168.127.5"
    assert second["timestamp"].endswith("Z")


async def test_filters_by_name_and_type(tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    url = await serve(build_app(tmp_path, AUTH_ENV, {"events": bus}))
    for i in range(3):
        bus.publish("VM_CREATED", f"vm{i}", "starting")
        bus.publish("VM_CRASHED", f"vm{i}", "crashed")
    await settle(bus)
    by_name = await _collect(url, 4, {"Last-Event-ID": "0"}, {"name": "vm0,vm2"})
    assert {f.json["name"] for f in by_name} == {"vm0", "vm2"}
    by_type = await _collect(url, 3, {"Last-Event-ID": "0"}, {"type": "vm_crashed"})
    assert [f.json["name"] for f in by_type] == ["vm0", "vm1", "vm2"]
    assert {f.event for f in by_type} == {"VM_CRASHED"}
    both = await _collect(url, 1, params={"last_event_id": "0", "name": "vm1",
                                          "type": "VM_CREATED"})
    assert (both[0].json["name"], both[0].event) == ("vm1", "VM_CREATED")


async def test_replay_after_disconnect_has_no_gap_and_no_duplicate(
        tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    url = await serve(build_app(tmp_path, AUTH_ENV, {"events": bus}))
    for i in range(5):
        bus.publish("VM_LOG", "vm", "running", line=f"first {i}")
    await settle(bus)
    first = await _collect(url, 3, {"Last-Event-ID": "0"})
    last_seen = first[-1].id
    assert last_seen is not None
    # Missed while disconnected:
    for i in range(5):
        bus.publish("VM_LOG", "vm", "running", line=f"second {i}")
    await settle(bus)
    second = await _collect(url, 7, {"Last-Event-ID": last_seen})
    ids = [int(f.id or 0) for f in first + second]
    assert ids == list(range(1, 11))


async def test_replay_across_event_bus_restart(tmp_path: Path, serve: ServeApp) -> None:
    events_dir = tmp_path / "events"
    async with trio.open_nursery() as nursery:
        old = EventBus(events_dir)
        await nursery.start(old.run)
        for i in range(6):
            old.publish("VM_RUNNING", f"vm{i}", "running")
        await settle(old)
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        new = EventBus(events_dir)
        await nursery.start(new.run)
        url = await serve(build_app(tmp_path, AUTH_ENV, {"events": new}))
        new.publish("VM_STOPPED", "vm9", "stopped")
        got = await _collect(url, 4, {"Last-Event-ID": "3"})
        assert [int(f.id or 0) for f in got] == [4, 5, 6, 7]
        assert [f.event for f in got] == ["VM_RUNNING"] * 3 + ["VM_STOPPED"]
        nursery.cancel_scope.cancel()


async def test_heartbeat_comment_on_a_quiet_stream(
        tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    app = build_app(tmp_path, AUTH_ENV, {"events": bus})
    app.config["VOLANT_SSE_HEARTBEAT"] = 0.2
    url = await serve(app)
    keepalives = 0
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"{url}/api/v1/events/vms", headers=KEY) as resp:
            with trio.fail_after(5):
                async for frame in frames(resp):
                    if "keepalive" in frame.comments:
                        keepalives += 1
                        if keepalives == 3:
                            break
    assert keepalives == 3


async def test_stream_outlives_a_configured_response_timeout(
        tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    app = build_app(tmp_path, AUTH_ENV, {"events": bus})
    app.config["RESPONSE_TIMEOUT"] = 2
    app.config["VOLANT_SSE_HEARTBEAT"] = 0.5
    url = await serve(app)
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"{url}/api/v1/events/vms", headers=KEY) as resp:
            with trio.fail_after(8):
                started = trio.current_time()

                async def publish_late() -> None:
                    await trio.sleep(2.6)
                    bus.publish("VM_STOPPED", "late", "stopped")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish_late)
                    async for frame in events(resp):
                        assert frame.json["name"] == "late"
                        break
    assert trio.current_time() - started > 2.5


async def test_disconnect_closes_the_subscription(
        tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    url = await serve(build_app(tmp_path, AUTH_ENV, {"events": bus}))
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"{url}/api/v1/events/vms", headers=KEY) as resp:
            async for _ in frames(resp):
                break  # the retry hint: the stream is open
            assert bus.subscriber_count == 1
    with trio.fail_after(5):
        while bus.subscriber_count:
            await trio.sleep(0.02)


async def test_stalled_consumer_gets_overflow_marker_while_others_keep_up(
        tmp_path: Path, serve: ServeApp, nursery: trio.Nursery) -> None:
    bus = EventBus(tmp_path / "events", subscriber_queue=256)
    await nursery.start(bus.run)
    url = await serve(build_app(tmp_path, AUTH_ENV, {"events": bus}))
    host, port = url.removeprefix("http://").rsplit(":", 1)

    # The stalled client: a raw socket with a tiny receive buffer that never reads.
    stalled = trio.socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stalled.connect((host, int(port)))
    await stalled.send(
        # HTTP/1.0: no chunked framing to parse around.
        f"GET /api/v1/events/vms HTTP/1.0\r\nHost: {host}\r\n"
        f"X-Volant-API-Key: {API_KEY}\r\n\r\n".encode()
    )
    with trio.fail_after(5):
        while bus.subscriber_count < 1:
            await trio.sleep(0.01)

    total = 2500  # 10 MB: more than any loopback socket buffers can hide
    payload = "x" * 4000
    healthy: list[int] = []

    async def healthy_reader(task_status: trio.TaskStatus[None]) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("GET", f"{url}/api/v1/events/vms", headers=KEY) as resp:
                task_status.started()
                async for frame in events(resp):
                    healthy.append(int(frame.id or 0))
                    if len(healthy) == total:
                        return

    with trio.fail_after(60):
        async with trio.open_nursery() as readers:
            await readers.start(healthy_reader)
            for i in range(total):
                bus.publish("VM_LOG", "noisy", "running", line=payload, n=i)
                if i % 50 == 49:
                    await trio.sleep(0.02)  # publishing never blocks; give the commit loop air
    assert healthy == list(range(1, total + 1))

    # Now drain the stalled socket: it must end with the explicit overflow marker.
    received = bytearray()
    with trio.fail_after(30):
        while True:
            chunk = await stalled.recv(65536)
            if not chunk:
                break
            received.extend(chunk)
            marker_at = received.find(b"event: STREAM_OVERFLOW")
            if marker_at >= 0 and received.find(b"\n\n", marker_at) >= 0:
                break
    stalled.close()
    text = received.decode()
    assert "event: STREAM_OVERFLOW" in text
    marker = text[text.index("event: STREAM_OVERFLOW"):]
    body = json.loads(marker.split("data: ", 1)[1].split("\n", 1)[0])
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1))  # what it got had no gap
    assert body["type"] == "STREAM_OVERFLOW"
    assert body["last_event_id"] == ids[-1]
    assert f"Last-Event-ID: {ids[-1]}" in body["message"]
    assert len(ids) < total  # it really fell behind


async def test_json_mode_returns_pages(tmp_path: Path, bus: EventBus, serve: ServeApp) -> None:
    url = await serve(build_app(tmp_path, AUTH_ENV, {"events": bus}))
    for i in range(5):
        bus.publish("VM_CREATED", f"vm{i}", "starting")
    await settle(bus)
    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 headers={**KEY, "Accept": "application/json"}) as client:
        resp = await client.get("/api/v1/events/vms", params={"limit": 2})
        assert resp.status_code == 200
        page = resp.json()
        assert [e["name"] for e in page["events"]] == ["vm3", "vm4"]
        assert page["last_event_id"] == 5
        resp = await client.get("/api/v1/events/vms", params={"after": 1, "limit": 2})
        page = resp.json()
        assert [e["id"] for e in page["events"]] == [2, 3]
        assert page["last_event_id"] == 3
        resp = await client.get("/api/v1/events/vms", params={"after": 3, "limit": 10})
        assert [e["id"] for e in resp.json()["events"]] == [4, 5]
        assert resp.json()["last_event_id"] == 5
        resp = await client.get("/api/v1/events/vms", params={"after": "x"})
        assert resp.status_code == 400 and "after" in resp.json()["error"]
