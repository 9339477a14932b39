"""A busybox DHCP client on a veth peer gets its address from our server (root)."""

import os
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio

from tests.netns import temporary_netns
from volant.network import dhcp, links

pytestmark = pytest.mark.netns

CLIENT_MAC = "02:12:34:56:78:9a"

SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then
  echo "ip=$ip subnet=$subnet router=$router lease=$lease hostname=$hostname" > "$OUT"
fi
"""


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


async def test_udhcpc_gets_the_ipam_address(netns: str, tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/busybox"):
        pytest.fail("busybox (package busybox-static) is required")
    links.ensure_bridge("vbr0", "10.91.0.1/24", netns=netns)
    script = tmp_path / "script.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "lease.txt"
    lease = dhcp.Lease(IPv4Address("10.91.0.23"), hostname="dhcp-vm")
    leases = {CLIENT_MAC: lease}
    responder = dhcp.Responder(server_ip=IPv4Address("10.91.0.1"),
                               subnet=IPv4Network("10.91.0.0/24"), lookup=leases.get,
                               lease_seconds=600)
    with temporary_netns() as client_ns:
        sh("ip", "-n", netns, "link", "add", "vh0", "type", "veth", "peer", "name", "vc0",
           "netns", client_ns)
        sh("ip", "-n", netns, "link", "set", "vh0", "master", "vbr0", "up")
        sh("ip", "-n", client_ns, "link", "set", "vc0", "address", CLIENT_MAC, "up")
        async with trio.open_nursery() as nursery:
            await nursery.start(dhcp.serve, "vbr0", responder, netns)
            with trio.fail_after(20):
                proc = await trio.run_process(
                    ["ip", "netns", "exec", client_ns, "busybox", "udhcpc", "-f", "-q", "-n",
                     "-i", "vc0", "-t", "8", "-T", "1", "-s", str(script)],
                    env={**os.environ, "OUT": str(out)}, capture_stdout=True,
                    capture_stderr=True, check=False,
                )
            nursery.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stderr.decode()
    got = dict(part.split("=", 1) for part in out.read_text().split())
    assert got == {"ip": "10.91.0.23", "subnet": "255.255.255.0", "router": "10.91.0.1",
                   "lease": "600", "hostname": "dhcp-vm"}


async def test_unknown_client_gets_no_lease(netns: str, tmp_path: Path) -> None:
    links.ensure_bridge("vbr0", "10.91.0.1/24", netns=netns)
    script = tmp_path / "script.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "lease.txt"
    no_leases: dict[str, dhcp.Lease] = {}
    responder = dhcp.Responder(server_ip=IPv4Address("10.91.0.1"),
                               subnet=IPv4Network("10.91.0.0/24"), lookup=no_leases.get)
    with temporary_netns() as client_ns:
        sh("ip", "-n", netns, "link", "add", "vh0", "type", "veth", "peer", "name", "vc0",
           "netns", client_ns)
        sh("ip", "-n", netns, "link", "set", "vh0", "master", "vbr0", "up")
        sh("ip", "-n", client_ns, "link", "set", "vc0", "address", CLIENT_MAC, "up")
        async with trio.open_nursery() as nursery:
            await nursery.start(dhcp.serve, "vbr0", responder, netns)
            with trio.fail_after(20):
                proc = await trio.run_process(
                    ["ip", "netns", "exec", client_ns, "busybox", "udhcpc", "-f", "-q", "-n",
                     "-i", "vc0", "-t", "2", "-T", "1", "-s", str(script)],
                    env={**os.environ, "OUT": str(out)}, capture_stdout=True,
                    capture_stderr=True, check=False,
                )
            nursery.cancel_scope.cancel()
    assert proc.returncode != 0
    assert not out.exists()
