"""A minimal SSE reader over httpx for the tests (frames split on blank lines)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx


@attrs.define
class Frame:
    id: str | None = None
    event: str | None = None
    data: str = ""
    comments: list[str] = attrs.field(factory=list)
    retry: int | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    frame = Frame()
    data_lines: list[str] = []
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched:
                frame.data = "\n".join(data_lines)
                yield frame
            frame, data_lines, touched = Frame(), [], False
            continue
        touched = True
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            frame.id = value
        elif field == "event":
            frame.event = value
        elif field == "data":
            data_lines.append(value)
        elif field == "retry":
            frame.retry = int(value)


async def events(response: httpx.Response) -> AsyncIterator[Frame]:
    """Only the frames that carry an event (no keepalives, no retry hints)."""
    async for frame in frames(response):
        if frame.event is not None:
            yield frame
