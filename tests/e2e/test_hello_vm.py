"""The example hello plugin as a real VM through volantd (issue 6 acceptance).

Built with volant-image (kernel + initramfs/rootfs with busybox, python3 and kestrel),
booted by QEMU under TCG inside a network namespace the test creates, and reached only
through volantd's API: agent health, the plugin's action, logs and console websockets,
workload crash and restart, and a stop that powers the guest off through its agent.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.tmux import Tmux
from tests.vmtools import wait_event

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "conf" / "plugins" / "hello"
VOLANT_IMAGE = [str(Path(sys.executable).parent / "volant-image")]
PROBE = [sys.executable, str(Path(__file__).with_name("ws_probe.py"))]
BOOT = {"wait": "running", "timeout": "300"}


@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    """Kernel and both hello images (cached by volant-image across runs)."""
    out = Path(tempfile.mkdtemp(prefix="hello-img-"))
    kernel = json.loads(subprocess.run([*VOLANT_IMAGE, "kernel", "--json"], check=True,
                                       capture_output=True, text=True).stdout)
    manifests = {}
    for name, fledge in (("initramfs", "fledge.toml"), ("rootfs", "fledge-rootfs.toml")):
        built = subprocess.run([*VOLANT_IMAGE, "build", str(HELLO / fledge), "--output",
                                str(out / name)], check=True, capture_output=True, text=True)
        manifests[name] = json.loads(Path(built.stdout.strip().splitlines()[-1]).read_text())
    return {"vmlinux": kernel["vmlinux"], "manifests": manifests}


@pytest.fixture(scope="module")
def daemon(images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[VolantdProcess, str]]:
    from tests.netns import temporary_netns

    run_dir = Path(tempfile.mkdtemp(prefix="vh-"))
    with temporary_netns() as netns:
        env = {"VOLANT_HYPERVISOR": "qemu", "VOLANT_MANAGE_NETWORK": "true",
               "VOLANT_BRIDGE": "vbr-hello", "VOLANT_SUBNET": "10.80.0.0/24",
               "VOLANT_HOST_IP": "10.80.0.1", "VOLANT_KERNEL_VMLINUX": images["vmlinux"],
               "VOLANT_RUNTIME_DIR": str(run_dir)}
        with running_daemon(tmp_path_factory.mktemp("hello"), env=env, netns=netns) as proc:
            with proc.client() as client:
                for manifest in images["manifests"].values():
                    assert client.post("/api/v1/plugins", json=manifest).status_code == 201
            yield proc, netns


def in_netns(netns: str, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


def healthy_agent(client: httpx.Client, name: str, timeout: float = 120,
                  predicate: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/vms/{name}/agent/healthz")
        if response.status_code == 200:
            last = response.json()
            workload = last.get("workload") or {}
            if workload.get("healthy") and (predicate is None or predicate(last)):
                return last
        time.sleep(0.5)
    raise AssertionError(f"agent of {name} never healthy: {last}")


def test_hello_vm_through_volantd(daemon: tuple[VolantdProcess, str]) -> None:
    proc, netns = daemon
    api = f"http://127.0.0.1:{proc.port}"
    with proc.client(timeout=330) as client:
        vm = client.post("/api/v1/vms", params=BOOT, json={"name": "hello", "plugin": "hello"})
        assert vm.status_code == 201, vm.text
        assert vm.json()["status"] == "running"

        health = healthy_agent(client, "hello")
        assert health["status"] == "ok" and health["manifest"]["name"] == "hello"

        # The host reaches the guest across the bridge (inside the test's namespace).
        ping = in_netns(netns, ["ping", "-c", "2", "-W", "5", vm.json()["ip_address"]])
        assert ping.returncode == 0, ping.stdout + ping.stderr

        greet = client.post("/api/v1/vms/hello/actions/hello/greet", json={"name": "e2e"})
        assert greet.status_code == 200 and greet.json() == {"greeting": "hello, e2e"}

        # The logs websocket relays a line the workload printed.
        logs = in_netns(netns, [*PROBE, f"ws://127.0.0.1:{proc.port}/ws/v1/vms/hello/logs",
                                "--trigger", f"{api}/api/v1/vms/hello/actions/hello/greet",
                                "--expect", "POST /greet", "--timeout", "60"])
        assert logs.returncode == 0, logs.stderr
        frame = json.loads(next(line for line in logs.stdout.splitlines()
                                if "POST /greet" in line and line.startswith("{")))
        assert frame["name"] == "hello" and frame["stream"] == "stdout"

        # The console websocket shows the serial output (kestrel echoes the workload's lines).
        console = in_netns(netns, [*PROBE, f"ws://127.0.0.1:{proc.port}/ws/v1/vms/hello/console",
                                   "--trigger", f"{api}/api/v1/vms/hello/actions/hello/greet",
                                   "--expect", "POST /greet", "--timeout", "60"])
        assert console.returncode == 0, console.stderr

        # A crashing workload is restarted by kestrel, and /healthz says so.
        assert client.post("/api/v1/vms/hello/actions/hello/crash", json={}).status_code in (
            200, 202, 502)
        after = healthy_agent(client, "hello",
                              predicate=lambda h: h["workload"]["restarts"] >= 1)
        assert after["workload"]["last_exit"]["code"] == 3

        # Stop powers the guest off through its agent: no signal needed.
        stopped = client.post("/api/v1/vms/hello/stop").json()
        assert stopped["status"] == "stopped"
        console_log = Path(stopped["console_log"]).read_text(errors="replace")
        assert "VOLANT_BOOT_OK" in console_log
        assert "guest powered off through its agent" in proc.logs()
        assert client.delete("/api/v1/vms/hello").status_code == 204
        wait_event(client, "hello", "VM_DELETED")


def test_rootfs_strategy_boots_the_same_way(daemon: tuple[VolantdProcess, str]) -> None:
    proc, _netns = daemon
    with proc.client(timeout=330) as client:
        vm = client.post("/api/v1/vms", params=BOOT,
                         json={"name": "hello-disk", "plugin": "hello-rootfs"})
        assert vm.status_code == 201, vm.text
        health = healthy_agent(client, "hello-disk")
        assert health["manifest"]["name"] == "hello-rootfs"
        info = client.get("/api/v1/vms/hello-disk/agent/v1/system/info").json()
        disks = {d["name"]: d for d in info["block_devices"]}
        assert disks["vda"]["label"] == "volant-root" and disks["vda"]["fstype"] == "ext4"
        greet = client.post("/api/v1/vms/hello-disk/actions/hello-rootfs/greet",
                            json={"name": "disk"})
        assert greet.json() == {"greeting": "hello, disk"}
        assert client.delete("/api/v1/vms/hello-disk").status_code == 204


def test_initramfs_vm_with_a_seed_keeps_its_root(daemon: tuple[VolantdProcess, str]) -> None:
    """kestrel's auto boot mode must not take the cloud-init seed for a root disk; it
    mounts the seed read-only beside the root, and the user-data in the guest is ours."""
    proc, _netns = daemon
    user_data = "#cloud-config\nhostname: seeded\nruncmd: [echo seeded]\n"
    config = {"cloud_init": {"datasource": "NoCloud", "user_data": {
        "inline": True, "content": user_data}}}
    with proc.client(timeout=330) as client:
        vm = client.post("/api/v1/vms", params=BOOT,
                         json={"name": "seeded", "plugin": "hello", "config": config})
        assert vm.status_code == 201, vm.text
        healthy_agent(client, "seeded")  # it booted from its initramfs and runs the workload
        info = client.get("/api/v1/vms/seeded/agent/v1/system/info").json()
        labels = {d.get("label"): d for d in info["block_devices"]}
        assert "cidata" in labels and labels["cidata"]["fstype"] == "iso9660"
        seed = info["cloud_init"]
        assert seed["device"] == labels["cidata"]["path"] and seed["error"] is None, seed
        documents = seed["documents"]
        assert documents["user-data"]["sha256"] == hashlib.sha256(user_data.encode()).hexdigest()
        assert "meta-data" in documents
        assert client.delete("/api/v1/vms/seeded").status_code == 204


def test_volar_console_to_the_real_guest(daemon: tuple[VolantdProcess, str],
                                         tmp_path: Path) -> None:
    """`volar vms console` in a terminal (tmux): the guest's serial output, keystrokes echo.

    The debug shell on ttyS0 is opt-in (`volant.debug_shell=1`); volar runs inside the
    test's namespace, where volantd's TCP listener is.
    """
    proc, netns = daemon
    with proc.client(timeout=330) as client:
        vm = client.post("/api/v1/vms", params=BOOT, json={
            "name": "shell", "plugin": "hello", "kernel_cmdline": "volant.debug_shell=1"})
        assert vm.status_code == 201, vm.text
    tmux = Tmux(tmp_path / "tmux.sock")
    volar = Path(sys.executable).parent / "volar"
    try:
        tmux.start(f"ip netns exec {netns} {volar} --api http://127.0.0.1:{proc.port} "
                   "vms console shell; echo EXIT=$?")
        tmux.wait_for(lambda: "connected" in tmux.screen(), "volar did not connect", 60)
        deadline = time.monotonic() + 90
        while "guest-42" not in tmux.screen() and time.monotonic() < deadline:
            tmux.keys("echo guest-$((6*7))", "Enter")  # the shell may still be starting
            time.sleep(3)
        assert "guest-42" in tmux.screen(), tmux.screen()  # computed by the guest's shell
        assert "echo guest-$((6*7))" in tmux.screen()  # what we typed came back (echo)
        tmux.keys("C-]")
        tmux.wait_for(lambda: "EXIT=0" in tmux.screen(), "Ctrl-] did not end the session")
    finally:
        tmux.kill_server()
        with proc.client(timeout=120) as client:
            client.delete("/api/v1/vms/shell")
