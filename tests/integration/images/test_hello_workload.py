"""The example workload itself, run on the host on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

HELLO = Path(__file__).resolve().parents[3] / "conf" / "plugins" / "hello" / "hello.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hello_url() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    env = {**os.environ, "HELLO_HOST": "127.0.0.1", "HELLO_PORT": str(port)}
    process = subprocess.Popen([sys.executable, str(HELLO)], env=env, stdout=subprocess.PIPE,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    try:
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=5)


def _request(url: str, method: str = "GET", body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_routes_and_log_lines(hello_url: tuple[str, subprocess.Popen[str]]) -> None:
    url, process = hello_url
    status, body = _request(f"{url}/")
    assert status == 200 and "hello" in body["message"]  # type: ignore[index]
    assert _request(f"{url}/healthz") == (200, {"status": "ok"})
    assert _request(f"{url}/greet", "POST", {"name": "volant"}) == (
        200, {"greeting": "hello, volant"})
    status, document = _request(f"{url}/openapi")
    on_disk = json.loads(HELLO.with_name("openapi.json").read_text())
    assert status == 200 and document == on_disk
    assert "/greet" in on_disk["paths"]
    assert _request(f"{url}/nope")[0] == 404
    assert _request(f"{url}/greet", "POST", "not an object") == (
        200, {"greeting": "hello, world"})
    process.terminate()
    output, _ = process.communicate(timeout=5)
    assert "listening on 127.0.0.1" in output
    assert output.count('"POST /greet HTTP/1.1" 200') == 2
    assert '"GET /healthz HTTP/1.1" 200' in output
