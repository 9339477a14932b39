"""The event journal under failure: no torn lines, nothing delivered that it lacks."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import trio

from volant.orchestrator import events as events_module
from volant.orchestrator.events import EventBus, cut_torn_tail


def journal_ids(path: Path) -> list[int]:
    """Every line must parse: a torn line would hide the event glued to it."""
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_torn_tail_is_cut(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b'{"id":1}\n{"id":2}\n{"id":3,"ty')
    assert cut_torn_tail(journal) == len(b'{"id":3,"ty')
    assert journal.read_bytes() == b'{"id":1}\n{"id":2}\n'
    assert cut_torn_tail(journal) == 0
    assert cut_torn_tail(tmp_path / "absent.jsonl") == 0


async def test_a_crash_torn_line_does_not_swallow_the_next_event(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    first = EventBus(tmp_path / "events")
    async with trio.open_nursery() as inner:
        await inner.start(first.run)
        first.publish("VM_CREATED", "a", "pending")
        await first.ref.call("flush")
        inner.cancel_scope.cancel()
    journal = tmp_path / "events" / "journal.jsonl"
    with open(journal, "ab") as fh:
        fh.write(b'{"id":2,"type":"VM_RUNN')  # a write cut short by kill -9
    bus = EventBus(tmp_path / "events")
    await nursery.start(bus.run)
    bus.publish("VM_RUNNING", "a", "running")
    await bus.ref.call("flush")
    assert journal_ids(journal) == [1, 2]  # the new event 2 is readable, not glued


async def test_a_failing_journal_holds_events_back_and_leaves_no_fragment(
        tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = EventBus(tmp_path / "events")
    await nursery.start(bus.run)
    bus.publish("VM_CREATED", "a", "pending")
    await bus.ref.call("flush")
    subscription = await bus.subscribe(after=bus.last_seq)
    real_write = os.write
    failing = True

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        if not failing:
            return real_write(fd, data)
        real_write(fd, bytes(data[:7]))  # part of the batch lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(events_module.os, "write", disk_full)
    bus.publish("VM_RUNNING", "a", "running")
    bus.publish("VM_LOG", "a", "running", line="hello")
    await trio.sleep(0.3)
    assert subscription.drain(10) == []  # not durable, so not delivered
    assert bus.journal_errors >= 1
    journal = tmp_path / "events" / "journal.jsonl"
    assert journal_ids(journal) == [1]  # the partial batch was cut away
    failing = False
    with trio.fail_after(5):
        got = [await subscription.__anext__(), await subscription.__anext__()]
    assert [e.seq for e in got] == [2, 3]
    assert journal_ids(journal) == [1, 2, 3]
    subscription.close()
