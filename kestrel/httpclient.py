"""A minimal blocking HTTP/1.1 client, and the buffered socket reader the server shares.

Just enough for health probes, proxying and the manifest fetch: one request per
connection (``Connection: close``), bodies buffered, Content-Length / chunked /
read-to-EOF responses, one overall deadline per request. Pulling in http.client
(and email.*) -- or even the ``socket`` module, which builds its enums at import --
would cost start-up time under emulation for no gain, so this talks to ``_socket``.
"""

from __future__ import annotations

import _socket
import time

MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024
_RECV_SIZE = 65536


class HttpClientError(Exception):
    """Transport failure or a malformed answer."""


class IncompleteRead(EOFError):
    """The peer closed the connection before the expected bytes arrived."""


class LineTooLong(ValueError):
    """A line (request line, header, chunk size) exceeds the reader's limit."""


class SocketReader:
    """Buffered reads from a blocking socket, bounded by an optional deadline.

    ``deadline`` is a ``time.monotonic()`` value; past it a read raises TimeoutError.
    ``None`` means wait as long as it takes.
    """

    def __init__(self, sock: _socket.socket, line_limit: int = MAX_HEADER_LINE) -> None:
        self.sock = sock
        self.line_limit = line_limit
        self.buffer = bytearray()
        self.deadline: float | None = None
        self.at_eof = False

    def _fill(self) -> bool:
        """Receive more bytes; False at end of stream."""
        if self.at_eof:
            return False
        if self.deadline is None:
            self.sock.settimeout(None)
        else:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(remaining)
        data = self.sock.recv(_RECV_SIZE)
        if not data:
            self.at_eof = True
            return False
        self.buffer += data
        return True

    def readline(self) -> bytes:
        """One line including its ``\\n``; at end of stream whatever is left (maybe b"")."""
        searched = 0
        while True:
            index = self.buffer.find(b"\n", searched)
            if index >= 0:
                if index + 1 > self.line_limit:
                    raise LineTooLong("line too long")
                line = bytes(self.buffer[: index + 1])
                del self.buffer[: index + 1]
                return line
            if len(self.buffer) > self.line_limit:
                raise LineTooLong("line too long")
            searched = len(self.buffer)
            if not self._fill():
                line = bytes(self.buffer)
                self.buffer.clear()
                return line

    def readexactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise IncompleteRead(
                    f"{len(self.buffer)} bytes read on a total of {size} expected bytes"
                )
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_some(self) -> bytes:
        """What is buffered, or one receive; b"" at end of stream."""
        if not self.buffer and not self._fill():
            return b""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def read_chunked(reader: SocketReader, limit: int = MAX_BODY) -> bytes:
    body = bytearray()
    while True:
        size_line = reader.readline()
        if not size_line:
            raise HttpClientError("connection closed inside a chunked body")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpClientError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while reader.readline().strip():
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise HttpClientError("body too large")
        body += reader.readexactly(size)
        reader.readexactly(2)


def read_headers(reader: SocketReader) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline()
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


class ClientResponse:
    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

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


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path`` keeping any path prefix of the base."""
    if path.startswith(("http://", "https://")):
        return path
    base = base_url.rstrip("/")
    if not path.startswith("/"):
        path = "/" + path
    return base + path


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


def connect(host: str, port: int, deadline: float) -> _socket.socket:
    """A connected TCP socket to the first address of ``host`` that answers."""
    last_error: OSError | None = None
    for family, kind, proto, _name, address in _socket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    raise last_error or OSError(f"no address for {host}")


def request(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> ClientResponse:
    """Send one request and buffer the answer; raises HttpClientError on any failure."""
    try:
        return _request(method, url, headers or [], body, time.monotonic() + timeout)
    except TimeoutError:
        raise HttpClientError(f"{method} {url} timed out after {timeout:g}s") from None
    except (OSError, EOFError, ValueError) as exc:
        raise HttpClientError(f"{method} {url}: {exc}") from None


def _request(
    method: str, url: str, headers: list[tuple[str, str]], body: bytes, deadline: float
) -> ClientResponse:
    host, port, path = split_url(url)
    sock = connect(host, port, deadline)
    try:
        host_header = host if port == 80 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]:{port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
        skip = {"host", "connection", "content-length", "transfer-encoding"}
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        sock.settimeout(_remaining(deadline))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

        reader = SocketReader(sock, MAX_HEADER_LINE)
        reader.deadline = deadline
        while True:
            status_line = reader.readline()
            if not status_line:
                raise HttpClientError("connection closed before the status line")
            parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise HttpClientError(f"malformed status line {status_line[:60]!r}")
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            response_headers = read_headers(reader)
            if status != 100:
                break
        response = ClientResponse(status, reason, response_headers, b"")
        if method.upper() == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return response
        encoding = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if "chunked" in encoding:
            response.body = read_chunked(reader)
        elif length is not None:
            size = int(length)
            if size < 0:
                raise HttpClientError(f"bad Content-Length {length!r}")
            if size > MAX_BODY:
                raise HttpClientError("body too large")
            response.body = reader.readexactly(size)
        else:
            chunks = bytearray()
            while chunk := reader.read_some():
                chunks += chunk
                if len(chunks) > MAX_BODY:
                    raise HttpClientError("body too large")
            response.body = bytes(chunks)
        return response
    finally:
        sock.close()
