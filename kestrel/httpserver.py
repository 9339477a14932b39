"""A small threaded HTTP/1.1 server: keep-alive, request bodies, streamed responses.

The agent's API must listen as early as possible after PID 1 starts, and under TCG
every module the interpreter runs for the first time costs boot time (asyncio alone
costs one to two seconds). So this server is built on what the interpreter already
has: ``_socket`` (blocking sockets) and ``_thread`` (one accept thread per listener,
one thread per connection). Handlers are plain functions; a streamed body is an
iterator of chunks, where an empty chunk is a tick that lets the server notice a client
that hung up. It serves any connected stream socket: TCP and AF_VSOCK.
"""

from __future__ import annotations

import _socket
import _thread
import time

from kestrel.console import echo
from kestrel.httpclient import (
    MAX_HEADER_LINE,
    HttpClientError,
    LineTooLong,
    SocketReader,
    read_chunked,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

MAX_HEADER_BYTES = MAX_HEADER_LINE
MAX_BODY = 64 * 1024 * 1024
IDLE_TIMEOUT = 120.0

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 413: "Content Too Large", 422: "Unprocessable Content",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}  # fmt: skip


def unquote(text: str) -> str:
    """Percent-decoding as UTF-8 (urllib.parse costs start-up time under emulation)."""
    if "%" not in text:
        return text
    raw = bytearray()
    index = 0
    encoded = text.encode("utf-8")
    while index < len(encoded):
        byte = encoded[index]
        if byte == 0x25 and _is_hex(encoded[index + 1 : index + 3]):
            raw.append(int(encoded[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.append(byte)
            index += 1
    return raw.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    __slots__ = ("body", "headers", "method", "path", "peer", "query_string", "target")

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query_string: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        peer: str = "",
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.peer = peer

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def query(self, name: str) -> str | None:
        """First value of a query parameter (percent- and plus-decoded)."""
        for pair in self.query_string.split("&"):
            key, _, value = pair.partition("=")
            if unquote(key.replace("+", " ")) == name:
                return unquote(value.replace("+", " "))
        return None


class Response:
    """A buffered ``body``, or a ``stream`` of chunks sent until it ends (or the client goes)."""

    __slots__ = ("body", "headers", "status", "stream")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        stream: Iterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers: list[tuple[str, str]] = [] if headers is None else headers
        self.stream = stream


def json_response(payload: Any, status: int = 200) -> Response:
    import json  # lazily: not needed before the API listens

    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, [("Content-Type", "application/json")])


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _read_request(reader: SocketReader, sock: _socket.socket) -> Request | None:
    try:
        request_line = reader.readline()
    except LineTooLong:
        raise BadRequest(431, "request line too long") from None
    if not request_line:
        return None
    parts = request_line.decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, _version = parts
    headers: list[tuple[str, str]] = []
    total = len(request_line)
    while True:
        try:
            line = reader.readline()
        except LineTooLong:
            raise BadRequest(431, "header line too long") from None
        if not line:
            raise BadRequest(400, "connection closed inside the headers")
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise BadRequest(431, "headers too large")
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.append((name, value.strip()))
    request = Request(method.upper(), target, "", "", headers)
    raw_path, _, request.query_string = target.partition("?")
    if raw_path.startswith("http://"):
        raw_path = "/" + raw_path.split("/", 3)[-1] if raw_path.count("/") >= 3 else "/"
    if not raw_path.startswith("/"):
        raise BadRequest(400, "request target must be an absolute path")
    request.path = unquote(raw_path)

    if (request.header("expect") or "").lower() == "100-continue":
        sock.settimeout(None)
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    encoding = (request.header("transfer-encoding") or "").lower()
    length = request.header("content-length")
    if "chunked" in encoding:
        try:
            request.body = read_chunked(reader, MAX_BODY)
        except (HttpClientError, LineTooLong) as exc:
            raise BadRequest(400, str(exc)) from None
    elif length is not None:
        try:
            size = int(length)
        except ValueError:
            raise BadRequest(400, "bad Content-Length") from None
        if size < 0:
            raise BadRequest(400, "bad Content-Length")
        if size > MAX_BODY:
            raise BadRequest(413, "request body too large")
        request.body = reader.readexactly(size)
    return request


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _bind_addresses(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, address) pairs to bind; numeric hosts skip the resolver."""
    if host.count(".") == 3 and host.replace(".", "").isdigit():
        return [(_socket.AF_INET, (host, port))]
    if ":" in host:
        return [(_socket.AF_INET6, (host, port, 0, 0))]
    found = _socket.getaddrinfo(
        host or None, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE
    )
    unique: list[tuple[int, tuple[Any, ...]]] = []
    for family, _kind, _proto, _name, address in found:
        if (family, address) not in unique:
            unique.append((family, address))
    return unique


class HttpServer:
    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.listeners: list[_socket.socket] = []
        self._connections: set[_socket.socket] = set()
        self._lock = _thread.allocate_lock()
        self._closed = False

    def listen_tcp(self, host: str, port: int) -> None:
        """Bind and listen (connections queue from here on), then accept in a thread."""
        sockets: list[_socket.socket] = []
        try:
            for family, address in _bind_addresses(host, port):
                sock = _socket.socket(family, _socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
                if family == _socket.AF_INET6:
                    sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(128)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        for sock in sockets:
            self.listen_socket(sock)

    def listen_socket(self, sock: _socket.socket) -> None:
        """Serve an already listening socket."""
        sock.settimeout(None)
        self.listeners.append(sock)
        _thread.start_new_thread(self._accept_loop, (sock,))

    def bound_port(self) -> int:
        return int(self.listeners[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting and end every open connection (streams included)."""
        import contextlib

        self._closed = True
        for sock in self.listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(_socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            sock.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(_socket.SHUT_RDWR)

    def _accept_loop(self, listener: _socket.socket) -> None:
        while not self._closed:
            try:
                # _socket's accept: the socket module's wrapper is what we avoid importing.
                fd, address = listener._accept()  # type: ignore[attr-defined]
            except OSError:
                if self._closed:
                    return
                time.sleep(0.05)  # EMFILE and friends: do not spin
                continue
            conn = _socket.socket(listener.family, listener.type, listener.proto, fd)
            try:
                _thread.start_new_thread(self._connection, (conn, address))
            except RuntimeError:
                conn.close()

    def _connection(self, conn: _socket.socket, address: Any) -> None:
        with self._lock:
            if self._closed:  # close() set the flag before taking its snapshot
                conn.close()
                return
            self._connections.add(conn)
        peer = str(address[0]) if isinstance(address, tuple) and address else str(address)
        reader = SocketReader(conn, MAX_HEADER_BYTES)
        try:
            while True:
                reader.deadline = time.monotonic() + IDLE_TIMEOUT
                try:
                    request = _read_request(reader, conn)
                except BadRequest as exc:
                    self._send(conn, None, error_response(exc.status, str(exc)), False)
                    return
                if request is None:
                    return
                request.peer = peer
                try:
                    response = self.handler(request)
                except Exception as exc:
                    response = error_response(500, f"internal error: {exc}")
                wants_close = (request.header("connection") or "").lower() == "close"
                keep_alive = not wants_close and response.stream is None
                self._send(conn, request, response, keep_alive, reader)
                if not keep_alive:
                    return
        except (OSError, EOFError):  # timeouts, resets, a client gone mid-request
            return
        except Exception as exc:  # a bug must not print a traceback on the console
            echo(f"kestrel: connection from {peer} failed: {exc!r}")
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _send(
        self,
        conn: _socket.socket,
        request: Request | None,
        response: Response,
        keep_alive: bool,
        reader: SocketReader | None = None,
    ) -> None:
        skip = {"content-length", "connection", "transfer-encoding"}
        headers = [(k, v) for k, v in response.headers if k.lower() not in skip]
        headers.append(("Connection", "keep-alive" if keep_alive else "close"))
        conn.settimeout(None)
        if response.stream is None:
            no_body = response.status in (204, 304) or response.status < 200
            if not no_body:
                headers.append(("Content-Length", str(len(response.body))))
            data = _head(response.status, headers)
            if request is not None and request.method != "HEAD" and not no_body:
                data += response.body
            conn.sendall(data)
            return
        # A streamed body is delimited by closing the connection.
        conn.sendall(_head(response.status, headers))
        self._pump(conn, response.stream, reader)

    def _pump(
        self, conn: _socket.socket, stream: Iterator[bytes], reader: SocketReader | None
    ) -> None:
        import contextlib
        import select

        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        try:
            for chunk in stream:
                if chunk:
                    conn.sendall(chunk)
                # The client hanging up (or sending anything) ends the stream at once
                # instead of at the next write; empty chunks are ticks for this check.
                if self._closed or (reader is not None and reader.buffer) or poller.poll(0):
                    return
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
