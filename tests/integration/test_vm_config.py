"""Versioned VM configs through a real volantd with the hollow VMM.

GET/PATCH ``/api/v1/vms/{name}/config`` and its history; a patch takes effect at
the next start (``restart_required`` in between); an invalid patch changes
nothing, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import create, events, get, install, pid_alive, wait_status, write_plugin


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path) as proc:
        yield proc


def config_file(daemon: VolantdProcess, name: str) -> Path:
    return daemon.base_dir / "state" / "vms" / name / "config.toml"


def test_create_writes_version_1_and_get_returns_it(daemon: VolantdProcess,
                                                    tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "cfg-1", cpu_cores=2, memory_mb=256, kernel_cmdline="foo=bar",
               config={"metadata": {"team": "a"}})
        response = client.get("/api/v1/vms/cfg-1/config")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 1 and body["updated_at"]
        config = body["config"]
        assert config["plugin"] == "demo" and config["runtime"] == "demo"
        assert config["resources"] == {"cpu_cores": 2, "memory_mb": 256}
        assert config["kernel_cmdline"] == "foo=bar"
        assert config["metadata"] == {"team": "a"}
        assert config["manifest"]["name"] == "demo"
        assert config_file(daemon, "cfg-1").is_file()
        assert client.get("/api/v1/vms/nope/config").status_code == 404
        assert client.get("/api/v1/vms/nope/config/history").status_code == 404
        assert client.patch("/api/v1/vms/nope/config",
                            json={"metadata": {}}).status_code == 404


def test_patch_history_and_limit(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "hist", cpu_cores=1, memory_mb=128)
        for index in range(3):
            response = client.patch("/api/v1/vms/hist/config",
                                    json={"metadata": {"step": index}})
            assert response.status_code == 200, response.text
            assert response.json()["version"] == index + 2
        # deep merge of resources: memory stays when only cpu is sent
        patched = client.patch("/api/v1/vms/hist/config", json={"resources": {"cpu_cores": 3}})
        assert patched.json()["config"]["resources"] == {"cpu_cores": 3, "memory_mb": 128}
        assert patched.json()["version"] == 5

        history = client.get("/api/v1/vms/hist/config/history").json()
        assert [entry["version"] for entry in history] == [5, 4, 3, 2, 1]
        assert history[1]["config"]["metadata"] == {"step": 2}
        assert "metadata" not in history[4]["config"]
        limited = client.get("/api/v1/vms/hist/config/history", params={"limit": 2}).json()
        assert [entry["version"] for entry in limited] == [5, 4]
        for bad in ("0", "-1", "abc", "100000"):
            response = client.get("/api/v1/vms/hist/config/history", params={"limit": bad})
            assert response.status_code == 400, (bad, response.text)
        assert client.get("/api/v1/vms/hist/config").json()["version"] == 5
        types = [e["type"] for e in events(client, "hist")]
        assert types.count("VM_CONFIG_UPDATED") == 4


@pytest.mark.parametrize(
    ("patch", "status"),
    [
        ({"plugin": "other"}, 400),
        ({"bogus": 1}, 400),
        ({"resources": {"cpu_cores": "two"}}, 400),
        ({"resources": {"cpu_cores": 0}}, 422),
        ({"resources": None}, 400),
        ({"runtime": None}, 400),
        ({"network": {"mode": "carrier-pigeon"}}, 422),
        ({"manifest": {"name": "someone-else", "version": "1",
                       "resources": {"cpu_cores": 1, "memory_mb": 64},
                       "initramfs": {"url": "/x"}}}, 422),
        ({"cloud_init": {"user_data": {"path": "user-data.yaml"}}}, 400),
        ({}, 400),
    ],
)
def test_invalid_patch_changes_nothing(daemon: VolantdProcess, tmp_path: Path,
                                       patch: dict[str, object], status: int) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "strict", wait=None)
        before = config_file(daemon, "strict").read_bytes()
        response = client.patch("/api/v1/vms/strict/config", json=patch)
        assert response.status_code == status, response.text
        assert response.json()["error"]
        assert config_file(daemon, "strict").read_bytes() == before
        assert not (config_file(daemon, "strict").parent / "history").exists()
        assert client.get("/api/v1/vms/strict/config").json()["version"] == 1


def test_patch_not_an_object_is_400(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "arr", wait=None)
        response = client.patch("/api/v1/vms/arr/config", json=[1, 2])
        assert response.status_code == 400


def test_restart_required_until_restart_then_new_resources(daemon: VolantdProcess,
                                                           tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "live", cpu_cores=1, memory_mb=128)
        assert vm["restart_required"] is False and vm["config_version"] == 1
        patched = client.patch("/api/v1/vms/live/config",
                               json={"resources": {"cpu_cores": 2, "memory_mb": 256},
                                     "kernel_cmdline": "quiet=1"})
        assert patched.status_code == 200, patched.text
        view = get(client, "live")
        assert view["restart_required"] is True
        assert view["config_version"] == 1 and view["current_config_version"] == 2
        assert (view["cpu_cores"], view["memory_mb"]) == (1, 128)  # still the running ones
        assert pid_alive(view["pid"]) and view["pid"] == vm["pid"]

        stopped = client.post("/api/v1/vms/live/stop").json()
        assert stopped["restart_required"] is False  # nothing running is out of date

        started = client.post("/api/v1/vms/live/start", params={"wait": "running"}).json()
        assert started["restart_required"] is False
        assert started["config_version"] == 2
        assert (started["cpu_cores"], started["memory_mb"]) == (2, 256)
        assert started["kernel_cmdline"].endswith("quiet=1")

        # a metadata-only change is live: no restart needed
        client.patch("/api/v1/vms/live/config", json={"metadata": {"k": "v"}})
        assert get(client, "live")["restart_required"] is False
        # restart (stop+start) picks up a boot change too
        client.patch("/api/v1/vms/live/config", json={"resources": {"memory_mb": 192}})
        assert get(client, "live")["restart_required"] is True
        again = client.post("/api/v1/vms/live/restart", params={"wait": "running"}).json()
        assert again["memory_mb"] == 192 and again["restart_required"] is False
        assert again["config_version"] == 4


def test_restart_policy_patch_is_effective_at_once(daemon: VolantdProcess,
                                                   tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        create(client, "pol")
        client.patch("/api/v1/vms/pol/config",
                     json={"restart_policy": {"name": "always", "max_retries": 2}})
        view = get(client, "pol")
        assert view["restart_policy"] == {"name": "always", "max_retries": 2}
        assert view["restart_required"] is False


def test_network_mode_patch_bridged_to_vsock_releases_ip_at_next_start(
        daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "net-a")
        ip = vm["ip_address"]
        assert vm["network_mode"] == "bridged" and ip and vm["tap"]
        response = client.patch("/api/v1/vms/net-a/config", json={"network": {"mode": "vsock"}})
        assert response.status_code == 200, response.text
        assert response.json()["config"]["network"]["mode"] == "vsock"
        still = get(client, "net-a")
        assert still["ip_address"] == ip and still["restart_required"] is True
        # the address is not free yet: a new VM gets another one
        other = create(client, "net-b")
        assert other["ip_address"] != ip

        restarted = client.post("/api/v1/vms/net-a/restart", params={"wait": "running"}).json()
        assert restarted["network_mode"] == "vsock"
        assert restarted["ip_address"] == "" and restarted["tap"] == ""
        # now it is free again: the next VM takes it (lowest free address)
        third = create(client, "net-c")
        assert third["ip_address"] == ip

        # and back to bridged: an address is allocated at the next start
        client.patch("/api/v1/vms/net-a/config", json={"network": None})
        client.post("/api/v1/vms/net-a/stop")
        back = client.post("/api/v1/vms/net-a/start", params={"wait": "running"}).json()
        assert back["network_mode"] == "bridged" and back["ip_address"]
        assert back["ip_address"] not in (other["ip_address"], third["ip_address"])


def test_config_and_version_survive_a_daemon_restart(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as daemon:
        with daemon.client() as client:
            install(client, write_plugin(tmp_path))
            vm = create(client, "keep", cpu_cores=1)
            client.patch("/api/v1/vms/keep/config", json={"resources": {"cpu_cores": 2}})
        daemon.kill9()
        daemon.start()
        with daemon.client() as client:
            view = wait_status(client, "keep", "running")
            assert view["pid"] == vm["pid"]  # adopted, not rebooted
            assert view["restart_required"] is True and view["current_config_version"] == 2
            assert client.get("/api/v1/vms/keep/config").json()["version"] == 2
