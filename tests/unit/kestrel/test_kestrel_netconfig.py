"""eth0 configuration from ip= through the ioctl adapter, inside a throwaway netns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Runs as root with iproute2 and busybox-static installed (make setup); a missing piece
# is a failure, not a skip.
pytestmark = [pytest.mark.netns]

SCRIPT = """
import json, socket, sys
from kestrel.config import load_config
from kestrel.main import configure_network
from kestrel.netconfig import interface_addresses
from pathlib import Path
config = load_config({"KESTREL_CMDLINE": sys.argv[1], "KESTREL_PID1": "0"})
configure_network(config)
print(json.dumps({"hostname": socket.gethostname(),
                  "addresses": interface_addresses(Path("/sys"))}))
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"kt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            check=True,
        )
        subprocess.run(["ip", "-n", name, "link", "set", "peer0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_in(netns: str, cmdline: str) -> dict[str, object]:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "unshare", "--uts", sys.executable, "-c", SCRIPT, cmdline],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_static_address_route_and_hostname(netns: str) -> None:
    report = run_in(netns, "console=ttyS0 ip=10.77.0.5::10.77.0.1:255.255.255.0:guest-7:eth0:off")
    assert report["hostname"] == "guest-7"
    addresses = report["addresses"]
    assert isinstance(addresses, dict)
    assert addresses["eth0"] == ["10.77.0.5/24"]
    assert addresses["lo"] == ["127.0.0.1/8"]
    routes = subprocess.run(
        ["ip", "-n", netns, "-4", "route", "show", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "default via 10.77.0.1 dev eth0" in routes
    link = subprocess.run(
        ["ip", "-n", netns, "link", "show", "eth0"], capture_output=True, text=True, check=True
    ).stdout
    assert "UP" in link.split(">")[0]


def test_prefix_netmask_and_idempotence(netns: str) -> None:
    run_in(netns, "ip=10.78.1.9::10.78.0.1:/16:h:eth0:off")
    report = run_in(netns, "ip=10.78.1.9::10.78.0.1:/16:h:eth0:off")  # second run: no error
    assert report["addresses"]["eth0"] == ["10.78.1.9/16"]  # type: ignore[index]


def test_empty_client_ip_only_brings_the_link_up(netns: str) -> None:
    report = run_in(netns, "ip=::10.79.0.1:255.255.255.0:h:eth0:off")
    assert report["addresses"]["eth0"] == []  # type: ignore[index]
    routes = subprocess.run(
        ["ip", "-n", netns, "-4", "route"], capture_output=True, text=True, check=True
    ).stdout
    assert "default" not in routes


def test_garbage_ip_leaves_the_network_alone(netns: str) -> None:
    report = run_in(netns, "ip=not-an-address::1.2.3.4")
    assert report["addresses"]["eth0"] == []  # type: ignore[index]
