"""VMs and host networking together, inside a network namespace made by the test.

volantd runs under ``ip netns exec`` with its own bridge and subnet; the test talks
to it through a Unix socket. The hollow VMM stands in for QEMU (it does not use the
tap), so these tests cover the control plane's networking, not guest traffic.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import (
    create,
    get,
    install,
    pid_alive,
    wait_event,
    wait_status,
    write_plugin,
)
from volant.network import links, nat

BRIDGE = "vbr-test"
NET_ENV = {
    "VOLANT_MANAGE_NETWORK": "true",
    "VOLANT_BRIDGE": BRIDGE,
    "VOLANT_SUBNET": "10.77.0.0/24",
    "VOLANT_HOST_IP": "10.77.0.1",
}


@pytest.fixture
def daemon(tmp_path: Path, netns: str) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path, env=NET_ENV, netns=netns) as proc:
        yield proc


def taps(netns: str) -> list[str]:
    return [name for name in links.list_links("vt", netns) if name != BRIDGE]


def test_bridge_taps_mtu_and_distinct_ips(daemon: VolantdProcess, netns: str,
                                          tmp_path: Path) -> None:
    bridge = links.link_info(BRIDGE, netns)
    assert bridge is not None and bridge.up and bridge.kind == "bridge"
    assert "10.77.0.1/24" in links.addresses(BRIDGE, netns)
    assert nat.nat_rules(netns=netns).present
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        one, two = create(client, "web-1"), create(client, "web1")
        assert one["ip_address"] == "10.77.0.2" and two["ip_address"] == "10.77.0.3"
        assert one["tap"] != two["tap"]  # upstream named both vttap-web1
        for vm in (one, two):
            info = links.link_info(vm["tap"], netns)
            assert info is not None and info.tap and info.up
            assert info.master == BRIDGE and info.mtu == bridge.mtu
            assert info.mac != vm["mac_address"]
        assert client.delete("/api/v1/vms/web-1").status_code == 204
        assert taps(netns) == [two["tap"]]


def test_deleted_tap_and_bridge_are_restored(daemon: VolantdProcess, netns: str,
                                             tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "net-1")
        links.delete_link(vm["tap"], netns)
        event = wait_event(client, "net-1", "VM_NETWORK_REPAIRED")
        assert vm["tap"] in event["message"]
        back = wait_status(client, "net-1", "running", predicate=lambda v: v["pid"] != vm["pid"])
        info = links.link_info(vm["tap"], netns)
        assert info is not None and info.master == BRIDGE
        assert not pid_alive(vm["pid"])  # the VMM was restarted onto the new tap

        links.delete_link(BRIDGE, netns)
        wait_event(client, BRIDGE, "NETWORK_REPAIRED")
        restored = links.link_info(BRIDGE, netns)
        assert restored is not None and "10.77.0.1/24" in links.addresses(BRIDGE, netns)
        deadline_info = None
        for _ in range(100):
            deadline_info = links.link_info(vm["tap"], netns)
            if deadline_info is not None and deadline_info.master == BRIDGE:
                break
            time.sleep(0.05)
        assert deadline_info is not None and deadline_info.master == BRIDGE
        assert get(client, "net-1")["pid"] == back["pid"]


def test_kill9_keeps_ips_and_taps_without_duplicates(daemon: VolantdProcess, netns: str,
                                                     tmp_path: Path) -> None:
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        before = {n: create(client, n) for n in ("k-1", "k-2")}
    daemon.kill9()
    # An orphan tap of ours that no VM owns must be swept at startup.
    links.create_tap("vtzzzz-aaaaaaaa", BRIDGE, "fe:00:00:00:00:01", netns=netns)
    daemon.start()
    with daemon.client() as client:
        for name, vm in before.items():
            view = get(client, name)
            assert view["ip_address"] == vm["ip_address"] and view["pid"] == vm["pid"]
        wait_event(client, "vtzzzz-aaaaaaaa", "ORPHAN_TAP_DELETED")
    assert sorted(taps(netns)) == sorted(vm["tap"] for vm in before.values())


def test_a_tap_deleted_while_volantd_is_down_restarts_the_adopted_vmm(
        daemon: VolantdProcess, netns: str, tmp_path: Path) -> None:
    """The adopted VMM still holds the deleted device: a real guest would stay cut off.

    Found by ``volant-chaos --qemu-vm``: a tap deleted just before a kill -9 left the QEMU
    guest adopted, ``running`` and unreachable for good. Now the VMM is restarted onto the
    recreated tap, as a tap loss under a live volantd does.
    """
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        vm = create(client, "lost-1")
        kept = create(client, "kept-1")
    daemon.kill9()
    links.delete_link(vm["tap"], netns)
    daemon.start()
    with daemon.client() as client:
        repaired = wait_event(client, "lost-1", "VM_NETWORK_REPAIRED")
        assert "deleted while volantd was down" in repaired["message"]
        assert repaired["pid"] == vm["pid"]  # named the VMM it replaces
        back = wait_status(client, "lost-1", "running",
                           predicate=lambda v: v["pid"] != vm["pid"])
        assert back["restart_count"] == vm["restart_count"]  # not a crash of the VM
        assert get(client, "kept-1")["pid"] == kept["pid"]  # its tap was there: adopted
    assert not pid_alive(vm["pid"])
    info = links.link_info(vm["tap"], netns)
    assert info is not None and info.master == BRIDGE


def test_create_destroy_cycles_leak_nothing(daemon: VolantdProcess, netns: str,
                                            tmp_path: Path) -> None:
    baseline = nat.nat_rules(netns=netns)
    with daemon.client() as client:
        install(client, write_plugin(tmp_path))
        for index in range(200):
            name = f"cycle-{index % 7}"
            vm = create(client, name, wait=None)
            assert vm["ip_address"] == "10.77.0.2"  # lowest free address every time
            assert client.delete(f"/api/v1/vms/{name}").status_code == 204
        assert client.get("/api/v1/vms").json() == []
    assert taps(netns) == []
    assert daemon.kill_vmms() == []  # no VMM process left behind either
    assert nat.nat_rules(netns=netns) == baseline
    assert list((daemon.base_dir / "state" / "vms").iterdir()) == []


DHCP_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then echo "ip=$ip router=$router hostname=$hostname" > "$OUT"; fi
"""


