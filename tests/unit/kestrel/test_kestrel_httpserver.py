"""The small HTTP/1.1 server and client at the wire level."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from kestrel.httpclient import request
from kestrel.httpserver import HttpServer, Request, Response, json_response


async def echo_handler(req: Request) -> Response:
    if req.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(3):
                yield f"part{index}\n".encode()

        return Response(200, headers=[("Content-Type", "text/plain")], stream=chunks())
    return json_response(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query("q"),
            "body": req.body.decode(),
            "len": len(req.body),
        }
    )


async def with_server(body: Callable[[int], Awaitable[object]]) -> object:
    server = HttpServer(echo_handler)
    await server.listen_tcp("127.0.0.1", 0)
    try:
        return await body(server.bound_port())
    finally:
        await server.close()


async def raw_exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_chunked_request_body_and_percent_decoding() -> None:
    payload = (
        b"POST /a%20b?q=1%2B1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    data = asyncio.run(with_server(lambda port: raw_exchange(port, payload)))
    assert isinstance(data, bytes)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b'"path":"/a b"' in body
    assert b'"query":"1+1"' in body
    assert b'"body":"hello world"' in body


def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    payload = (
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    data = asyncio.run(with_server(lambda port: raw_exchange(port, payload)))
    assert isinstance(data, bytes)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b'"path":"/one"' in data and b'"body":"abc"' in data


def test_malformed_request_gets_400() -> None:
    data = asyncio.run(with_server(lambda port: raw_exchange(port, b"BROKEN\r\n\r\n")))
    assert isinstance(data, bytes)
    assert data.startswith(b"HTTP/1.1 400 ")


def test_expect_continue_and_head() -> None:
    payload = (
        b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"
        b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = asyncio.run(with_server(lambda port: raw_exchange(port, payload)))
    assert isinstance(data, bytes)
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    head_response = data[data.rindex(b"HTTP/1.1 200 OK") :]
    assert head_response.endswith(b"\r\n\r\n")  # HEAD: headers only
    assert b"Content-Length:" in head_response


def test_streamed_response_is_closed_delimited_and_read_by_the_client() -> None:
    async def scenario(port: int) -> object:
        answer = await request("GET", f"http://127.0.0.1:{port}/stream", timeout=5)
        assert answer.header("connection") == "close"
        assert answer.header("content-length") is None
        return answer.body

    assert asyncio.run(with_server(scenario)) == b"part0\npart1\npart2\n"


def test_client_sends_body_and_reads_json() -> None:
    async def scenario(port: int) -> object:
        answer = await request(
            "POST", f"http://127.0.0.1:{port}/p?q=z", [("X-A", "b")], b"data", timeout=5
        )
        return (answer.status, answer.header("Content-Type"), answer.body)

    result = asyncio.run(with_server(scenario))
    assert isinstance(result, tuple)
    status, kind, body = result
    assert status == 200 and kind == "application/json"
    assert b'"query":"z"' in body and b'"len":4' in body


def test_unquote_and_query_parsing() -> None:
    from kestrel.httpserver import unquote

    assert unquote("a%20b%2Fc") == "a b/c"
    assert unquote("caf%C3%A9") == "café"
    assert unquote("100%") == "100%"  # a stray percent stays
    assert unquote("%zz") == "%zz"
    req = Request("GET", "/", "/", "tail=5&name=J%C3%BCrgen+X&flag&tail=9", [])
    assert req.query("tail") == "5"
    assert req.query("name") == "Jürgen X"
    assert req.query("flag") == ""
    assert req.query("missing") is None


def test_split_url_forms() -> None:
    import pytest

    from kestrel.httpclient import HttpClientError, split_url

    assert split_url("http://127.0.0.1:8000") == ("127.0.0.1", 8000, "/")
    assert split_url("http://h/a/b?x=1#frag") == ("h", 80, "/a/b?x=1")
    assert split_url("http://[::1]:81/p") == ("::1", 81, "/p")
    assert split_url("http://h:9?q=1") == ("h", 9, "/?q=1")
    for bad in ("https://h/", "h:80/x", "http:///x", "http://h:port/"):
        with pytest.raises(HttpClientError):
            split_url(bad)
