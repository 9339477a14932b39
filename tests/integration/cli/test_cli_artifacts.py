"""``volar plugins artifacts``: add (waits for the fetch), list, show, rm, one-line errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.blobserver import serve_blobs
from tests.daemon_process import VolantdProcess
from tests.integration.cli.volar_run import volar

BLOB = b"cli artifact\n" * 300
SHA = hashlib.sha256(BLOB).hexdigest()


def test_artifacts_add_list_show_rm(daemon: VolantdProcess, manifest_path: Path,
                                    tmp_path: Path) -> None:
    installed = volar(daemon.url, "plugins", "install", str(manifest_path))
    assert installed.code == 0, installed.err
    local = tmp_path / "blob.bin"
    local.write_bytes(BLOB)

    added = volar(daemon.url, "plugins", "artifacts", "add", "demo", "disk", "--version", "1",
                  "--local-path", str(local), "--kind", "rootfs")
    assert added.code == 0, added.err
    assert added.out.strip() == f"artifact disk 1 of plugin demo ready sha256:{SHA}"

    with serve_blobs({"/blob": BLOB}) as server:
        remote = volar(daemon.url, "-o", "json", "plugins", "artifacts", "add", "demo", "img",
                       "--version", "2", "--source-url", f"{server.url}/blob",
                       "--checksum", f"sha256:{SHA}", "--size", str(len(BLOB)))
    assert remote.code == 0, remote.err
    assert remote.json()["status"] == "ready" and remote.json()["sha256"] == SHA

    table = volar(daemon.url, "plugins", "artifacts", "list", "demo")
    rows = [line.split() for line in table.out.splitlines()]
    assert rows[0] == ["VERSION", "NAME", "KIND", "STATUS", "SIZE", "SHA256"]
    assert rows[1:] == [["1", "disk", "rootfs", "ready", str(len(BLOB)), SHA[:12]],
                        ["2", "img", "-", "ready", str(len(BLOB)), SHA[:12]]]
    only_two = volar(daemon.url, "-o", "json", "plugins", "artifacts", "list", "demo",
                     "--version", "2").json()
    assert [a["artifact_name"] for a in only_two] == ["img"]

    shown = volar(daemon.url, "plugins", "artifacts", "show", "demo", "disk", "--version", "1")
    fields = dict(line.split(None, 1) for line in shown.out.splitlines() if line.strip())
    assert fields["status"].strip() == "ready"
    assert fields["local_path"].strip() == str(local)

    mismatch = volar(daemon.url, "plugins", "artifacts", "add", "demo", "bad", "--version", "1",
                     "--local-path", str(local), "--checksum", "0" * 64)
    mismatch.assert_one_line_error("http 422", "checksum mismatch")
    scheme = volar(daemon.url, "plugins", "artifacts", "add", "demo", "x", "--version", "1",
                   "--source-url", "ftp://127.0.0.1/x", "--checksum", SHA)
    scheme.assert_one_line_error("http 400", "unsupported scheme")
    unknown = volar(daemon.url, "plugins", "artifacts", "list", "ghost")
    unknown.assert_one_line_error("http 404", "plugin ghost not found")

    assert volar(daemon.url, "plugins", "artifacts", "rm", "demo").code == 2
    assert volar(daemon.url, "plugins", "artifacts", "rm", "demo", "disk").code == 2
    one = volar(daemon.url, "plugins", "artifacts", "rm", "demo", "bad", "--version", "1")
    assert one.out.strip() == "artifact bad 1 of plugin demo deleted"
    by_version = volar(daemon.url, "plugins", "artifacts", "rm", "demo", "--version", "1")
    assert by_version.out.strip() == "artifacts 1 of plugin demo deleted"
    left = volar(daemon.url, "-o", "json", "plugins", "artifacts", "list", "demo").json()
    assert [(a["version"], a["artifact_name"]) for a in left] == [("2", "img")]
    everything = volar(daemon.url, "plugins", "artifacts", "rm", "demo", "--all")
    assert everything.code == 0
    assert volar(daemon.url, "-o", "json", "plugins", "artifacts", "list", "demo").json() == []