def test_dhcp_mode_vm_gets_its_address_from_volantd(daemon: VolantdProcess, netns: str,
                                                    tmp_path: Path) -> None:
    """A DHCP client with the VM's MAC, on the bridge, is answered with the VM's address."""
    with daemon.client() as client:
        install(client, write_plugin(tmp_path, "dyn", network="dhcp"))
        install(client, write_plugin(tmp_path, "sock", network="vsock"))
        vm = create(client, "dyn-1", plugin="dyn")
        assert vm["network_mode"] == "dhcp" and vm["ip_address"] == "10.77.0.2"
        assert "ip=::10.77.0.1" in vm["kernel_cmdline"]  # no static address for the guest
        # vsock VMs have neither IP nor tap, and any number of them coexist.
        socks = [create(client, f"sock-{i}", plugin="sock") for i in range(3)]
        assert {s["ip_address"] for s in socks} == {""} and {s["tap"] for s in socks} == {""}
        assert len({s["vsock_cid"] for s in socks}) == 3
    script = tmp_path / "dhcp.sh"
    script.write_text(DHCP_SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "lease.txt"
    subprocess.run(["ip", "-n", netns, "link", "add", "vdh0", "type", "veth", "peer", "name",
                    "vdh1"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "vdh0", "master", BRIDGE, "up"],
                   check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "vdh1", "address", vm["mac_address"],
                    "up"], check=True)
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "busybox", "udhcpc", "-f", "-q", "-n", "-i", "vdh1",
         "-t", "8", "-T", "1", "-s", str(script)],
        env={**os.environ, "OUT": str(out)}, capture_output=True, text=True, timeout=60,
        check=False)
    assert result.returncode == 0, result.stderr
    assert out.read_text().split() == ["ip=10.77.0.2", "router=10.77.0.1", "hostname=dyn-1"]
