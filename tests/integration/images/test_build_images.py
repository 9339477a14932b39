"""Builds the real hello image from Debian packages (cached under the image cache)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from volant.images import apt, cli, cpio, paths

REPO = Path(__file__).resolve().parents[3]
HELLO = REPO / "conf" / "plugins" / "hello" / "fledge.toml"
KESTREL = Path(importlib.util.find_spec("kestrel").origin).parent  # type: ignore[union-attr]
SCHEMA = REPO / "tests" / "unit" / "images" / "upstream-plugin-manifest-v1.schema.json"
runner = CliRunner()


def _no_download(*args: object, **kwargs: object) -> Path:
    raise AssertionError(f"unexpected download: {args}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class HelloBuilds:
    first_manifest: Path
    second_manifest: Path
    kestrel: Path  # the kestrel snapshot that went into the image

    def manifest(self, which: Path) -> dict:
        return json.loads(which.read_text())

    def artifact(self, which: Path) -> Path:
        return Path(self.manifest(which)["initramfs"]["url"])


def _hello_snapshot(directory: Path) -> Path:
    """The hello plugin with a frozen copy of kestrel ([agent] path), so that edits to the
    repository's kestrel during the test run cannot make the two builds differ."""
    shutil.copytree(HELLO.parent, directory, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(KESTREL, directory / "kestrel", ignore=shutil.ignore_patterns("__pycache__"))
    fledge = directory / "fledge.toml"
    text = fledge.read_text()
    assert 'source_strategy = "local"' in text
    fledge.write_text(text.replace('source_strategy = "local"',
                                   'source_strategy = "local"\npath = "kestrel"', 1))
    return fledge


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HelloBuilds]:
    cache = str(paths.cache_root())
    out = tmp_path_factory.mktemp("hello")
    fledge = _hello_snapshot(out / "src")
    first = runner.invoke(cli.app, ["build", str(fledge), "--output", str(out / "a"),
                                    "--cache-dir", cache])
    assert first.exit_code == 0, first.output
    # Unchanged inputs: the rebuild must reuse every downloaded package.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apt, "download", _no_download)
        second = runner.invoke(cli.app, ["build", str(fledge), "--output", str(out / "b"),
                                         "--cache-dir", cache])
    assert second.exit_code == 0, second.output
    yield HelloBuilds(Path(first.output.strip().splitlines()[-1]),
                      Path(second.output.strip().splitlines()[-1]), out / "src" / "kestrel")


def test_last_line_is_the_manifest_and_it_is_valid(hello: HelloBuilds) -> None:
    assert hello.second_manifest.name == "hello.manifest.json"
    manifest = hello.manifest(hello.second_manifest)
    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    artifact = hello.artifact(hello.second_manifest)
    assert artifact.is_absolute() and artifact.name == "hello.cpio.gz"
    assert manifest["initramfs"]["checksum"] == f"sha256:{_sha256(artifact)}"
    assert manifest["name"] == "hello" and manifest["version"] == "0.1.0"


def test_rebuild_is_byte_identical(hello: HelloBuilds) -> None:
    first = hello.artifact(hello.first_manifest)
    second = hello.artifact(hello.second_manifest)
    assert first != second
    assert _sha256(first) == _sha256(second)


def test_initramfs_size_target(hello: HelloBuilds) -> None:
    size = hello.artifact(hello.second_manifest).stat().st_size
    assert size <= 30 * 1024 * 1024, f"initramfs is {size / 1e6:.1f} MB"


def test_initramfs_contents(hello: HelloBuilds) -> None:
    members = {m.name: m for m in cpio.read_gzip_newc(hello.artifact(hello.second_manifest))}
    for required in ("init", "bin/busybox", "usr/bin/python3.11", "etc/kestrel/modules",
                     "usr/lib/python3/dist-packages/kestrel/__main__.py",
                     "usr/lib/python3/dist-packages/kestrel/__pycache__/__main__.cpython-311.pyc",
                     "opt/hello/hello.py", "opt/hello/openapi.json",
                     "usr/lib/python3.11/asyncio/__pycache__/__init__.cpython-311.pyc"):
        assert required in members, required
    init = members["init"].data.decode()
    assert init.startswith("#!/bin/busybox sh\n")
    assert "exec /usr/bin/python3 -X frozen_modules=on -I -S -c " in init
    assert "from kestrel.main import main; sys.exit(main())" in init
    assert stat.S_IMODE(members["init"].mode) == 0o755
    assert members["usr/bin/python3"].is_symlink
    for applet in ("bin/sh", "sbin/insmod", "sbin/switch_root", "bin/mount", "sbin/poweroff"):
        assert members[applet].is_symlink and members[applet].data == b"/bin/busybox", applet
    assert stat.S_ISCHR(members["dev/console"].mode) and members["dev/console"].rdev == (5, 1)
    for dropped in ("usr/lib/python3.11/test", "usr/lib/python3.11/idlelib",
                    "usr/lib/python3.11/tkinter", "usr/lib/python3.11/ensurepip"):
        assert dropped not in members, dropped
    assert {m.mtime for m in members.values()} == {0}
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}
    # the kestrel package is copied whole
    for source in hello.kestrel.glob("*.py"):
        guest = f"usr/lib/python3/dist-packages/kestrel/{source.name}"
        assert members[guest].data == source.read_bytes(), guest


