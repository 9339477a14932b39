"""System status/summary routes and the Prometheus endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from api_unit_support import MakeApp, settle
from prometheus_client.parser import text_string_to_metric_families

from volant.api.system import HostUsage
from volant.orchestrator.events import EventBus


def _fake_proc(root: Path, busy: int, idle: int) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 1 1 1\n")


async def test_host_usage_from_proc_deltas(tmp_path: Path) -> None:
    _fake_proc(tmp_path, busy=100, idle=900)
    (tmp_path / "meminfo").write_text(
        "MemTotal:       1000000 kB\nMemFree:         100000 kB\nMemAvailable:    250000 kB\n"
    )
    usage = HostUsage(tmp_path)
    assert usage.mem_percent() == 75.0
    first = await usage.cpu_percent()  # waits for its own second sample: no change -> 0
    assert first == 0.0
    await trio.sleep(HostUsage.MIN_WINDOW)
    _fake_proc(tmp_path, busy=400, idle=1000)  # +300 busy, +100 idle
    assert await usage.cpu_percent() == 75.0
    _fake_proc(tmp_path, busy=500, idle=1000)
    assert await usage.cpu_percent() == 75.0  # too soon: the last answer is repeated
    await trio.sleep(HostUsage.MIN_WINDOW)
    assert await usage.cpu_percent() == 100.0


async def test_status_counts_vms_and_reports_usage(make_app: MakeApp) -> None:
    empty = await (await make_app().test_client().get("/api/v1/system/status")).get_json()
    assert empty["vm_count"] == 0
    assert 0.0 <= empty["cpu_percent"] <= 100.0 and 0.0 < empty["mem_percent"] < 100.0

    async def counts() -> dict[str, int]:
        return {"running": 3, "crashed": 1}

    app = make_app(services={"vm_counts": counts})
    body = await (await app.test_client().get("/api/v1/system/status")).get_json()
    assert body["vm_count"] == 4
    assert body["vms_by_status"] == {"running": 3, "crashed": 1}


async def test_summary_shapes(make_app: MakeApp) -> None:
    empty = await (await make_app().test_client().get("/api/v1/system/summary")).get_json()
    assert empty == {"total_vms": 0, "by_status": {}, "by_runtime": {}, "total_plugins": 0,
                     "enabled_plugins": 0, "plugins": []}
    services = {
        "vm_summary": lambda: {"total_vms": 2, "by_status": {"Running": 2},
                               "by_runtime": {"HELLO": 2}},
        "plugin_summary": lambda: {"plugins": [
            {"name": "hello", "version": "1.0", "enabled": True},
            {"name": "off", "version": "0.1", "enabled": False},
        ]},
    }
    body = await (await make_app(services=services).test_client()
                  .get("/api/v1/system/summary")).get_json()
    assert body["by_status"] == {"running": 2} and body["by_runtime"] == {"hello": 2}
    assert body["total_plugins"] == 2 and body["enabled_plugins"] == 1
    assert body["plugins"][1] == {"name": "off", "version": "0.1", "enabled": False}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_latency_events_and_providers(make_app: MakeApp, bus: EventBus) -> None:
    def vm_states() -> list[tuple[str, str, str, dict[str, str], float]]:
        return [("volant_vms", "VMs by state", "gauge", {"state": "running"}, 5),
                ("volant_vms", "VMs by state", "gauge", {"state": "crashed"}, 1),
                ("volant_vm_restarts", "restarts", "counter", {}, 7)]

    def broken() -> list[tuple[str, str, str, dict[str, str], float]]:
        raise RuntimeError("provider bug")

    app = make_app({"VOLANT_API_KEY": "k"},
                   services={"events": bus, "metrics_providers": [broken, vm_states]})
    client = app.test_client()
    await client.get("/api/v1/system/info", headers={"X-Volant-API-Key": "k"})
    await client.get("/api/v1/system/info")  # 401 from the auth layer
    await client.get("/api/v1/nowhere", headers={"X-Volant-API-Key": "k"})
    bus.publish("VM_CRASHED", "a", "crashed")
    bus.publish("VM_CRASHED", "b", "crashed")
    await settle(bus)

    resp = await client.get("/metrics", headers={"X-Volant-API-Key": "k"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = _samples(await resp.get_data(as_text=True))
    info = (("method", "GET"), ("route", "/api/v1/system/info"), ("status", "200"))
    assert samples[("volant_api_request_duration_seconds_count", info)] == 1
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert samples[("volant_api_request_duration_seconds_count", unmatched)] == 1
    assert samples[("volant_api_rejections_total", (("reason", "key"),))] == 1
    assert samples[("volant_events_published_total", (("type", "VM_CRASHED"),))] == 2
    assert samples[("volant_event_last_id", ())] == 2
    assert samples[("volant_vms", (("state", "running"),))] == 5
    assert samples[("volant_vms", (("state", "crashed"),))] == 1
    assert samples[("volant_vm_restarts_total", ())] == 7
    assert samples[("volant_sse_subscribers", ())] == 0


def test_two_apps_have_separate_registries(make_app: MakeApp) -> None:
    # Building a second app must not raise "Duplicated timeseries" (per-app registry).
    make_app()
    make_app()


@pytest.mark.parametrize("path", ["/api/v1/events/vms"])
async def test_events_route_without_a_bus_is_503(make_app: MakeApp, path: str) -> None:
    resp = await make_app().test_client().get(path)
    assert resp.status_code == 503
    assert (await resp.get_json())["error"] == "event bus unavailable"
