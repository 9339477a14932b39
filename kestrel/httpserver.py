"""A small asyncio HTTP/1.1 server: keep-alive, request bodies, streamed responses.

The agent's needs are narrow (a dozen routes, SSE, proxying), and the stdlib's
http.server is thread-based and cannot stream to many clients cheaply, so this is
a focused implementation. It serves any connected stream socket: TCP and AF_VSOCK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kestrel.httpclient import HttpClientError, read_chunked

MAX_HEADER_BYTES = 64 * 1024
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


@dataclass
class Request:
    method: str
    target: str
    path: str
    query_string: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    peer: str = ""

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


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None


def json_response(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, [("Content-Type", "application/json")])


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    try:
        request_line = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError):
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
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
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
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    encoding = (request.header("transfer-encoding") or "").lower()
    length = request.header("content-length")
    if "chunked" in encoding:
        try:
            request.body = await read_chunked(reader, MAX_BODY)
        except HttpClientError as exc:
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
        request.body = await reader.readexactly(size)
    return request


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def listen_tcp(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(
            self._connection, host, port, limit=MAX_HEADER_BYTES, reuse_address=True
        )
        self.servers.append(server)
        return server

    async def listen_socket(self, sock: socket.socket) -> asyncio.Server:
        server = await asyncio.start_server(self._connection, sock=sock, limit=MAX_HEADER_BYTES)
        self.servers.append(server)
        return server

    def bound_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    request = await asyncio.wait_for(_read_request(reader, writer), IDLE_TIMEOUT)
                except BadRequest as exc:
                    await self._send(writer, None, error_response(exc.status, str(exc)), False)
                    return
                if request is None:
                    return
                request.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
                try:
                    response = await self.handler(request)
                except Exception as exc:
                    response = error_response(500, f"internal error: {exc}")
                wants_close = (request.header("connection") or "").lower() == "close"
                keep_alive = not wants_close and response.stream is None
                await self._send(writer, request, response, keep_alive, reader)
                if not keep_alive:
                    return
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        request: Request | None,
        response: Response,
        keep_alive: bool,
        reader: asyncio.StreamReader | None = None,
    ) -> None:
        skip = {"content-length", "connection", "transfer-encoding"}
        headers = [(k, v) for k, v in response.headers if k.lower() not in skip]
        headers.append(("Connection", "keep-alive" if keep_alive else "close"))
        if response.stream is None:
            no_body = response.status in (204, 304) or response.status < 200
            if not no_body:
                headers.append(("Content-Length", str(len(response.body))))
            writer.write(_head(response.status, headers))
            if request is not None and request.method != "HEAD" and not no_body:
                writer.write(response.body)
            await writer.drain()
            return
        # A streamed body is delimited by closing the connection.
        writer.write(_head(response.status, headers))
        await writer.drain()
        await self._pump(writer, response.stream, reader)

    async def _pump(
        self,
        writer: asyncio.StreamWriter,
        stream: AsyncIterator[bytes],
        reader: asyncio.StreamReader | None,
    ) -> None:
        async def copy() -> None:
            async for chunk in stream:
                writer.write(chunk)
                await writer.drain()

        copier = asyncio.ensure_future(copy())
        watcher = asyncio.ensure_future(reader.read(1)) if reader is not None else None
        waiting: set[asyncio.Future[Any]] = {copier}
        if watcher is not None:
            waiting.add(watcher)
        try:
            # The client hanging up ends the stream at once instead of at the next write.
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waiting:
                future.cancel()
            await asyncio.wait([copier])
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
