"""`volar plugins install` preparation: relative paths, cloud-init inlining, local validation."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vmtools import write_plugin
from volant.cli.errors import CliError
from volant.cli.manifest_files import prepare, resolve_paths


def test_relative_artifacts_resolve_against_the_manifest_directory(tmp_path: Path) -> None:
    manifest = write_plugin(tmp_path)
    manifest["initramfs"]["url"] = "demo-initramfs.img"
    manifest["disks"] = [{"name": "data", "source": "disks/data.img"}]
    manifest["rootfs"] = {"url": "https://example.invalid/rootfs.img"}
    resolved = resolve_paths(manifest, tmp_path)
    assert resolved["initramfs"]["url"] == str(tmp_path / "demo-initramfs.img")
    assert resolved["disks"][0]["source"] == str(tmp_path / "disks" / "data.img")
    assert resolved["rootfs"]["url"] == "https://example.invalid/rootfs.img"
    assert manifest["initramfs"]["url"] == "demo-initramfs.img"  # input untouched


def test_cloud_init_path_documents_are_inlined(tmp_path: Path) -> None:
    (tmp_path / "user-data.yaml").write_text("#cloud-config\nhostname: demo\n")
    manifest = write_plugin(tmp_path, cloud_init={
        "datasource": "NoCloud", "user_data": {"path": "user-data.yaml"}})
    resolved = resolve_paths(manifest, tmp_path)
    assert resolved["cloud_init"]["user_data"] == {
        "inline": True, "content": "#cloud-config\nhostname: demo\n"}


def test_prepare_from_another_working_directory(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "plugin"
    sub.mkdir()
    manifest = write_plugin(sub)
    manifest["initramfs"]["url"] = "demo-initramfs.img"
    path = sub / "manifest.json"
    path.write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    body = prepare("plugin/manifest.json")
    assert body["initramfs"]["url"] == str(sub / "demo-initramfs.img")


def test_invalid_manifest_is_refused_locally(tmp_path: Path) -> None:
    manifest = write_plugin(tmp_path)
    manifest["resources"] = {"cpu_cores": 0, "memory_mb": 128}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(CliError, match="cpu_cores"):
        prepare(str(path))


def test_missing_cloud_init_file_is_a_clear_error(tmp_path: Path) -> None:
    manifest = write_plugin(tmp_path, cloud_init={
        "datasource": "NoCloud", "meta_data": {"path": "nope.yaml"}})
    with pytest.raises(CliError, match=r"cloud_init\.meta_data\.path"):
        resolve_paths(manifest, tmp_path)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A manifest published on a loopback web server, wrapped in HTML like some pages do."""
    manifest = write_plugin(tmp_path)
    body = f"<html><body><pre>{json.dumps(manifest)}</pre></body></html>".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/demo.json" else 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if status == 200 else 0))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", manifest
    finally:
        server.shutdown()
        server.server_close()


def test_manifest_from_a_url(served: tuple[str, dict[str, Any]]) -> None:
    base, manifest = served
    assert prepare(f"{base}/demo.json") == manifest
    with pytest.raises(CliError, match="http 404"):
        prepare(f"{base}/missing.json")
