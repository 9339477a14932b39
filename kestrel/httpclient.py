"""A minimal asyncio HTTP/1.1 client for talking to the workload and the API.

Just enough for health probes, proxying and the manifest fetch: one request per
connection (``Connection: close``), bodies buffered, Content-Length / chunked /
read-to-EOF responses. Pulling in http.client (and email.*) would cost start-up
time under emulation for no gain.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024


class HttpClientError(Exception):
    """Transport failure or a malformed answer."""


@dataclass
class ClientResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, path-with-query) of an http:// URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "http":
        raise HttpClientError(f"only http:// URLs are supported, got {url!r}")
    authority, slash, tail = rest.partition("/")
    authority, query_sep, query = authority.partition("?")
    path = slash + tail if slash else "/"
    if query_sep:
        path = "/?" + query
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        host, _, port_text = authority[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise HttpClientError(f"URL {url!r} has no host")
    if port_text and not port_text.isdigit():
        raise HttpClientError(f"URL {url!r} has a bad port")
    path = path.split("#", 1)[0]
    return host, int(port_text) if port_text else 80, path


async def read_chunked(reader: asyncio.StreamReader, limit: int = MAX_BODY) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise HttpClientError("connection closed inside a chunked body")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpClientError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while (await reader.readline()).strip():
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise HttpClientError("body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def read_headers(reader: asyncio.StreamReader) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if not line:
            raise HttpClientError("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            return headers
        if len(headers) >= 200:
            raise HttpClientError("too many headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpClientError(f"malformed header line {line[:60]!r}")
        headers.append((name.strip(), value.strip()))


async def request(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> ClientResponse:
    """Send one request and buffer the answer; raises HttpClientError on any failure."""
    try:
        return await asyncio.wait_for(_request(method, url, headers or [], body), timeout)
    except TimeoutError:
        raise HttpClientError(f"{method} {url} timed out after {timeout:g}s") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise HttpClientError(f"{method} {url}: {exc}") from None


async def _request(
    method: str, url: str, headers: list[tuple[str, str]], body: bytes
) -> ClientResponse:
    host, port, path = split_url(url)
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEADER_LINE)
    try:
        host_header = host if port == 80 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]:{port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
        skip = {"host", "connection", "content-length", "transfer-encoding"}
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

        while True:
            status_line = await reader.readline()
            if not status_line:
                raise HttpClientError("connection closed before the status line")
            parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise HttpClientError(f"malformed status line {status_line[:60]!r}")
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            response_headers = await read_headers(reader)
            if status != 100:
                break
        response = ClientResponse(status, reason, response_headers, b"")
        if method.upper() == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return response
        encoding = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if "chunked" in encoding:
            response.body = await read_chunked(reader)
        elif length is not None:
            size = int(length)
            if size > MAX_BODY:
                raise HttpClientError("body too large")
            response.body = await reader.readexactly(size)
        else:
            chunks = bytearray()
            while chunk := await reader.read(65536):
                chunks += chunk
                if len(chunks) > MAX_BODY:
                    raise HttpClientError("body too large")
            response.body = bytes(chunks)
        return response
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
