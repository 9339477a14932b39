"""VM lifecycle through a real volantd with the hollow VMM (control plane only)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import (
    create,
    events,
    get,
    install,
    kill,
    pid_alive,
    wait_event,
    wait_status,
    write_plugin,
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path) as proc:
        yield proc


def test_create_get_list_stop_start_restart_destroy(daemon: VolantdProcess,
                                                    tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "web-1")
        assert vm["status"] == "running"
        assert vm["ip_address"].startswith("192.168.127.")
        assert vm["mac_address"].startswith("02:")
        assert vm["vsock_cid"] >= 3 and vm["restart_count"] == 0
        assert vm["restart_policy"] == {"name": "on-failure", "max_retries": 5}
        assert "volant.manifest" not in vm["kernel_cmdline"]
        pid = vm["pid"]
        assert pid_alive(pid)

        second = create(client, "web-2")
        assert second["ip_address"] != vm["ip_address"]
        listing = client.get("/api/v1/vms", params={"sort": "name", "order": "desc"})
        assert listing.headers["X-Total-Count"] == "2"
        assert [v["name"] for v in listing.json()] == ["web-2", "web-1"]
        page = client.get("/api/v1/vms", params={"limit": 1, "offset": 1, "sort": "name"})
        assert [v["name"] for v in page.json()] == ["web-2"]
        assert page.headers["X-Total-Count"] == "2"
        assert client.get("/api/v1/vms", params={"status": "stopped"}).json() == []
        assert len(client.get("/api/v1/vms", params={"q": "WEB-1"}).json()) == 1

        stopped = client.post("/api/v1/vms/web-1/stop").json()
        assert stopped["status"] == "stopped" and stopped["pid"] is None
        assert not pid_alive(pid)
        again = client.post("/api/v1/vms/web-1/start", params={"wait": "running"}).json()
        assert again["status"] == "running" and again["ip_address"] == vm["ip_address"]
        assert client.post("/api/v1/vms/web-1/start").status_code == 409
        restarted = client.post("/api/v1/vms/web-1/restart",
                                params={"wait": "running"}).json()
        assert restarted["pid"] != again["pid"] and restarted["status"] == "running"

        last_pid = restarted["pid"]
        assert client.delete("/api/v1/vms/web-1").status_code == 204
        assert client.get("/api/v1/vms/web-1").status_code == 404
        assert not pid_alive(last_pid)
        assert not (daemon.base_dir / "state" / "vms" / "web-1").exists()
        assert not (daemon.base_dir / "run" / "vms" / "web-1").exists()
        wait_event(client, "web-1", "VM_DELETED")
        types = [e["type"] for e in events(client, "web-1")]
        for expected in ("VM_CREATED", "VM_STARTING", "VM_RUNNING", "VM_STOPPED", "VM_DELETED"):
            assert expected in types
        assert types.count("VM_CREATED") == 1  # upstream emitted it twice


def test_sigkill_of_vmm_is_a_crash_and_on_failure_restarts(daemon: VolantdProcess,
                                                          tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "crashy")
        mark = events(client)[-1]["id"]
        kill(vm["pid"])
        crashed = wait_event(client, "crashy", "VM_CRASHED", after=mark)
        assert "signal 9" in crashed["message"]
        wait_event(client, "crashy", "VM_RESTARTING", after=mark)
        back = wait_status(client, "crashy", "running", predicate=lambda v: v["pid"] != vm["pid"])
        assert back["restart_count"] == 1 and pid_alive(back["pid"])


def test_policy_no_leaves_the_vm_crashed(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "once", restart_policy={"name": "no"})
        kill(vm["pid"])
        crashed = wait_status(client, "once", "crashed")
        time.sleep(1.5)
        assert get(client, "once")["status"] == "crashed"
        assert crashed["restart_count"] == 0
        assert "VM_RESTARTING" not in [e["type"] for e in events(client, "once")]


def test_retry_budget_ends_in_failed(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        # The hollow VMM honours hollow.crash_after: every boot dies after 0.3 s.
        create(client, "loop", wait=None, kernel_cmdline="hollow.crash_after=0.3",
               restart_policy={"name": "on-failure", "max_retries": 2})
        failed = wait_status(client, "loop", "failed", timeout=60)
        assert failed["restart_count"] == 2
        event = wait_event(client, "loop", "VM_FAILED")
        assert "budget" in event["message"]
        assert sum(e["type"] == "VM_RESTARTING" for e in events(client, "loop")) == 2


def test_volantd_kill9_readopts_running_vms(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        before = {name: create(client, name) for name in ("a-1", "a-2", "a-3")}
    daemon.kill9()
    for vm in before.values():
        assert pid_alive(vm["pid"])  # VMMs are detached: they outlive volantd
    victim = before["a-3"]["pid"]
    kill(victim)  # dies while volantd is down
    daemon.start()
    with daemon.client() as client:
        for name in ("a-1", "a-2"):
            view = get(client, name)
            assert view["status"] == "running"
            assert view["pid"] == before[name]["pid"]
            assert view["restart_count"] == 0
            assert view["ip_address"] == before[name]["ip_address"]
            wait_event(client, name, "VM_ADOPTED")
        crashed = wait_event(client, "a-3", "VM_CRASHED")
        assert "while volantd was down" in crashed["message"]
        back = wait_status(client, "a-3", "running", predicate=lambda v: v["pid"] != victim)
        assert back["restart_count"] == 1


def test_a_vmm_adopted_while_booting_stays_starting_until_its_marker(
        daemon: VolantdProcess, tmp_path: Path) -> None:
    """volantd killed while a VM boots: the next volantd adopts the VMM but reports it
    running only once this boot's marker appears (not at adoption, not from an older
    boot's marker earlier in the console log)."""
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        first = create(client, "slow")  # an earlier boot: its marker is in the log already
        assert client.post("/api/v1/vms/slow/stop").status_code in (200, 202)
        wait_status(client, "slow", "stopped")
        patch = client.patch("/api/v1/vms/slow/config",
                             json={"kernel_cmdline": "hollow.boot_delay=6"})
        assert patch.status_code == 200, patch.text
        assert client.post("/api/v1/vms/slow/start").status_code in (200, 202)
        booting = wait_status(client, "slow", "starting", predicate=lambda v: v["pid"])
        assert booting["pid"] != first["pid"]
    daemon.kill9()
    daemon.start()
    with daemon.client() as client:
        adopted = wait_event(client, "slow", "VM_ADOPTED")
        assert "waiting for its boot marker" in adopted["message"]
        view = get(client, "slow")
        assert view["status"] == "starting" and view["pid"] == booting["pid"]
        running = wait_status(client, "slow", "running", timeout=30)
        assert running["pid"] == booting["pid"]  # the same process, never relaunched
        assert running["restart_count"] == booting["restart_count"]
        wait_event(client, "slow", "VM_RUNNING", after=adopted["id"])


