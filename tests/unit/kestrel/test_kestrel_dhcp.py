"""ip=dhcp: busybox udhcpc driven by kestrel gets a lease from a udhcpd in a peer netns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kestrel.dhcp import find_busybox

REPO = Path(__file__).resolve().parents[3]

# Runs as root with iproute2 and busybox-static installed (make setup); a missing piece
# is a failure, not a skip.
pytestmark = [pytest.mark.netns]

CLIENT = """
import json, sys, threading, time
from pathlib import Path
from kestrel.children import ChildReaper
from kestrel.dhcp import DhcpClient, find_busybox
from kestrel.netconfig import interface_addresses

work = Path(sys.argv[1])
reaper = ChildReaper(reap_all=False)
reaper.start()
client = DhcpClient(reaper, "eth0", find_busybox(), work, resolv_conf=str(work / "resolv.conf"))
runner = threading.Thread(target=client.run, daemon=True)
runner.start()
addresses = []
for _ in range(200):
    addresses = interface_addresses(Path("/sys")).get("eth0", [])
    if addresses:
        break
    time.sleep(0.1)
time.sleep(0.3)  # let the script finish the route and resolv.conf
client.stop()
runner.join(5)
assert not runner.is_alive(), "udhcpc outlived stop()"
print(json.dumps({"addresses": addresses, "starts": client.starts}))
"""


@pytest.fixture
def dhcp_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    client_ns, server_ns = f"kd-{uuid.uuid4().hex[:8]}", f"kd-{uuid.uuid4().hex[:8]}"
    server: subprocess.Popen[bytes] | None = None
    for name in (client_ns, server_ns):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", client_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
             "netns", server_ns],
            check=True,
        )  # fmt: skip
        for command in (
            ["ip", "-n", server_ns, "addr", "add", "10.80.0.1/24", "dev", "peer0"],
            ["ip", "-n", server_ns, "link", "set", "peer0", "up"],
        ):
            subprocess.run(command, check=True)
        leases = tmp_path / "leases"
        leases.touch()
        conf = tmp_path / "udhcpd.conf"
        conf.write_text(
            "start 10.80.0.100\nend 10.80.0.110\ninterface peer0\n"
            f"lease_file {leases}\npidfile {tmp_path / 'udhcpd.pid'}\n"
            "option subnet 255.255.255.0\noption router 10.80.0.1\noption dns 10.80.0.53\n"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, str(find_busybox()), "udhcpd", "-f", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield client_ns, str(tmp_path)
    finally:
        if server is not None:
            server.terminate()
            server.wait(5)
        for name in (client_ns, server_ns):
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_udhcpc_lease_configures_address_route_and_dns(dhcp_pair: tuple[str, str]) -> None:
    client_ns, work = dhcp_pair
    time.sleep(0.2)  # udhcpd binds its socket
    result = subprocess.run(
        ["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, work],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["starts"] == 1
    assert len(report["addresses"]) == 1
    address = report["addresses"][0]
    assert address.startswith("10.80.0.1") and address.endswith("/24")
    routes = subprocess.run(
        ["ip", "-n", client_ns, "-4", "route", "show", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "default via 10.80.0.1 dev eth0" in routes
    assert Path(work, "resolv.conf").read_text() == "nameserver 10.80.0.53\n"
