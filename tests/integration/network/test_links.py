"""Bridges and taps in a throw-away namespace (root)."""

import subprocess

import pytest
import trio

from volant.errors import ConflictError, ValidationError
from volant.network import links
from volant.network.ipam import derive_tap_mac
from volant.network.tapname import is_our_tap, tap_name

pytestmark = pytest.mark.netns


def ip_json(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", netns, "-d", *args], check=True, capture_output=True,
                          text=True).stdout


def test_ensure_bridge_is_idempotent_and_sets_mtu(netns: str) -> None:
    first = links.ensure_bridge("vbr0", "10.77.0.1/24", mtu=1400, netns=netns)
    assert first.mtu == 1400
    assert first.addresses == ("10.77.0.1/24",)
    second = links.ensure_bridge("vbr0", "10.77.0.1/24", mtu=1400, netns=netns)
    assert second == first
    assert links.list_links("vbr", netns=netns) == ["vbr0"]
    shown = ip_json(netns, "addr", "show", "dev", "vbr0")
    assert shown.count("inet 10.77.0.1/24") == 1 and "bridge" in shown and "UP" in shown
    # external damage is repaired: address removed, link down, MTU changed
    subprocess.run(["ip", "-n", netns, "addr", "flush", "dev", "vbr0"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "vbr0", "down", "mtu", "1300"], check=True)
    third = links.ensure_bridge("vbr0", "10.77.0.1/24", mtu=1400, netns=netns)
    assert third.addresses == ("10.77.0.1/24",) and third.mtu == 1400
    info = links.link_info("vbr0", netns=netns)
    assert info is not None and info.up and info.kind == "bridge"


def test_ensure_bridge_refuses_a_non_bridge(netns: str) -> None:
    subprocess.run(["ip", "-n", netns, "link", "add", "vbr0", "type", "veth", "peer", "name",
                    "vbr0p"], check=True)
    with pytest.raises(ConflictError, match="not a bridge"):
        links.ensure_bridge("vbr0", "10.77.0.1/24", netns=netns)


def test_two_taps_enslaved_with_bridge_mtu_and_own_macs(netns: str) -> None:
    links.ensure_bridge("vbr0", "10.77.0.1/24", mtu=1450, netns=netns)
    made = []
    for vm in ("web-1", "web1"):
        name = tap_name(vm)
        info = links.create_tap(name, "vbr0", derive_tap_mac(vm), netns=netns)
        made.append(info)
        assert info.name == name and info.tap and info.persistent
        assert info.master == "vbr0" and info.mtu == 1450 and info.up
        assert info.mac == derive_tap_mac(vm)
    assert made[0].name != made[1].name and made[0].mac != made[1].mac
    detail = ip_json(netns, "link", "show", made[0].name)
    assert "vnet_hdr on" in detail and "persist on" in detail and "user root" in detail
    assert [n for n in links.list_links("vt", netns=netns) if is_our_tap(n)] == sorted(
        m.name for m in made)
    # the bridge keeps its own MAC rather than adopting a port's
    bridge = links.link_info("vbr0", netns=netns)
    assert bridge is not None and bridge.mac == links.bridge_mac("vbr0")


def test_create_tap_is_idempotent_and_repairs(netns: str) -> None:
    links.ensure_bridge("vbr0", "10.77.0.1/24", netns=netns)
    name = tap_name("db")
    first = links.create_tap(name, "vbr0", derive_tap_mac("db"), netns=netns)
    subprocess.run(["ip", "-n", netns, "link", "set", name, "nomaster", "down"], check=True)
    again = links.create_tap(name, "vbr0", derive_tap_mac("db"), netns=netns)
    assert again.index == first.index  # reconfigured, not recreated
    assert again.master == "vbr0" and again.up


def test_tap_needs_existing_bridge(netns: str) -> None:
    with pytest.raises(links.LinkError, match="does not exist"):
        links.create_tap(tap_name("x"), "vbr0", derive_tap_mac("x"), netns=netns)


def test_delete_link(netns: str) -> None:
    links.ensure_bridge("vbr0", "10.77.0.1/24", netns=netns)
    name = tap_name("gone")
    links.create_tap(name, "vbr0", derive_tap_mac("gone"), netns=netns)
    assert links.link_exists(name, netns=netns)
    assert links.delete_link(name, netns=netns) is True
    assert not links.link_exists(name, netns=netns)
    assert links.link_info(name, netns=netns) is None
    assert links.delete_link(name, netns=netns) is False  # absent is fine


def test_interface_name_too_long_is_a_clear_error(netns: str) -> None:
    with pytest.raises(ValidationError, match=r"bridge: .*too long \(16 characters, at most 15\)"):
        links.ensure_bridge("b" * 16, "10.77.0.1/24", netns=netns)
    links.ensure_bridge("vbr0", "10.77.0.1/24", netns=netns)
    with pytest.raises(ValidationError, match=r"tap: .*too long"):
        links.create_tap("t" * 20, "vbr0", "fe:00:00:00:00:01", netns=netns)
    with pytest.raises(ValidationError, match="invalid interface name"):
        links.delete_link("a/b", netns=netns)
    assert links.list_links("", netns=netns) == ["lo", "vbr0"]


def test_missing_namespace_is_a_clear_error() -> None:
    with pytest.raises(links.LinkError, match="does not exist"):
        links.link_exists("lo", netns="vtest-never-created")


async def test_200_tap_cycles_leave_nothing(netns: str) -> None:
    """200 create/delete cycles, four workers at a time (as concurrent VM actors would)."""
    await links.run_blocking(links.ensure_bridge, "vbr0", "10.77.0.1/24", None, netns)

    async def worker(n: int) -> None:
        for i in range(50):
            name = tap_name(f"cycle-{n}-{i % 3}")
            info = await links.run_blocking(
                links.create_tap, name, "vbr0", derive_tap_mac(name), None, netns)
            assert info.master == "vbr0" and info.up
            assert await links.run_blocking(links.delete_link, name, netns)

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(worker, n)
    assert await links.run_blocking(links.list_links, "", netns) == ["lo", "vbr0"]
    assert "master vbr0" not in ip_json(netns, "link", "show")


async def test_run_blocking_from_trio(netns: str) -> None:
    info = await links.run_blocking(links.ensure_bridge, "vbr0", "10.77.0.1/24", netns=netns)
    async with trio.open_nursery() as nursery:
        for vm in ("a", "b", "c", "d"):
            nursery.start_soon(
                links.run_blocking, links.create_tap, tap_name(vm), "vbr0", derive_tap_mac(vm),
                None, netns,
            )
    names = await links.run_blocking(links.list_links, "vt", netns)
    assert names == sorted(tap_name(vm) for vm in "abcd")
    assert info.index > 0


def test_orphan_sweep_deletes_only_unowned_taps_of_ours(netns: str) -> None:
    links.ensure_bridge("vbr0", "10.77.0.1/24", netns=netns)
    for vm in ("kept", "orphan-1", "orphan-2"):
        links.create_tap(tap_name(vm), "vbr0", derive_tap_mac(vm), netns=netns)
    links.create_tap("tapforeign", "vbr0", "fe:00:00:00:00:09", netns=netns)
    removed = links.sweep_orphan_taps([tap_name("kept")], is_our_tap, netns=netns)
    assert sorted(removed) == sorted([tap_name("orphan-1"), tap_name("orphan-2")])
    assert links.list_links("", netns=netns) == sorted(["lo", "vbr0", "tapforeign",
                                                         tap_name("kept")])
