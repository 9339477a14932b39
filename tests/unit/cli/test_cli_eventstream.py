"""EventFollower: resume with Last-Event-ID after overflow, drops and restarts; no duplicates."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from volant.cli.client import ApiClient
from volant.cli.errors import ApiError, CliError
from volant.cli.eventstream import EventFollower


def frame(seq: int, type_: str = "VM_RUNNING") -> bytes:
    body = json.dumps({"type": type_, "name": "a", "status": "running"})
    return f"id: {seq}\nevent: {type_}\ndata: {body}\n\n".encode()


OVERFLOW = b'event: STREAM_OVERFLOW\ndata: {"type":"STREAM_OVERFLOW","last_event_id":2}\n\n'


class Broken(httpx.SyncByteStream):
    """Some bytes, then the connection dies."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset by peer")


def follower(responses: list[Callable[[], httpx.Response]], seen: list[str | None],
             sleeps: list[float]) -> EventFollower:
    answers = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Last-Event-ID"))
        return next(answers)()

    client = ApiClient("http://volantd.test")
    client.http = httpx.Client(base_url=client.base,
                               transport=httpx.MockTransport(handler))
    return EventFollower(client, {"name": "a"}, notify=lambda _: None, sleep=sleeps.append)


def sse(*chunks: bytes) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                                  content=b"".join(chunks))


def test_resumes_after_overflow_drop_end_and_503_without_duplicates() -> None:
    headers: list[str | None] = []
    sleeps: list[float] = []
    responses = [
        sse(b"retry: 10\n\n", frame(1), b": keepalive\n\n", frame(2), OVERFLOW),
        lambda: httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                               stream=Broken(frame(2), frame(3), b"data: half")),
        sse(frame(4)),
        lambda: httpx.Response(503, json={"error": "event bus unavailable"}),
        sse(frame(4), frame(5)),
    ]
    stream = follower(responses, headers, sleeps)
    events = list(itertools.islice(stream.events(), 5))
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5]
    assert headers == [None, "2", "3", "4", "4"]
    assert all(e["type"] == "VM_RUNNING" for e in events)
    assert stream.last_id == 5
    assert all(delay <= 5.0 for delay in sleeps) and len(sleeps) == 4


def test_first_connection_failure_is_an_error_not_a_retry_loop() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = ApiClient("http://volantd.test")
    client.http = httpx.Client(base_url=client.base, transport=httpx.MockTransport(refuse))
    with pytest.raises(CliError, match="cannot reach volantd"):
        next(EventFollower(client, {}, notify=lambda _: None, sleep=lambda _: None).events())


def test_auth_failure_after_a_restart_is_not_retried() -> None:
    headers: list[str | None] = []
    responses = [sse(frame(1)), lambda: httpx.Response(401, json={"error": "bad key"})]
    stream = follower(responses, headers, [])
    events = stream.events()
    assert next(events)["id"] == 1
    with pytest.raises(ApiError, match="http 401: bad key"):
        next(events)


def test_start_after_an_id() -> None:
    headers: list[str | None] = []
    stream = follower([sse(frame(8))], headers, [])
    stream.last_id = 7
    assert next(stream.events())["id"] == 8
    assert headers == ["7"]
