"""JSON mode of ``/api/v1/events/vms``: pages from the ring, and from the journal beyond it."""

from __future__ import annotations

from pathlib import Path

import trio
from api_unit_support import MakeApp, settle

from volant.orchestrator.events import EventBus

JSON = {"Accept": "application/json"}


async def test_page_older_than_the_ring_comes_from_the_journal(
        make_app: MakeApp, tmp_path: Path, nursery: trio.Nursery) -> None:
    bus = EventBus(tmp_path / "small", ring_size=5)
    await nursery.start(bus.run)
    for i in range(20):
        bus.publish("VM_LOG", f"vm{i % 2}", "running", line=str(i))
    await settle(bus)
    assert bus.ring[0].seq == 16  # ids 1..15 are only in the journal now
    client = make_app(services={"events": bus}).test_client()

    page = await (await client.get("/api/v1/events/vms?after=2&limit=5", headers=JSON)).get_json()
    assert [e["id"] for e in page["events"]] == [3, 4, 5, 6, 7]
    assert page["last_event_id"] == 7

    odd = await (await client.get("/api/v1/events/vms?after=0&limit=3&name=vm1",
                                  headers=JSON)).get_json()
    assert [e["id"] for e in odd["events"]] == [2, 4, 6]

    tail = await (await client.get("/api/v1/events/vms?after=14&limit=100",
                                   headers=JSON)).get_json()
    assert [e["id"] for e in tail["events"]] == list(range(15, 21))
    assert tail["last_event_id"] == 20
    assert bus.subscriber_count == 0  # the temporary replay subscription was closed


async def test_json_mode_needs_json_accept_and_validates_arguments(
        make_app: MakeApp, bus: EventBus) -> None:
    bus.publish("VM_CREATED", "a", "starting")
    await settle(bus)
    client = make_app(services={"events": bus}).test_client()
    resp = await client.get("/api/v1/events/vms", headers=JSON)
    assert resp.status_code == 200 and resp.content_type.startswith("application/json")
    assert (await resp.get_json())["events"][0]["type"] == "VM_CREATED"
    for query in ("limit=0", "limit=x", "after=-1"):
        bad = await client.get(f"/api/v1/events/vms?{query}", headers=JSON)
        assert bad.status_code == 400, query
    bad_id = await client.get("/api/v1/events/vms", headers={"Last-Event-ID": "abc"})
    assert bad_id.status_code == 400
