"""A loopback HTTP server that serves fixed blobs, for fetch tests (127.0.0.1 only).

``serve_blobs({"/a.bin": b"..."}, slow={"/slow.bin"})`` yields the base URL. A slow
path sends its headers and then stalls until the server shuts down, which is how
tests hold a fetch "in flight". Unknown paths answer 404. Requests are counted.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs


@attrs.define
class BlobServer:
    url: str
    hits: Counter[str]


@contextmanager
def serve_blobs(blobs: dict[str, bytes], slow: frozenset[str] | set[str] = frozenset()
                ) -> Iterator[BlobServer]:
    released = threading.Event()
    hits: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[self.path] += 1
            body = blobs.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in slow:
                self.wfile.write(body[:1])
                self.wfile.flush()
                released.wait(30)
                return
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield BlobServer(f"http://127.0.0.1:{server.server_address[1]}", hits)
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
