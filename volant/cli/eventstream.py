"""Follow ``/api/v1/events/vms`` (SSE) without losing or repeating an event.

On a dropped connection, a read timeout (no heartbeat), the server ending the
stream, or a ``STREAM_OVERFLOW`` event, it reconnects with ``Last-Event-ID`` set
to the last id it delivered, waiting the server's ``retry`` interval (capped
backoff while the daemon is down). Ids at or below the last delivered one are
dropped, so a replay overlap cannot print an event twice.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from volant.cli.client import ApiClient
from volant.cli.errors import ApiError, CliError
from volant.cli.sse import SSEEvent, SSEParser

OVERFLOW = "STREAM_OVERFLOW"
READ_TIMEOUT = 45.0  # the server sends a keepalive every 15 s
MAX_BACKOFF = 5.0


class EventFollower:
    def __init__(self, client: ApiClient, params: dict[str, Any], *,
                 last_id: int | None = None, notify: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.params = params
        self.last_id = last_id
        self.notify = notify or (lambda text: print(f"volar: {text}", file=sys.stderr,
                                                    flush=True))
        self.sleep = sleep
        self.reconnects = 0

    def events(self) -> Iterator[dict[str, Any]]:
        """Yield event dicts forever (the caller stops iterating to end)."""
        connected_once = False
        failures = 0
        while True:
            retry_ms: int | None = None
            try:
                for sse, parser in self._stream():
                    connected_once = True
                    failures = 0
                    retry_ms = parser.retry
                    if sse.event == OVERFLOW:
                        self.notify(f"event stream overflowed; resuming after id {self.last_id}")
                        break
                    event = self._decode(sse)
                    if event is None:
                        continue
                    yield event
                reason = "stream ended"
            except ApiError as exc:
                if exc.status in (502, 503, 504) and connected_once:
                    reason = exc.message
                else:
                    raise
            except CliError as exc:
                if not connected_once:
                    raise
                reason = exc.message
            failures += 1
            self.reconnects += 1
            delay = min(MAX_BACKOFF, (retry_ms or 1000) / 1000 * (2 ** min(failures - 1, 3)))
            if reason != "stream ended" or failures > 1:
                self.notify(f"{reason}; reconnecting in {delay:.1f}s "
                            f"(last event id {self.last_id})")
            self.sleep(delay if failures > 1 or reason != "stream ended" else 0.2)

    def _stream(self) -> Iterator[tuple[SSEEvent, SSEParser]]:
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
        parser = SSEParser()
        try:
            with self.client.stream("GET", "/api/v1/events/vms", params=self.params,
                                    headers=headers, timeout=timeout) as response:
                for chunk in response.iter_text():
                    for sse in parser.feed(chunk):
                        yield sse, parser
        except httpx.HTTPError as exc:  # raised while iterating the body
            raise CliError(f"connection lost: {exc or type(exc).__name__}") from None

    def _decode(self, sse: SSEEvent) -> dict[str, Any] | None:
        try:
            body = json.loads(sse.data)
        except ValueError:
            body = {"type": sse.event, "data": sse.data}
        if not isinstance(body, dict):
            body = {"type": sse.event, "data": body}
        seq = _int(sse.id) if sse.id is not None else _int(body.get("id"))
        if seq is not None:
            if self.last_id is not None and seq <= self.last_id:
                return None  # replayed overlap
            self.last_id = seq
            body.setdefault("id", seq)
        body.setdefault("type", sse.event)
        return body


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
