"""``GET /api/v1/events/vms``: the VM event stream (SSE), or a JSON page of events.

SSE frames are ``id: <seq>`` / ``event: <TYPE>`` / ``data: <VMEvent JSON>``. A client
that reconnects with ``Last-Event-ID`` (header, or ``last_event_id`` query for
clients that cannot set headers) gets every event after that id first — from the
bus's ring or its journal, so also across a volantd restart — then live ones.

A client that falls further behind than its subscription queue is not silently
skipped: it receives a final ``STREAM_OVERFLOW`` event naming the last id it got
and the stream ends; reconnecting with that id fills the hole from the journal.
Quiet streams get a ``: keepalive`` comment every 15 s so proxies keep them open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Response, current_app, jsonify, request

from volant.api import spec
from volant.api.context import ApiContext
from volant.api.metrics import EXTENSION_KEY
from volant.errors import UnavailableError, ValidationError
from volant.orchestrator.events import Event, EventBus, EventFilter, Subscription

blueprint = Blueprint("events", __name__)

#: app.config keys (tests shorten the heartbeat).
HEARTBEAT_CONFIG = "VOLANT_SSE_HEARTBEAT"
DEFAULT_HEARTBEAT = 15.0
DEFAULT_PAGE = 100
MAX_PAGE = 1000
RETRY_MS = 2000
MAX_BATCH = 256


def _bus() -> EventBus:
    ctx: ApiContext = current_app.config["VOLANT_CONTEXT"]
    bus = ctx.services.get("events")
    if bus is None:
        raise UnavailableError("event bus unavailable")
    return bus  # type: ignore[no-any-return]


def _multi(name: str) -> frozenset[str]:
    """A repeatable and/or comma-separated query parameter."""
    return frozenset(
        part.strip() for value in request.args.getlist(name) for part in value.split(",")
        if part.strip()
    )


def _filter() -> EventFilter:
    return EventFilter(names=_multi("name"),
                       types=frozenset(t.upper() for t in _multi("type")))


def _int_arg(value: str | None, what: str, minimum: int = 0) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value.strip())
    except ValueError:
        raise ValidationError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValidationError(f"{what} must be >= {minimum}")
    return number


def _wants_json() -> bool:
    accept = request.accept_mimetypes
    return (accept.quality("application/json") > 0
            and accept.quality("text/event-stream") < accept.quality("application/json")
            and "text/event-stream" not in request.headers.get("Accept", ""))


def _ready(subscription: Subscription, limit: int) -> list[Event]:
    """Events already queued for ``subscription``, without waiting."""
    return subscription.drain(limit)


class _FrameCache:
    """Each event is serialised once, not once per subscriber (100 streams -> 1 dumps).

    Keyed by sequence number but only hit for the very same ``Event`` object, so
    two buses in one process (tests) never share frames.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.frames: dict[int, tuple[Event, bytes]] = {}

    def frame(self, event: Event) -> bytes:
        cached = self.frames.get(event.seq)
        if cached is not None and cached[0] is event:
            return cached[1]
        data = json.dumps(event.to_json(), separators=(",", ":"))
        frame = f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()
        if len(self.frames) >= self.size:
            for stale in list(self.frames)[: self.size // 4]:  # oldest inserted first
                del self.frames[stale]
        self.frames[event.seq] = (event, frame)
        return frame


_frames = _FrameCache()


def sse_frame(event: Event) -> bytes:
    return _frames.frame(event)


def overflow_frame(last_id: int) -> bytes:
    body = {
        "type": "STREAM_OVERFLOW",
        "last_event_id": last_id,
        "message": (f"this client fell too far behind and the stream was ended; "
                    f"reconnect with Last-Event-ID: {last_id}"),
    }
    return f"event: STREAM_OVERFLOW\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


_EVENT_PARAMS = [
    spec.query_param("name", spec.STRING, "Only events of these VMs (repeatable or comma list)"),
    spec.query_param("type", spec.STRING,
                     "Only these event types, e.g. VM_CRASHED (repeatable or comma list)"),
    spec.header_param("Last-Event-ID", spec.STRING,
                      "SSE: replay every event after this id, then stream live ones"),
    spec.query_param("last_event_id", {"type": "integer", "minimum": 0},
                     "Same as the Last-Event-ID header"),
    spec.query_param("after", {"type": "integer", "minimum": 0},
                     "JSON mode: events after this id (oldest first)"),
    spec.query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                     f"JSON mode: page size (default {DEFAULT_PAGE})"),
]


