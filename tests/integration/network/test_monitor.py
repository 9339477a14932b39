"""The netlink monitor reports deletions made by someone else (root, own namespace)."""

import subprocess

import pytest
import trio

from volant.network import links
from volant.network.ipam import derive_tap_mac
from volant.network.monitor import (
    AddressRemoved,
    EventsLost,
    LinkRemoved,
    NetlinkEvent,
    open_monitor,
)
from volant.network.tapname import tap_name

pytestmark = pytest.mark.netns


async def collect_until(events: object, want: type, timeout: float = 1.0) -> list[NetlinkEvent]:
    seen: list[NetlinkEvent] = []
    with trio.fail_after(timeout):
        async for event in events:  # type: ignore[attr-defined]
            seen.append(event)
            if isinstance(event, want):
                return seen
    return seen


async def test_bridge_deletion_is_seen_within_a_second(netns: str) -> None:
    await links.run_blocking(links.ensure_bridge, "vbr0", "10.78.0.1/24", None, netns)
    async with open_monitor(netns) as events:
        await trio.to_thread.run_sync(
            lambda: subprocess.run(["ip", "-n", netns, "link", "del", "vbr0"], check=True)
        )
        seen = await collect_until(events, LinkRemoved)
    last = seen[-1]
    assert isinstance(last, LinkRemoved) and last.name == "vbr0"
    assert AddressRemoved(name="vbr0", address="10.78.0.1/24", index=last.index) in seen


async def test_address_and_tap_removal(netns: str) -> None:
    await links.run_blocking(links.ensure_bridge, "vbr0", "10.78.0.1/24", None, netns)
    tap = tap_name("web-1")
    await links.run_blocking(links.create_tap, tap, "vbr0", derive_tap_mac("web-1"), None, netns)
    async with open_monitor(netns) as events:
        await trio.to_thread.run_sync(lambda: subprocess.run(
            ["ip", "-n", netns, "addr", "del", "10.78.0.1/24", "dev", "vbr0"], check=True))
        seen = await collect_until(events, AddressRemoved)
        last = seen[-1]
        assert isinstance(last, AddressRemoved)
        assert (last.name, last.address) == ("vbr0", "10.78.0.1/24")
        await links.run_blocking(links.delete_link, tap, netns)
        seen = await collect_until(events, LinkRemoved)
        assert seen[-1].name == tap  # type: ignore[union-attr]
        assert not any(isinstance(e, LinkRemoved) and e.name == "vbr0" for e in seen)


async def test_monitor_is_cancellable_when_idle(netns: str) -> None:
    async with open_monitor(netns) as events:
        with trio.move_on_after(0.2) as scope:
            async for _ in events:
                pytest.fail("no event expected in an idle namespace")
    assert scope.cancelled_caught


async def test_overflow_is_reported_as_events_lost(netns: str) -> None:
    batch = "".join(f"link add ov{i} type veth peer name ovp{i}\n" for i in range(60))
    batch += "".join(f"link del ov{i}\n" for i in range(60))
    async with open_monitor(netns, receive_buffer=1024) as events:
        await trio.run_process(["ip", "-n", netns, "-batch", "-"], stdin=batch.encode())
        seen = await collect_until(events, EventsLost, timeout=2.0)
    assert isinstance(seen[-1], EventsLost)
