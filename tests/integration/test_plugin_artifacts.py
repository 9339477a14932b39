"""Plugin artifact routes through a live volantd (hollow VMM): fetched, verified, persisted.

Sources are a loopback HTTP server started by the test and ``file://`` URLs; every
answer on the routes upstream also has is checked against upstream's schemas.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.blobserver import BlobServer, serve_blobs
from tests.daemon_process import VolantdProcess, running_daemon
from tests.integration.test_upstream_contract import check
from tests.vmtools import install, write_plugin

KERNEL = b"pretend kernel image\n" * 2000
KERNEL_SHA = hashlib.sha256(KERNEL).hexdigest()
DISK = b"pretend disk\n" * 500
DISK_SHA = hashlib.sha256(DISK).hexdigest()
NEVER_SERVED_SHA = hashlib.sha256(b"bytes no source has").hexdigest()
LIST = "/api/v1/plugins/{plugin}/artifacts"
ONE = "/api/v1/plugins/{plugin}/artifacts/{artifact}"
BASE = "/api/v1/plugins/demo/artifacts"


@pytest.fixture(scope="module")
def blobs() -> Iterator[BlobServer]:
    with serve_blobs({"/kernel": KERNEL, "/disk": DISK}) as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VolantdProcess]:
    base = tmp_path_factory.mktemp("artifacts")
    with running_daemon(base) as proc:
        yield proc


@pytest.fixture
def client(daemon: VolantdProcess, tmp_path: Path) -> Iterator[httpx.Client]:
    """A client with a freshly installed ``demo`` plugin (no artifacts)."""
    with daemon.client() as c:
        c.delete("/api/v1/plugins/demo")
        install(c, write_plugin(tmp_path))
        yield c


def cached_sha(record: dict[str, Any]) -> str:
    return hashlib.sha256(Path(record["cached_path"]).read_bytes()).hexdigest()


def wait_settled(client: httpx.Client, name: str, version: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record: dict[str, Any] = client.get(f"{BASE}/{name}",
                                            params={"version": version}).json()
        if record["status"] != "fetching":
            return record
        time.sleep(0.05)
    raise AssertionError(f"{name} still fetching")


def test_http_fetch_is_verified_cached_and_upstream_compatible(
        client: httpx.Client, blobs: BlobServer) -> None:
    body = {"version": "1.0.0", "artifact_name": "kernel", "kind": "kernel", "format": "raw",
            "source_url": f"{blobs.url}/kernel", "checksum": f"sha256:{KERNEL_SHA}",
            "size_bytes": len(KERNEL)}
    created = client.post(BASE, params={"wait": "ready"}, json=body)
    assert created.status_code == 201, created.text
    check(created, LIST, "post")
    record = created.json()
    assert record["status"] == "ready" and record["error"] is None
    assert record["sha256"] == KERNEL_SHA and cached_sha(record) == KERNEL_SHA
    assert {k: record[k] for k in body} == body
    assert not any(key[0].isupper() for key in record)  # snake_case, not upstream's Go names

    got = client.get(f"{BASE}/kernel", params={"version": "1.0.0"})
    assert got.status_code == 200 and got.json() == record
    check(got, ONE, "get")
    listed = client.get(BASE)
    assert listed.status_code == 200 and listed.json() == [record]
    check(listed, LIST, "get")

    # Content-addressed: bytes already cached under the checksum are not fetched again.
    fetches = blobs.hits["/kernel"]
    copy = client.post(BASE, params={"wait": "ready"}, json={**body, "artifact_name": "copy"})
    assert copy.status_code == 201 and copy.json()["cached_path"] == record["cached_path"]
    assert blobs.hits["/kernel"] == fetches


def test_file_url_without_wait_then_ready(client: httpx.Client, tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(DISK)
    accepted = client.post(BASE, json={"version": "2", "artifact_name": "disk",
                                       "source_url": source.as_uri(), "checksum": DISK_SHA})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["status"] in ("fetching", "ready")
    record = wait_settled(client, "disk", "2")
    assert record["status"] == "ready" and cached_sha(record) == DISK_SHA
    assert record["size_bytes"] == len(DISK)
    assert record["checksum"] == f"sha256:{DISK_SHA}"


def test_checksum_mismatch_fails_the_record(client: httpx.Client, blobs: BlobServer) -> None:
    body = {"version": "1", "artifact_name": "bad", "source_url": f"{blobs.url}/disk",
            "checksum": NEVER_SERVED_SHA}
    answer = client.post(BASE, params={"wait": "ready"}, json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert "checksum mismatch" in error["error"] and error["details"]["status"] == "failed"
    record = client.get(f"{BASE}/bad", params={"version": "1"}).json()
    assert record["status"] == "failed" and "checksum mismatch" in record["error"]
    assert record["cached_path"] is None and record["sha256"] is None
    # Without ?wait the POST is accepted and the failure shows on the record.
    assert client.post(BASE, json={**body, "version": "2"}).status_code == 201
    assert wait_settled(client, "bad", "2")["status"] == "failed"
    # An unreachable source is a 502.
    missing = client.post(BASE, params={"wait": "ready"},
                          json={**body, "source_url": f"{blobs.url}/absent"})
    assert missing.status_code == 502 and "404" in missing.json()["error"]


@pytest.mark.parametrize(("body", "field"), [
    ({"version": "1", "artifact_name": "a", "source_url": "ftp://127.0.0.1/a",
      "checksum": KERNEL_SHA}, "source_url"),
    ({"version": "1", "artifact_name": "a", "source_url": "gopher://x/a",
      "checksum": KERNEL_SHA}, "source_url"),
    ({"artifact_name": "a"}, "version"),
    ({"version": "1"}, "artifact_name"),
    ({"version": "1", "artifact_name": "no/slash"}, "artifact_name"),
    ({"version": "1 0", "artifact_name": "a"}, "version"),
    ({"version": "1", "artifact_name": "a", "checksum": "sha1:abc"}, "checksum"),
    ({"version": "1", "artifact_name": "a", "size_bytes": -5}, "size_bytes"),
    ({"version": "1", "artifact_name": "a", "source_url": "http://127.0.0.1/a"}, "checksum"),
    ({"version": "1", "artifact_name": "a", "local_path": "relative.img"}, "local_path"),
    ({"version": "1", "artifact_name": "a", "Version": "1"}, "Version"),
])
def test_bad_input_is_400_and_changes_nothing(client: httpx.Client, body: dict[str, Any],
                                              field: str) -> None:
    answer = client.post(BASE, params={"wait": "ready"}, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["field"] == field
    check(answer, LIST, "post")
    assert client.get(BASE).json() == []


def test_not_found_and_version_required(client: httpx.Client) -> None:
    for method, path in (("GET", "/api/v1/plugins/ghost/artifacts"),
                         ("POST", "/api/v1/plugins/ghost/artifacts"),
                         ("DELETE", "/api/v1/plugins/ghost/artifacts"),
                         ("GET", "/api/v1/plugins/ghost/artifacts/a?version=1"),
                         ("GET", f"{BASE}/nope?version=1"),
                         ("DELETE", f"{BASE}/nope?version=1")):
        answer = client.request(method, path, json={"version": "1", "artifact_name": "a"}
                                if method == "POST" else None)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "not found" in answer.json()["error"]
    required = client.get(f"{BASE}/a")
    assert required.status_code == 400
    assert required.json() == {"error": "version: query parameter required",
                               "details": {"field": "version"}}
    check(required, ONE, "get")


def test_delete_by_version_and_with_the_plugin(client: httpx.Client, daemon: VolantdProcess,
                                               tmp_path: Path) -> None:
    for version, name in (("1", "a"), ("1", "b"), ("2", "a")):
        assert client.post(BASE, json={"version": version, "artifact_name": name}
                           ).json()["status"] == "registered"
    assert [r["version"] for r in client.get(BASE, params={"version": "1"}).json()] == ["1", "1"]
    deleted = client.delete(BASE, params={"version": "1"})
    assert deleted.status_code == 204
    check(deleted, LIST, "delete")
    assert [(r["version"], r["artifact_name"]) for r in client.get(BASE).json()] == [("2", "a")]
    assert client.delete(f"{BASE}/a", params={"version": "2"}).status_code == 204
    assert client.get(BASE).json() == []

    assert client.post(BASE, json={"version": "3", "artifact_name": "kept"}).status_code == 201
    state = Path(daemon.env["VOLANT_STATE_DIR"]) / "artifacts" / "demo.json"
    assert state.is_file()
    assert client.delete("/api/v1/plugins/demo").status_code == 204
    assert not state.exists()
    install(client, write_plugin(tmp_path))
    assert client.get(BASE).json() == []


def test_records_survive_a_restart(tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(DISK)
    with running_daemon(tmp_path / "d") as daemon:
        with daemon.client() as c:
            install(c, write_plugin(tmp_path))
            made = c.post(BASE, params={"wait": "ready"},
                          json={"version": "1", "artifact_name": "disk",
                                "local_path": str(source)})
            assert made.status_code == 201, made.text
        daemon.stop()
        daemon.start()
        with daemon.client() as c:
            after = c.get(f"{BASE}/disk", params={"version": "1"})
            assert after.status_code == 200 and after.json() == made.json()
            assert cached_sha(after.json()) == DISK_SHA
