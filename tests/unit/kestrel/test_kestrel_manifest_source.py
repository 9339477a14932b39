"""Manifest source order: env, then cmdline, then the API with the key, with retries."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kestrel.codec import ManifestDecodeError, encode_manifest
from kestrel.manifest_source import (
    ManifestUnavailable,
    fetch_manifest,
    local_manifest,
    manifest_url,
)

ENV_MANIFEST = {"name": "from-env", "version": "1"}
CMDLINE_MANIFEST = {"name": "from-cmdline", "version": "2"}
API_MANIFEST = {"name": "from-api", "version": "3", "workload": {"entrypoint": ["/bin/true"]}}


class FakeApi:
    """volantd stand-in: fails the first `failures` requests with 503."""

    def __init__(self, failures: int = 0, require_key: str | None = None) -> None:
        self.failures = failures
        self.require_key = require_key
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = self.headers.get("X-Volant-API-Key")
                outer.requests.append((self.path, key))
                if outer.failures > 0:
                    outer.failures -= 1
                    self._send(503, {"error": "starting"})
                elif outer.require_key is not None and key != outer.require_key:
                    self._send(401, {"error": "bad key"})
                elif self.path == "/api/v1/plugins/hello/manifest":
                    self._send(200, API_MANIFEST)
                else:
                    self._send(404, {"error": "no such plugin"})

            def _send(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def cmdline(self, **extra: str) -> dict[str, str]:
        return {
            "volant.api_host": "127.0.0.1",
            "volant.api_port": str(self.port),
            "volant.plugin": "hello",
            **extra,
        }


@pytest.fixture
def api_factory() -> Iterator[Any]:
    started: list[FakeApi] = []

    def make(**kwargs: Any) -> FakeApi:
        api = FakeApi(**kwargs)
        threading.Thread(target=api.server.serve_forever, daemon=True).start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.server.shutdown()
        api.server.server_close()


def test_env_beats_cmdline() -> None:
    loaded = local_manifest(
        encode_manifest(ENV_MANIFEST), {"volant.manifest": encode_manifest(CMDLINE_MANIFEST)}
    )
    assert loaded is not None
    assert (loaded.manifest["name"], loaded.source) == ("from-env", "env")


def test_cmdline_when_env_unset() -> None:
    loaded = local_manifest(None, {"volant.manifest": encode_manifest(CMDLINE_MANIFEST)})
    assert loaded is not None
    assert (loaded.manifest["name"], loaded.source) == ("from-cmdline", "cmdline")


def test_no_local_source() -> None:
    assert local_manifest(None, {"volant.plugin": "x"}) is None


def test_garbage_manifest_is_a_decode_error() -> None:
    with pytest.raises(ManifestDecodeError):
        local_manifest(None, {"volant.manifest": "!!!not-base64!!!"})


def test_manifest_url() -> None:
    assert manifest_url({"volant.api_host": "10.0.0.1", "volant.plugin": "p"}) == (
        "http://10.0.0.1:7777/api/v1/plugins/p/manifest"
    )
    assert manifest_url({"volant.api_host": "10.0.0.1"}) is None
    assert manifest_url({"volant.plugin": "p"}) is None


def test_fetch_sends_the_api_key(api_factory: Any) -> None:
    api = api_factory(require_key="s3cret")
    loaded = fetch_manifest(api.cmdline(**{"volant.api_key": "s3cret"}))
    assert loaded.source == "api"
    assert loaded.manifest == API_MANIFEST
    assert api.requests == [("/api/v1/plugins/hello/manifest", "s3cret")]


def test_fetch_without_key_sends_no_header(api_factory: Any) -> None:
    api = api_factory()
    loaded = fetch_manifest(api.cmdline())
    assert loaded.manifest["name"] == "from-api"
    assert api.requests[0][1] is None


def test_fetch_retries_with_backoff_until_the_api_answers(api_factory: Any) -> None:
    api = api_factory(failures=2)
    messages: list[str] = []
    loaded = fetch_manifest(api.cmdline(), first_delay=0.01, log=messages.append)
    assert loaded.manifest["name"] == "from-api"
    assert len(api.requests) == 3
    assert len(messages) == 2 and "503" in messages[0]


def test_fetch_gives_up_after_the_attempts(api_factory: Any) -> None:
    api = api_factory(failures=10)
    with pytest.raises(ManifestUnavailable, match="503"):
        fetch_manifest(api.cmdline(), attempts=3, first_delay=0.01)
    assert len(api.requests) == 3


def test_fetch_wrong_key_fails_fast(api_factory: Any) -> None:
    api = api_factory(require_key="right")
    with pytest.raises(ManifestUnavailable, match="401"):
        fetch_manifest(api.cmdline(**{"volant.api_key": "wrong"}), first_delay=0.01)
    assert len(api.requests) == 1


def test_fetch_unreachable_api() -> None:
    cmdline = {"volant.api_host": "127.0.0.1", "volant.api_port": "1", "volant.plugin": "hello"}
    with pytest.raises(ManifestUnavailable, match="fetch failed"):
        fetch_manifest(cmdline, attempts=2, first_delay=0.01)


def test_fetch_without_api_settings() -> None:
    with pytest.raises(ManifestUnavailable, match=r"volant\.api_host"):
        fetch_manifest({})
