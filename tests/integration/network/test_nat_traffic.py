"""Masquerade really rewrites traffic: guest ns -> our bridge ns -> outside ns (root).

Three namespaces we create: ``guest`` (a VM stand-in on the bridge), ``host`` (bridge,
forwarding, our NAT table, an uplink) and ``outside`` (the "internet"). No traffic
leaves them.
"""

import socket
import subprocess

import pytest
from pyroute2 import netns as pyroute2_netns

from tests.netns import temporary_netns
from volant.network import links, nat

pytestmark = pytest.mark.netns


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


def udp_socket(ns: str) -> socket.socket:
    sock: socket.socket = pyroute2_netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, 0,
                                                       flags=0)
    sock.settimeout(3)
    return sock


def source_seen_outside(guest: str, outside: str) -> str:
    with udp_socket(outside) as server, udp_socket(guest) as client:
        server.bind(("10.96.0.2", 0))
        client.sendto(b"ping", server.getsockname())
        data, (src, _port) = server.recvfrom(64)
        assert data == b"ping"
        return str(src)


def test_masquerade_rewrites_the_source_and_removal_stops_it(netns: str) -> None:
    host = netns
    with temporary_netns() as guest, temporary_netns() as outside:
        links.ensure_bridge("vbr0", "10.95.0.1/24", netns=host)
        sh("ip", "-n", host, "link", "add", "vh0", "type", "veth", "peer", "name", "vc0",
           "netns", guest)
        sh("ip", "-n", host, "link", "set", "vh0", "master", "vbr0", "up")
        sh("ip", "-n", guest, "addr", "add", "10.95.0.10/24", "dev", "vc0")
        sh("ip", "-n", guest, "link", "set", "vc0", "up")
        sh("ip", "-n", guest, "route", "add", "default", "via", "10.95.0.1")
        sh("ip", "-n", host, "link", "add", "up0", "type", "veth", "peer", "name", "out0",
           "netns", outside)
        sh("ip", "-n", host, "addr", "add", "10.96.0.1/24", "dev", "up0")
        sh("ip", "-n", host, "link", "set", "up0", "up")
        sh("ip", "-n", outside, "addr", "add", "10.96.0.2/24", "dev", "out0")
        sh("ip", "-n", outside, "link", "set", "out0", "up")

        nat.ensure_ip_forward(host)
        nat.ensure_nat("10.95.0.0/24", "vbr0", netns=host)
        assert source_seen_outside(guest, outside) == "10.96.0.1"

        nat.remove_nat(netns=host)
        assert source_seen_outside(guest, outside) == "10.95.0.10"
