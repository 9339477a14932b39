import hashlib
import json
from pathlib import Path

import jsonschema
import pytest

from volant.errors import ValidationError
from volant.images.fledge import load_spec
from volant.images.plugin_manifest import build_manifest

# A copy of upstream's docs/schemas/plugin-manifest-v1.json (draft-07).
SCHEMA_PATH = Path(__file__).with_name("upstream-plugin-manifest-v1.schema.json")
HELLO = Path(__file__).resolve().parents[3] / "conf" / "plugins" / "hello" / "fledge.toml"


def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def test_hello_initramfs_manifest_is_valid_upstream_json(tmp_path: Path) -> None:
    artifact = tmp_path / "hello.cpio.gz"
    artifact.write_bytes(b"archive")
    manifest = build_manifest(load_spec(HELLO), artifact=artifact, kind="initramfs",
                              output_dir=tmp_path)
    jsonschema.validate(manifest, _schema())
    assert manifest["initramfs"]["url"] == str(artifact)
    assert manifest["initramfs"]["checksum"] == "sha256:" + hashlib.sha256(b"archive").hexdigest()
    assert manifest["resources"] == {"cpu_cores": 1, "memory_mb": 256}
    assert manifest["workload"]["entrypoint"] == ["/usr/bin/python3", "/opt/hello/hello.py"]
    assert manifest["actions"]["greet"]["path"] == "/greet"
    assert manifest["network"] == {"mode": "bridged"}
    openapi = Path(manifest["openapi"])
    assert openapi.is_absolute() and openapi.parent == tmp_path
    assert json.loads(openapi.read_text())["info"]["title"] == "hello"


def test_rootfs_manifest_has_raw_rootfs_and_initramfs_label(tmp_path: Path) -> None:
    artifact = tmp_path / "hello.img"
    artifact.write_bytes(b"disk")
    manifest = build_manifest(load_spec(HELLO), artifact=artifact, kind="rootfs",
                              output_dir=tmp_path,
                              extra_labels={"volant.initramfs": "/x/hello.kestrel.cpio.gz"})
    jsonschema.validate(manifest, _schema())
    assert "initramfs" not in manifest
    assert manifest["rootfs"]["format"] == "raw"
    assert manifest["labels"]["volant.initramfs"] == "/x/hello.kestrel.cpio.gz"


def test_missing_workload_is_rejected(tmp_path: Path) -> None:
    source = HELLO.read_text()
    start = source.index("[manifest.workload]")
    end = source.index("[manifest.health_check]")
    fledge = tmp_path / "fledge.toml"
    fledge.write_text(source[:start] + source[end:])
    for name in ("hello.py", "openapi.json"):
        (tmp_path / name).write_text((HELLO.parent / name).read_text())
    artifact = tmp_path / "a"
    artifact.write_bytes(b"")
    with pytest.raises(ValidationError, match="workload"):
        build_manifest(load_spec(fledge), artifact=artifact, kind="initramfs", output_dir=tmp_path)
