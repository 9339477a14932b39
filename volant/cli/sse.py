"""An incremental Server-Sent Events parser (WHATWG HTML, "event stream interpretation").

Feed it text chunks as they arrive, split anywhere (even between ``\\r`` and
``\\n``); it returns the events completed by each chunk. It never raises on any
input: unknown fields are ignored, a ``retry`` that is not all digits is
ignored, an ``id`` containing NUL is ignored, and an event still incomplete at
the end of the stream is dropped (``close`` returns nothing for it), as the
standard says. The last event id persists across events, as in browsers.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class SSEEvent:
    event: str
    data: str
    id: str | None
    retry: int | None = None


class SSEParser:
    def __init__(self) -> None:
        self.last_event_id: str | None = None
        #: Reconnection time in ms from the last valid ``retry:`` field.
        self.retry: int | None = None
        #: Comment lines seen (``: keepalive`` heartbeats), for liveness checks.
        self.comments = 0
        self._buffer = ""
        self._pending_cr = False
        self._started = False
        self._data: list[str] = []
        self._event_type = ""
        self._has_data = False

    def feed(self, chunk: str) -> list[SSEEvent]:
        if not chunk:
            return []
        if not self._started:
            self._started = True
            if chunk.startswith("\ufeff"):
                chunk = chunk[1:]
        if self._pending_cr and chunk.startswith("\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = False
        events: list[SSEEvent] = []
        text = self._buffer + chunk
        start = 0
        length = len(text)
        while start < length:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, next_start = lf, lf + 1
            else:
                end = cr
                if cr + 1 < length:
                    next_start = cr + 2 if text[cr + 1] == "\n" else cr + 1
                else:
                    next_start = cr + 1
                    self._pending_cr = True
            event = self._line(text[start:end])
            if event is not None:
                events.append(event)
            start = next_start
        self._buffer = text[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated event is discarded (per the standard)."""
        self._buffer = ""
        self._reset_event()
        return []

    def _reset_event(self) -> None:
        self._data = []
        self._event_type = ""
        self._has_data = False

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif field == "retry" and value and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._reset_event()
            return None
        event = SSEEvent(event=self._event_type or "message", data="\n".join(self._data),
                         id=self.last_event_id, retry=self.retry)
        self._reset_event()
        return event