@blueprint.get("/api/v1/events/vms")
@spec.api_doc(
    summary="Stream VM lifecycle events",
    description=(
        "Server-Sent Events by default: `id:` is the global event sequence number, `event:` "
        "the type, `data:` the VMEvent JSON. Reconnect with `Last-Event-ID` to resume "
        "without gaps or duplicates (also across a volantd restart). A consumer too slow "
        "to keep up receives a final `STREAM_OVERFLOW` event carrying `last_event_id` and "
        "should reconnect with it. With `Accept: application/json` a page of recent "
        "events is returned instead."
    ),
    tags=["events"],
    operation_id="streamVMEvents",
    parameters=_EVENT_PARAMS,
    responses={
        200: spec.Response(
            "Event stream (text/event-stream), or a JSON page with Accept: application/json",
            content={"text/event-stream": spec.STRING, "application/json": spec.EVENT_PAGE},
        ),
        400: spec.ERROR,
        503: spec.ERROR,
    },
)
async def vm_events() -> Response:
    bus = _bus()
    flt = _filter()
    if _wants_json():
        return await _json_page(bus, flt)
    header = request.headers.get("Last-Event-ID")
    after = _int_arg(header if header is not None else request.args.get("last_event_id"),
                     "Last-Event-ID")
    subscription = await bus.subscribe(after=after, flt=flt)
    heartbeat = float(current_app.config.get(HEARTBEAT_CONFIG, DEFAULT_HEARTBEAT))
    metrics: Any = current_app.extensions.get(EXTENSION_KEY)

    async def stream() -> AsyncIterator[bytes]:
        last_id = after or 0
        if metrics is not None:
            metrics.sse_streams.inc()
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while True:
                event: Event | None = None
                with trio.move_on_after(heartbeat):
                    try:
                        event = await subscription.__anext__()
                    except StopAsyncIteration:
                        break
                if event is None:
                    yield b": keepalive\n\n"
                    continue
                # Whatever else is already queued goes out in the same write: under load
                # this keeps the per-write cost of the server from becoming the bottleneck.
                batch = [event, *_ready(subscription, MAX_BATCH - 1)]
                last_id = batch[-1].seq
                yield b"".join(sse_frame(e) for e in batch)
            if subscription.overflowed:
                yield overflow_frame(last_id)
        finally:
            # Runs on a normal end and when the client goes away (the task is cancelled).
            subscription.close()
            if metrics is not None:
                metrics.sse_streams.dec()

    response = Response(stream(), status=200, content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None  # never cut by Quart's response timeout
    return response


async def _json_page(bus: EventBus, flt: EventFilter) -> Response:
    limit = _int_arg(request.args.get("limit"), "limit", minimum=1) or DEFAULT_PAGE
    limit = min(limit, MAX_PAGE)
    after = _int_arg(request.args.get("after"), "after")
    horizon = bus.last_seq
    if after is None:
        events = bus.recent(limit, flt)
        last_id = horizon
    else:
        events = await _after(bus, flt, after, limit)
        last_id = events[-1].seq if len(events) == limit else max(after, horizon)
    return jsonify({"events": [e.to_json() for e in events], "last_event_id": last_id})


async def _after(bus: EventBus, flt: EventFilter, after: int, limit: int) -> list[Event]:
    """Events after ``after``: from the ring when it reaches back that far, else the journal."""
    oldest = bus.ring[0].seq if bus.ring else bus.last_seq + 1
    if after + 1 >= oldest:
        return bus.recent(limit, flt, after=after)
    # Older than the ring: a replaying subscription reads the journal. Its replay is
    # queued synchronously by subscribe(), so draining stops at the first empty wait.
    horizon = bus.last_seq
    events: list[Event] = []
    with await bus.subscribe(after=after, flt=flt, queue=limit) as sub:
        while len(events) < limit:
            with trio.move_on_after(0.05):
                try:
                    event = await sub.__anext__()
                except StopAsyncIteration:
                    break
                if event.seq > horizon:
                    break
                events.append(event)
                continue
            break
    return events
