"""One long-lived SSE consumer that reconnects with ``Last-Event-ID`` across crashes.

It checks the stream as it reads: ids must be consecutive (the bus numbers every event
and a reconnect replays from the last id we saw), so any jump is a gap and any id not
above the last one is a duplicate. At the end, :func:`compare_with_journal` reads the
JSON page of the same range and compares it id by id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from volant.chaos.context import ChaosContext


@attrs.define
class SSEFollower:
    ctx: ChaosContext
    seen: list[tuple[int, str]] = attrs.field(factory=list)
    reconnects: int = 0
    first_after: int | None = None
    running: bool = True

    @property
    def last_id(self) -> int | None:
        return self.seen[-1][0] if self.seen else self.first_after

    def _accept(self, event_id: int, event_type: str) -> None:
        last = self.last_id
        if last is not None and event_id != last + 1:
            kind = "duplicate" if event_id <= last else "gap"
            self.ctx.report.violation(
                "sse_ids_contiguous",
                f"{kind}: id {event_id} after {last} (reconnect #{self.reconnects})")
        self.seen.append((event_id, event_type))

    async def run(self) -> None:
        """Follow the stream until cancelled; reconnect after every end or error."""
        while self.running:
            headers = {"Accept": "text/event-stream"}
            if self.last_id is not None:
                headers["Last-Event-ID"] = str(self.last_id)
            try:
                async with (
                    self.ctx.target.client(timeout=None) as client,  # type: ignore[arg-type]
                    client.stream("GET", "/api/v1/events/vms", headers=headers) as response,
                ):
                    if response.status_code != 200:
                        await response.aread()
                        self.ctx.record("GET", "/api/v1/events/vms (sse)", response)
                        await trio.sleep(0.2)
                        continue
                    await self._consume(response)
            except (httpx.HTTPError, trio.BrokenResourceError, OSError):
                pass
            self.reconnects += 1
            await trio.sleep(0.1)

    async def _consume(self, response: httpx.Response) -> None:
        event_id: int | None = None
        event_type = ""
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("event:"):
                event_type = line[6:].strip()
            elif line == "":
                if event_id is not None:
                    if self.first_after is None and not self.seen:
                        self.first_after = event_id - 1
                    self._accept(event_id, event_type)
                event_id, event_type = None, ""

    async def start_point(self) -> None:
        """Start from the current head so the run covers only its own events."""
        page: Any = await self.ctx.get_json("/api/v1/events/vms", params={"limit": 1},
                                            headers={"Accept": "application/json"})
        if isinstance(page, dict):
            self.first_after = int(page.get("last_event_id", 0))


async def compare_with_journal(ctx: ChaosContext, follower: SSEFollower) -> int:
    """Compare what the stream delivered with the JSON page (journal) of the same range."""
    # One snapshot of what was streamed: the follower keeps receiving while the pages
    # are fetched, and events newer than ``last`` are not compared on either side.
    seen = list(follower.seen)
    if not seen:
        return 0
    after = seen[0][0] - 1
    last = seen[-1][0]
    journal: list[tuple[int, str]] = []
    unanswered = 0
    while after < last:
        page: Any = await ctx.get_json("/api/v1/events/vms",
                                       params={"after": after, "limit": 1000},
                                       headers={"Accept": "application/json"})
        if not isinstance(page, dict):
            unanswered += 1  # volantd busy or restarting: ask again, do not guess
            if unanswered > 20:
                ctx.report.violation("sse_matches_journal",
                                     f"the event page after id {after} could not be read")
                break
            await trio.sleep(0.5)
            continue
        if not page.get("events"):
            break
        for event in page["events"]:
            if int(event["id"]) <= last:
                journal.append((int(event["id"]), str(event["type"])))
        newest = int(page["events"][-1]["id"])
        if newest <= after:
            break  # a page that does not move forward would loop forever
        after = newest
    streamed = dict(seen)
    recorded = dict(journal)
    missing = sorted(set(recorded) - set(streamed))
    extra = sorted(set(streamed) - set(recorded))
    differ = sorted(i for i in set(streamed) & set(recorded) if streamed[i] != recorded[i])
    if missing:
        ctx.report.violation("sse_matches_journal",
                             f"{len(missing)} journal events never streamed, e.g. {missing[:10]}")
    if extra:
        ctx.report.violation("sse_matches_journal",
                             f"{len(extra)} streamed events not in the journal, e.g. {extra[:10]}"
                             f"; {_journal_file_summary(ctx, extra)}")
    if differ:
        ctx.report.violation("sse_matches_journal",
                             f"{len(differ)} events differ in type, e.g. {differ[:10]}")
    ctx.report.checked("sse_matches_journal")
    return len(journal)


def _journal_file_summary(ctx: ChaosContext, ids: list[int]) -> str:
    """What the journal files on disk say about ``ids`` (own target only), for diagnosis."""
    state_dir = getattr(ctx.target, "state_dir", None)
    if state_dir is None:
        return "journal file not visible (remote target)"
    events_dir = Path(state_dir) / "events"
    found: list[int] = []
    unreadable = 0
    newest = 0
    for name in ("journal.1.jsonl", "journal.jsonl"):
        try:
            lines = (events_dir / name).read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                seq = int(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                continue
            newest = max(newest, seq)
            if seq in ids:
                found.append(seq)
    return (f"on disk: {len(found)} of them readable, {unreadable} unreadable lines, "
            f"newest id {newest}")
