"""The small HTTP/1.1 server and client at the wire level."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

from kestrel.httpclient import request
from kestrel.httpserver import HttpServer, Request, Response, json_response

STREAM_CLOSED = threading.Event()


def echo_handler(req: Request) -> Response:
    if req.path == "/stream":

        def chunks() -> Iterator[bytes]:
            for index in range(3):
                yield f"part{index}\n".encode()

        return Response(200, headers=[("Content-Type", "text/plain")], stream=chunks())
    if req.path == "/endless":

        def ticks() -> Iterator[bytes]:
            try:
                yield b"first\n"
                while True:
                    time.sleep(0.01)
                    yield b""  # a tick: nothing is sent, the server checks the client
            finally:
                STREAM_CLOSED.set()

        return Response(200, stream=ticks())
    return json_response(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query("q"),
            "body": req.body.decode(),
            "len": len(req.body),
        }
    )


def with_server(body: Callable[[int], object]) -> object:
    server = HttpServer(echo_handler)
    server.listen_tcp("127.0.0.1", 0)
    try:
        return body(server.bound_port())
    finally:
        server.close()


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_chunked_request_body_and_percent_decoding() -> None:
    payload = (
        b"POST /a%20b?q=1%2B1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    data = with_server(lambda port: raw_exchange(port, payload))
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
    data = with_server(lambda port: raw_exchange(port, payload))
    assert isinstance(data, bytes)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b'"path":"/one"' in data and b'"body":"abc"' in data


def test_malformed_request_gets_400() -> None:
    data = with_server(lambda port: raw_exchange(port, b"BROKEN\r\n\r\n"))
    assert isinstance(data, bytes)
    assert data.startswith(b"HTTP/1.1 400 ")


def test_expect_continue_and_head() -> None:
    payload = (
        b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"
        b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = with_server(lambda port: raw_exchange(port, payload))
    assert isinstance(data, bytes)
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    head_response = data[data.rindex(b"HTTP/1.1 200 OK") :]
    assert head_response.endswith(b"\r\n\r\n")  # HEAD: headers only
    assert b"Content-Length:" in head_response


def test_streamed_response_is_closed_delimited_and_read_by_the_client() -> None:
    def scenario(port: int) -> object:
        answer = request("GET", f"http://127.0.0.1:{port}/stream", timeout=5)
        assert answer.header("connection") == "close"
        assert answer.header("content-length") is None
        return answer.body

    assert with_server(scenario) == b"part0\npart1\npart2\n"


def test_a_stream_ends_when_its_client_hangs_up() -> None:
    STREAM_CLOSED.clear()

    def scenario(port: int) -> object:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"first" not in received:
                received += sock.recv(4096)
            assert not STREAM_CLOSED.is_set()
        # The generator is closed (its subscription would be dropped) without a write.
        return STREAM_CLOSED.wait(2)

    assert with_server(scenario) is True


def test_close_ends_open_streams_and_stops_accepting() -> None:
    STREAM_CLOSED.clear()
    server = HttpServer(echo_handler)
    server.listen_tcp("127.0.0.1", 0)
    port = server.bound_port()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"first" not in received:
            received += sock.recv(4096)
        server.close()
        assert STREAM_CLOSED.wait(2)
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        pass
    else:
        raise AssertionError("the closed server still accepts connections")


def test_requests_are_served_concurrently() -> None:
    """One slow handler does not hold up another connection (a thread each)."""
    release = threading.Event()

    def handler(req: Request) -> Response:
        if req.path == "/slow":
            release.wait(5)
        return json_response({"path": req.path})

    server = HttpServer(handler)
    server.listen_tcp("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.bound_port()}"
    try:
        slow: list[int] = []
        waiter = threading.Thread(target=lambda: slow.append(request("GET", url + "/slow").status))
        waiter.start()
        assert request("GET", url + "/fast", timeout=2).status == 200
        assert slow == []
        release.set()
        waiter.join(5)
        assert slow == [200]
    finally:
        release.set()
        server.close()


def test_client_sends_body_and_reads_json() -> None:
    def scenario(port: int) -> object:
        answer = request(
            "POST", f"http://127.0.0.1:{port}/p?q=z", [("X-A", "b")], b"data", timeout=5
        )
        return (answer.status, answer.header("Content-Type"), answer.body)

    result = with_server(scenario)
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
