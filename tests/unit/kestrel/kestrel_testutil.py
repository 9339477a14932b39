"""Helpers for the kestrel tests: fake block devices and a tiny workload script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

WORKLOAD = r"""
import http.server, json, os, sys, time

port = int(os.environ["WPORT"])
mode = os.environ.get("WMODE", "serve")
counter = os.environ.get("WCOUNTER")
if counter:
    runs = int(open(counter).read() or "0") + 1 if os.path.exists(counter) else 1
    open(counter, "w").write(str(runs))
print(f"workload up pid={os.getpid()}", flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
if mode == "crash":
    sys.exit(3)
if mode == "orphan":
    # Leave a grandchild that outlives its parent, so the agent must reap it.
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)

class Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if self.path.startswith("/slow"):
            time.sleep(2)
        if self.path.startswith("/echo-line"):
            print("echo:" + self.path.split("?", 1)[-1], flush=True)
        if self.path == "/openapi":
            payload = {"openapi": "3.0.3", "info": {"title": "fake", "version": "1"}}
        else:
            payload = {"method": self.command, "path": self.path, "body": body,
                       "x_test": self.headers.get("X-Test"), "pid": os.getpid()}
        data = json.dumps(payload).encode()
        self.send_response(201 if "/created" in self.path else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Workload", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = do_PUT = do_DELETE = _answer
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def write_workload(directory: Path) -> Path:
    path = directory / "workload.py"
    path.write_text(WORKLOAD)
    return path


def make_ext4(path: Path, label: str) -> None:
    mke2fs = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
    subprocess.run(
        [mke2fs, "-q", "-F", "-t", "ext4", "-L", label, str(path), "4M"],
        check=True,
        capture_output=True,
    )


def make_iso(path: Path, volume_id: str) -> None:
    data = bytearray(40 * 1024)
    data[32768] = 1  # primary volume descriptor
    data[32769:32774] = b"CD001"
    data[32808:32840] = volume_id.encode().ljust(32, b" ")
    path.write_bytes(bytes(data))


def make_fat32(path: Path, label: str) -> None:
    data = bytearray(64 * 1024)
    data[0:3] = b"\xeb\x58\x90"
    data[71:82] = label.encode().ljust(11, b" ")
    data[82:90] = b"FAT32   "
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))


def make_fat16(path: Path, label: str) -> None:
    data = bytearray(64 * 1024)
    data[43:54] = label.encode().ljust(11, b" ")
    data[54:62] = b"FAT16   "
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))


def make_xfs(path: Path, label: str) -> None:
    data = bytearray(64 * 1024)
    data[0:4] = b"XFSB"
    data[108:120] = label.encode().ljust(12, b"\0")
    path.write_bytes(bytes(data))


def make_blank(path: Path, size: int = 128 * 1024) -> None:
    path.write_bytes(bytes(size))