def test_pyc_are_unchecked_hash_with_the_guest_magic(hello: HelloBuilds) -> None:
    members = {m.name: m for m in cpio.read_gzip_newc(hello.artifact(hello.second_manifest))}
    pyc = members["usr/lib/python3/dist-packages/kestrel/__pycache__/__main__.cpython-311.pyc"]
    assert pyc.data[:4] == importlib.util.MAGIC_NUMBER  # the test runs on 3.11 like the guest
    flags = int.from_bytes(pyc.data[4:8], "little")
    assert flags == 0b01  # hash-based, source not checked


def test_module_list_is_in_dependency_order(hello: HelloBuilds) -> None:
    members = {m.name: m for m in cpio.read_gzip_newc(hello.artifact(hello.second_manifest))}
    listed = members["etc/kestrel/modules"].data.decode().split()
    names = [path.rsplit("/", 1)[-1].removesuffix(".ko") for path in listed]
    for path in listed:
        assert path.lstrip("/") in members, path
    for before, after in [("virtio_ring", "virtio"), ("virtio", "virtio_mmio"),
                          ("virtio", "virtio_net"), ("net_failover", "virtio_net"),
                          ("failover", "net_failover"), ("virtio", "virtio_blk"),
                          ("fat", "vfat"), ("vsock", "vmw_vsock_virtio_transport")]:
        assert names.index(before) < names.index(after), (before, after)
    assert "isofs" in names


def test_kernel_json_is_cached(hello: HelloBuilds, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apt, "download", _no_download)
    result = runner.invoke(cli.app, ["kernel", "--json", "--cache-dir", str(paths.cache_root())])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info) == {"version", "bzimage", "vmlinux", "modules"}
    for key in ("bzimage", "vmlinux", "modules"):
        assert Path(info[key]).is_absolute() and Path(info[key]).exists(), key
    assert Path(info["vmlinux"]).read_bytes()[:4] == b"\x7fELF"
    assert (Path(info["modules"]) / "modules.dep").stat().st_size > 0
    assert Path(info["modules"]).name == info["version"]


ROOTFS_TOML = """\
version = "1"
strategy = "oci_rootfs"
[source]
path = "root"
[filesystem]
type = "ext4"
size_buffer_mb = 4
[mappings]
"app.py" = "/opt/app/app.py"
[manifest]
name = "app"
version = "1.0.0"
[manifest.resources]
cpu_cores = 1
memory_mb = 128
[manifest.workload]
type = "http"
base_url = "http://127.0.0.1:8000"
entrypoint = ["/usr/bin/python3", "/opt/app/app.py"]
"""


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True,
                          text=True, check=True).stdout


def test_rootfs_image(hello: HelloBuilds, tmp_path: Path) -> None:
    assert shutil.which("debugfs"), "e2fsprogs is missing (make setup installs it)"
    (tmp_path / "root" / "srv").mkdir(parents=True)
    (tmp_path / "root" / "srv" / "data.txt").write_text("from the source tree\n")
    (tmp_path / "app.py").write_text("print('app')\n")
    (tmp_path / "fledge.toml").write_text(ROOTFS_TOML)
    result = runner.invoke(cli.app, ["build", str(tmp_path / "fledge.toml"),
                                     "--output", str(tmp_path / "out"),
                                     "--cache-dir", str(paths.cache_root())])
    assert result.exit_code == 0, result.output
    manifest = json.loads(Path(result.output.strip().splitlines()[-1]).read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    image = Path(manifest["rootfs"]["url"])
    assert image.name == "app.img" and manifest["rootfs"]["format"] == "raw"
    assert "volant-root" in subprocess.run(["e2label", str(image)], capture_output=True,
                                           text=True, check=True).stdout
    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout
    assert manifest["rootfs"]["checksum"] == f"sha256:{_sha256(image)}"
    assert _debugfs(image, "cat /srv/data.txt") == "from the source tree\n"
    assert _debugfs(image, "cat /opt/app/app.py") == "print('app')\n"
    assert "virtio_net.ko" in _debugfs(image, "cat /etc/kestrel/modules")
    assert "python3.11" in _debugfs(image, "ls -l /usr/bin")
    # the kestrel initramfs that switch_roots into the disk: agent, no workload
    initramfs = Path(manifest["labels"]["volant.initramfs"])
    assert manifest["labels"]["volant.initramfs_checksum"] == f"sha256:{_sha256(initramfs)}"
    names = {m.name for m in cpio.read_gzip_newc(initramfs)}
    assert "usr/lib/python3/dist-packages/kestrel/main.py" in names
    assert "opt/app/app.py" not in names and "srv/data.txt" not in names
