"""Deployments through a real volantd with the hollow VMM: healing, scaling, rollouts, delete."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import events, install, kill, pid_alive, wait_event, write_plugin


def _cleanup(proc: VolantdProcess) -> None:
    proc.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path) as proc:
        yield proc


def deployment(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/deployments/{name}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_for(client: httpx.Client, name: str, predicate: Callable[[dict[str, Any]], bool],
             timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = deployment(client, name)
        if predicate(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"deployment {name} never matched: last view {view}")


def all_ready(count: int) -> Callable[[dict[str, Any]], bool]:
    def check(view: dict[str, Any]) -> bool:
        return (view["ready_replicas"] == count and view["status"] == "ready"
                and len(view["replicas"]) == count)
    return check


def vms_by_name(client: httpx.Client) -> dict[str, dict[str, Any]]:
    listing = client.get("/api/v1/vms").json()
    names = [vm["name"] for vm in listing]
    assert len(names) == len(set(names)), f"duplicate VM names: {names}"
    return {vm["name"]: vm for vm in listing}


def make(client: httpx.Client, name: str, replicas: int, **config: Any) -> dict[str, Any]:
    body = {"name": name, "replicas": replicas, "min_ready_seconds": 0.5,
            "rollout_timeout": 20, "config": {"plugin": "demo", **config}}
    response = client.post("/api/v1/deployments", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_a_killed_replica_is_replaced_and_ready_count_dips(daemon: VolantdProcess,
                                                          tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        created = make(client, "web", 3, restart_policy={"name": "no"})
        assert created["desired_replicas"] == 3 and created["config_version"] == 1
        wait_for(client, "web", all_ready(3))
        before = vms_by_name(client)
        assert sorted(before) == ["web-1", "web-2", "web-3"]
        assert all(vm["deployment"] == "web" for vm in before.values())

        mark = 0  # the id of the announcement "3 ready", which may trail the views a little
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not mark:
            announced = [e for e in events(client, "web")
                         if e["type"] == "DEPLOYMENT_READY_REPLICAS"]
            if announced and announced[-1]["ready_replicas"] == 3:
                mark = announced[-1]["id"]
            time.sleep(0.02)
        assert mark
        kill(before["web-2"]["pid"])
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view = deployment(client, "web")
            if not seen or seen[-1] != view["ready_replicas"]:
                seen.append(view["ready_replicas"])
            if seen[-2:] == [2, 3] or (seen == [3] and time.monotonic() > deadline - 25):
                break
            time.sleep(0.02)
        # A poll can miss a short dip on a loaded machine; the events below cannot.
        assert seen[-1] == 3 and set(seen) <= {2, 3}, seen
        # The deployment records each change of its ready count, so the dip is on record
        # even where a poll could miss it.
        wait_for(client, "web", all_ready(3))
        counts: list[int] = []
        deadline = time.monotonic() + 10
        def dipped_and_recovered(values: list[int]) -> bool:
            return 2 in values and values[-1] == 3 and values.index(2) < len(values) - 1

        while time.monotonic() < deadline and not dipped_and_recovered(counts):
            counts = [e["ready_replicas"] for e in events(client, "web", after=mark)
                      if e["type"] == "DEPLOYMENT_READY_REPLICAS"]
            time.sleep(0.05)
        # On a loaded machine the count may be re-announced around the kill; what must be
        # on record is the dip to 2 and the recovery to 3 after it, and nothing else.
        assert dipped_and_recovered(counts) and set(counts) <= {2, 3}, counts

        after = vms_by_name(client)
        assert sorted(after) == ["web-1", "web-2", "web-3"]
        assert after["web-2"]["pid"] != before["web-2"]["pid"]
        assert after["web-2"]["status"] == "running"
        assert after["web-1"]["pid"] == before["web-1"]["pid"]  # the others were left alone
        replaced = [e for e in events(client, "web") if e["type"] == "DEPLOYMENT_REPLICA_REPLACED"]
        assert [e["replica"] for e in replaced] == ["web-2"]


def test_scale_to_five_then_one_leaves_only_the_first(daemon: VolantdProcess,
                                                      tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        make(client, "api", 2)
        wait_for(client, "api", all_ready(2))
        response = client.patch("/api/v1/deployments/api", json={"replicas": 5})
        assert response.status_code == 200, response.text
        assert response.json()["desired_replicas"] == 5
        view = wait_for(client, "api", all_ready(5))
        assert view["replicas"] == [f"api-{i}" for i in range(1, 6)]

        assert client.patch("/api/v1/deployments/api", json={"replicas": 1}).status_code == 200
        view = wait_for(client, "api", all_ready(1))
        assert view["replicas"] == ["api-1"]
        assert sorted(vms_by_name(client)) == ["api-1"]
        for gone in ("api-2", "api-5"):
            assert not (daemon.base_dir / "state" / "vms" / gone).exists()
        deadline = time.monotonic() + 10
        scaled: list[int] = []
        while time.monotonic() < deadline and scaled[-1:] != [1]:
            scaled = [e["desired_replicas"] for e in events(client, "api")
                      if e["type"] == "DEPLOYMENT_SCALED"]
            time.sleep(0.05)
        assert scaled == [2, 5, 1]


def test_rolling_update_replaces_all_then_stops_on_an_unhealthy_replica(
        daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        make(client, "roll", 3, restart_policy={"name": "no"})
        wait_for(client, "roll", all_ready(3))
        v1 = vms_by_name(client)
        assert {vm["cpu_cores"] for vm in v1.values()} == {1}

        good = {"plugin": "demo", "resources": {"cpu_cores": 2}, "restart_policy": {"name": "no"}}
        response = client.patch("/api/v1/deployments/roll", json={"config": good})
        assert response.status_code == 200, response.text
        assert response.json()["config_version"] == 2
        view = wait_for(client, "roll", lambda v: v["rollout"]["state"] == "completed"
                        and v["status"] == "ready")
        assert view["replica_versions"] == {"roll-1": 2, "roll-2": 2, "roll-3": 2}
        v2 = vms_by_name(client)
        assert sorted(v2) == ["roll-1", "roll-2", "roll-3"]
        assert {vm["cpu_cores"] for vm in v2.values()} == {2}
        assert all(v2[n]["pid"] != v1[n]["pid"] for n in v2)
        # Events become visible once durable (a few ms after the state change).
        wait_event(client, "roll", "DEPLOYMENT_ROLLOUT_COMPLETED")
        types = [e["type"] for e in events(client, "roll")]
        assert "DEPLOYMENT_ROLLOUT_STARTED" in types
        assert types.count("DEPLOYMENT_ROLLOUT_PROGRESS") == 3

        bad = {**good, "kernel_cmdline": "hollow.crash_after=0.2"}
        assert client.patch("/api/v1/deployments/roll", json={"config": bad}).status_code == 200
        view = wait_for(client, "roll", lambda v: v["status"] == "rollout_failed")
        assert view["config_version"] == 3
        assert view["rollout"]["failed_replica"] == "roll-1"
        failed = [e for e in events(client, "roll") if e["type"] == "DEPLOYMENT_ROLLOUT_FAILED"]
        assert len(failed) == 1 and failed[0]["replica"] == "roll-1"
        # The failed replica is put back on the last good config; the others were not touched.
        view = wait_for(client, "roll", lambda v: v["ready_replicas"] == 3)
        assert view["replica_versions"] == {"roll-1": 2, "roll-2": 2, "roll-3": 2}
        time.sleep(1.0)
        v3 = vms_by_name(client)
        assert v3["roll-2"]["pid"] == v2["roll-2"]["pid"]
        assert v3["roll-3"]["pid"] == v2["roll-3"]["pid"]
        assert v3["roll-1"]["status"] == "running"
        assert "hollow.crash_after" not in v3["roll-1"]["kernel_cmdline"]


def test_delete_leaves_no_vm_and_no_file(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        make(client, "gone", 3)
        wait_for(client, "gone", all_ready(3))
        pids = [vm["pid"] for vm in vms_by_name(client).values()]
        state = daemon.base_dir / "state"
        assert (state / "deployments" / "gone.toml").exists()

        assert client.delete("/api/v1/deployments/gone").status_code == 204
        assert client.get("/api/v1/deployments/gone").status_code == 404
        assert client.get("/api/v1/vms").json() == []
        assert not (state / "deployments" / "gone.toml").exists()
        assert list((state / "vms").iterdir()) == []
        assert not any((daemon.base_dir / "run" / "vms").glob("gone-*"))
        assert not any(pid_alive(pid) for pid in pids)
        assert client.delete("/api/v1/deployments/gone").status_code == 404
        # The name is free again.
        make(client, "gone", 0)


def test_kill9_during_scale_up_resumes_to_exactly_ten(tmp_path: Path) -> None:
    first = VolantdProcess(tmp_path).start()
    try:
        with first.client() as client:
            install(client, write_plugin(tmp_path))
            make(client, "many", 10)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(vms_by_name(client)) < 3:
                time.sleep(0.01)
            assert 0 < len(vms_by_name(client)) < 10
        first.kill9()
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.kill9()
    second = VolantdProcess(tmp_path)
    second.port = first.port
    second.env = first.env
    second.start()
    try:
        with second.client() as client:
            wait_for(client, "many", all_ready(10), timeout=90)
            vms = vms_by_name(client)
            assert sorted(vms) == sorted(f"many-{i}" for i in range(1, 11))
            # Nothing created twice (an event not yet durable at the kill may be missing).
            created = [e["name"] for e in events(client) if e["type"] == "VM_CREATED"]
            assert len(created) == len(set(created)) and set(created) <= set(vms)
            assert sorted(p.name for p in (tmp_path / "state" / "vms").iterdir()) == sorted(vms)
            assert deployment(client, "many")["replica_versions"] == {
                f"many-{i}": 1 for i in range(1, 11)}
    finally:
        _cleanup(second)


def test_kill9_during_rollout_resumes_it(tmp_path: Path) -> None:
    first = VolantdProcess(tmp_path).start()
    try:
        with first.client() as client:
            install(client, write_plugin(tmp_path))
            body = {"name": "res", "replicas": 3, "min_ready_seconds": 1.0,
                    "config": {"plugin": "demo"}}
            assert client.post("/api/v1/deployments", json=body).status_code == 201
            wait_for(client, "res", all_ready(3))
            response = client.patch("/api/v1/deployments/res",
                                    json={"config": {"plugin": "demo", "cpu_cores": 2}})
            assert response.status_code == 200
            wait_for(client, "res", lambda v: v["rollout"].get("updated", 0) >= 1, timeout=30)
        first.kill9()
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.kill9()
    second = VolantdProcess(tmp_path)
    second.port = first.port
    second.env = first.env
    second.start()
    try:
        with second.client() as client:
            view = wait_for(client, "res", lambda v: v["rollout"]["state"] == "completed"
                            and v["status"] == "ready", timeout=60)
            assert view["replica_versions"] == {"res-1": 2, "res-2": 2, "res-3": 2}
            vms = vms_by_name(client)
            assert sorted(vms) == ["res-1", "res-2", "res-3"]
            assert {vm["cpu_cores"] for vm in vms.values()} == {2}
    finally:
        _cleanup(second)


def test_bad_requests_are_4xx_and_change_nothing(daemon: VolantdProcess,
                                                 tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        post = "/api/v1/deployments"
        cases: list[tuple[Any, int]] = [
            ({"replicas": 1, "config": {"plugin": "demo"}}, 400),  # no name
            ({"name": "Bad_Name", "config": {"plugin": "demo"}}, 400),
            ({"name": "x", "replicas": -1, "config": {"plugin": "demo"}}, 400),
            ({"name": "x", "replicas": "2", "config": {"plugin": "demo"}}, 400),
            ({"name": "x", "replicas": 1}, 400),  # no config
            ({"name": "x", "config": {"plugin": "demo", "bogus": 1}}, 400),
            ({"name": "x", "config": {}}, 400),  # no plugin
            ({"name": "x", "config": {"plugin": "demo", "cpu_cores": "two"}}, 400),
            ({"name": "x", "config": {"plugin": "nope"}}, 404),
            ({"name": "x", "extra": 1, "config": {"plugin": "demo"}}, 400),
            ([1, 2], 400),
        ]
        for body, status in cases:
            response = client.post(post, json=body)
            assert response.status_code == status, (body, response.text)
        assert client.post(post, content=b"{not json").status_code == 400
        assert client.get(post).json() == []
        assert not any((daemon.base_dir / "state" / "deployments").glob("*.toml"))

        make(client, "dup", 1)
        assert client.post(post, json={"name": "dup", "config": {"plugin": "demo"}}
                           ).status_code == 409
        assert client.patch("/api/v1/deployments/dup", json={}).status_code == 400
        assert client.patch("/api/v1/deployments/dup", json={"replicas": -2}).status_code == 400
        assert client.patch("/api/v1/deployments/dup",
                            json={"config": {"plugin": "nope"}}).status_code == 404
        assert deployment(client, "dup")["config_version"] == 1
        assert deployment(client, "dup")["desired_replicas"] == 1
        for method in ("get", "delete"):
            assert getattr(client, method)("/api/v1/deployments/missing").status_code == 404
        assert client.patch("/api/v1/deployments/missing",
                            json={"replicas": 1}).status_code == 404
        listed = client.get(post).json()
        assert [d["name"] for d in listed] == ["dup"]
        for key in ("name", "desired_replicas", "ready_replicas", "config", "created_at",
                    "updated_at", "replicas", "status", "config_version", "rollout"):
            assert key in listed[0]