def test_graceful_volantd_stop_leaves_vms_running(daemon: VolantdProcess,
                                                  tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "keep")
    assert daemon.stop() == 0
    assert pid_alive(vm["pid"])
    daemon.start()
    with daemon.client() as client:
        assert get(client, "keep")["pid"] == vm["pid"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, "invalid JSON"),
        ('["a"]', 400, "JSON object"),
        (json.dumps({"name": "ok", "plugin": "demo", "cpu_cores": "two"}), 400, "cpu_cores"),
        (json.dumps({"name": "ok", "plugin": "demo", "memory_mb": -1}), 400, "memory_mb"),
        (json.dumps({"name": "a/b", "plugin": "demo"}), 400, "name"),
        (json.dumps({"name": "..", "plugin": "demo"}), 400, "name"),
        (json.dumps({"name": "has space", "plugin": "demo"}), 400, "name"),
        (json.dumps({"name": "x" * 300, "plugin": "demo"}), 400, "too long"),
        (json.dumps({"name": "ok"}), 400, "plugin is required"),
        (json.dumps({"name": "ok", "plugin": "nope"}), 404, "not found"),
        (json.dumps({"name": "ok", "plugin": "demo", "bogus": 1}), 400, "bogus"),
        (json.dumps({"name": "ok", "plugin": "demo", "restart_policy": {"name": "sometimes"}}),
         400, "restart_policy"),
        (json.dumps({"name": "ok", "plugin": "demo", "kernel_cmdline": "volant.manifest=x"}),
         400, "is set by volantd"),
    ],
)
def test_bad_create_input_is_4xx_and_persists_nothing(daemon: VolantdProcess, tmp_path: Path,
                                                     body: str, status: int,
                                                     needle: str) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        response = client.post("/api/v1/vms", content=body,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert needle in response.json()["error"]
        assert client.get("/api/v1/vms").json() == []
    assert list((daemon.base_dir / "state" / "vms").iterdir()) == []


def test_checksum_mismatch_and_huge_manifest_are_rejected(daemon: VolantdProcess,
                                                          tmp_path: Path) -> None:
    with daemon.client() as client:
        bad = write_plugin(tmp_path, "badsum")
        bad["initramfs"]["checksum"] = "sha256:" + "0" * 64
        install(client, bad)
        response = client.post("/api/v1/vms", json={"name": "x1", "plugin": "badsum"})
        assert response.status_code == 422 and "checksum mismatch" in response.json()["error"]

        huge = write_plugin(tmp_path, "huge")
        # Random values: gzip cannot shrink them below the kernel command-line limit.
        huge["workload"]["env"] = {f"K{i}": secrets.token_hex(20) for i in range(200)}
        install(client, huge)
        response = client.post("/api/v1/vms", json={"name": "x2", "plugin": "huge"})
        assert response.status_code == 422, response.text
        assert "command line" in response.json()["error"]

        assert client.get("/api/v1/vms").json() == []
        duplicate = write_plugin(tmp_path, "dup")
        install(client, duplicate)
        create(client, "same", plugin="dup")
        again = client.post("/api/v1/vms", json={"name": "same", "plugin": "dup"})
        assert again.status_code == 409
    assert sorted(p.name for p in (daemon.base_dir / "state" / "vms").iterdir()) == ["same"]


def test_disabled_plugin_blocks_create_immediately(daemon: VolantdProcess,
                                                   tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        assert client.post("/api/v1/plugins/demo/enabled",
                           json={"enabled": False}).status_code == 200
        response = client.post("/api/v1/vms", json={"name": "nope", "plugin": "demo"})
        assert response.status_code == 409 and "disabled" in response.json()["error"]
        assert client.post("/api/v1/plugins/demo/enabled",
                           json={"enabled": True}).status_code == 200
        create(client, "yes")
        assert client.delete("/api/v1/plugins/demo").status_code == 204
        missing = client.post("/api/v1/vms", json={"name": "gone", "plugin": "demo"})
        assert missing.status_code == 404


def test_root_disk_is_copied_once_and_kept_until_destroy(daemon: VolantdProcess,
                                                         tmp_path: Path) -> None:
    rootfs = tmp_path / "root.img"
    rootfs.write_bytes(b"\0" * 4096)
    digest = hashlib.sha256(rootfs.read_bytes()).hexdigest()
    manifest = write_plugin(tmp_path, "withroot")
    del manifest["initramfs"]
    manifest["rootfs"] = {"url": f"file://{rootfs}", "checksum": digest}
    with daemon.client() as client:
        install(client, manifest)
        vm = create(client, "disk-1", plugin="withroot")
        assert "volant.rootfs_device" not in vm["kernel_cmdline"]  # boot args are not stored
        disk = daemon.base_dir / "state" / "vms" / "disk-1" / "disks" / "root.img"
        assert disk.read_bytes() == rootfs.read_bytes()
        with open(disk, "r+b") as fh:  # a guest write
            fh.write(b"guest data")
        client.post("/api/v1/vms/disk-1/stop")
        client.post("/api/v1/vms/disk-1/start", params={"wait": "running"})
        assert disk.read_bytes().startswith(b"guest data")  # survived the restart
        assert client.delete("/api/v1/vms/disk-1").status_code == 204
        assert not disk.exists()


def test_orphan_vmm_with_our_marker_is_killed_at_startup(daemon: VolantdProcess,
                                                         tmp_path: Path) -> None:
    from volant.runtime import instance_id_for
    from volant.runtime.process import spawn_detached

    daemon.stop()
    marker = f"{instance_id_for(daemon.base_dir / 'state')}:ghost"
    orphan = spawn_detached(["sleep", "300"], marker=marker, log_path=tmp_path / "ghost.log")
    stranger = spawn_detached(["sleep", "300"], marker="someone-else:ghost",
                              log_path=tmp_path / "other.log")
    try:
        daemon.start()
        with daemon.client() as client:
            event = wait_event(client, "ghost", "ORPHAN_VMM_KILLED")
            assert event["pid"] == orphan.pid
        orphan.wait(10)
        assert stranger.poll() is None  # another volantd's VMM is none of our business
    finally:
        for proc in (orphan, stranger):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_vm_ids_are_never_reused(daemon: VolantdProcess, tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        first = create(client, "id-1", wait=None)
        second = create(client, "id-2", wait=None)
        assert second["id"] == first["id"] + 1
        assert client.delete("/api/v1/vms/id-2").status_code == 204
    daemon.stop()
    daemon.start()
    with daemon.client() as client:
        third = create(client, "id-3", wait=None)
        assert third["id"] == second["id"] + 1  # not second's id again


def test_destroy_of_a_failed_vm_removes_what_it_left(daemon: VolantdProcess,
                                                     tmp_path: Path) -> None:
    """A VM without a runner still gets a sweep on destroy (found by the chaos harness)."""
    from volant.runtime.process import spawn_detached

    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "gone", restart_policy={"name": "no"})
        kill(vm["pid"])
        wait_status(client, "gone", "crashed")
        # A VMM of this VM that survived somewhere (e.g. from before a volantd restart).
        from volant.runtime import instance_id_for

        marker = f"{instance_id_for(daemon.base_dir / 'state')}:gone"
        stray = spawn_detached(["sleep", "300"], marker=marker, log_path=tmp_path / "s.log")
        try:
            assert client.delete("/api/v1/vms/gone").status_code == 204
            stray.wait(10)
        finally:
            if stray.poll() is None:
                stray.kill()
                stray.wait()
