"""The hello workload: a tiny stdlib-only HTTP service used by the example plugin.

GET /         -> JSON greeting
GET /healthz  -> health check for kestrel
GET /openapi  -> this service's OpenAPI document
POST /greet   -> {"greeting": "hello, <name>"} (the plugin's action)
POST /crash   -> answers, then exits with status 3 (shows kestrel restarting its workload)
Every request prints one log line to stdout, which kestrel forwards to the host.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


class HelloHandler(BaseHTTPRequestHandler):
    server_version = "hello/0.1.0"

    def _send_json(self, status: int, body: object) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/":
            self._send_json(200, {"message": "hello from a Volant microVM"})
        elif self.path == "/healthz":
            self._send_json(200, {"status": "ok"})
        elif self.path == "/openapi":
            self._send_json(200, json.loads(OPENAPI_PATH.read_text()))
        else:
            self._send_json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path == "/crash":
            self._send_json(202, {"crashing": True})
            self.wfile.flush()
            print("hello: crashing on request", flush=True)
            os._exit(3)
        if self.path != "/greet":
            self._send_json(404, {"error": f"no route {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send_json(400, {"error": "body must be JSON"})
            return
        name = body.get("name", "world") if isinstance(body, dict) else "world"
        self._send_json(200, {"greeting": f"hello, {name}"})

    def log_message(self, format: str, *args: object) -> None:
        print(f"hello: {self.address_string()} {format % args}", flush=True)


def main() -> None:
    host = os.environ.get("HELLO_HOST", "0.0.0.0")
    port = int(os.environ.get("HELLO_PORT", "8000"))
    server = ThreadingHTTPServer((host, port), HelloHandler)
    print(f"hello: listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
