"""Throw-away network namespaces for tests that touch real interfaces.

Usage::

    from tests.netns import netns_fixture, temporary_netns

    def test_something(netns: str) -> None:   # via the pytest fixture below
        ...

    with temporary_netns() as ns:               # or directly
        subprocess.run(["ip", "-n", ns, "link"], check=True)

Each namespace is named ``vtest-<random>`` so parallel runs never clash and a
leftover is recognisable. Deleting a namespace deletes every interface in it
(bridges, taps, veths; a veth peer in another namespace goes with it), so
nothing leaks into the host namespace even when the test fails. Processes a
test started *inside* the namespace are the test's own business: kill them
before the namespace goes away, or their sockets keep it alive (unnamed).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PREFIX = "vtest-"


def have_netns_privileges() -> bool:
    """True when we can create namespaces (root with ``ip`` available)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def temporary_netns(prefix: str = PREFIX) -> Iterator[str]:
    """Create a uniquely named namespace with ``lo`` up; delete it on exit, even on error."""
    name = f"{prefix}{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace for one test (needs root)."""
    if not have_netns_privileges():
        pytest.fail("network-namespace tests need root and iproute2")
    with temporary_netns() as name:
        yield name


netns_fixture = netns
