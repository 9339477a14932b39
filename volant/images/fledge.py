"""fledge.toml: upstream's build recipe format (the subset we support) plus our ``[manifest]``.

Upstream fledge.toml describes only how to build the artifact; the manifest
fields (resources, workload, actions, ...) live in a separate file.  We carry
them in a ``[manifest]`` table so one file yields both the image and a
manifest ready for ``POST /api/v1/plugins``.  See docs/images.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from volant.errors import ValidationError
from volant.images.layout import normalize_guest_path
from volant.names import validate_name

Strategy = Literal["initramfs", "oci_rootfs"]
STRATEGIES: tuple[str, ...] = ("initramfs", "oci_rootfs")
TOP_LEVEL_KEYS = frozenset({"version", "strategy", "agent", "init", "source", "filesystem",
                            "mappings", "manifest"})
MANIFEST_KEYS = frozenset({"name", "version", "runtime", "resources", "workload", "health_check",
                           "actions", "openapi", "network", "labels", "cloud_init", "devices",
                           "disks", "image", "image_digest"})


@dataclass(frozen=True)
class Mapping:
    host: Path  # absolute, exists
    guest: str  # absolute, normalised


@dataclass(frozen=True)
class BuildSpec:
    path: Path  # the fledge.toml itself
    strategy: Strategy
    name: str
    manifest: dict[str, Any]  # the [manifest] table, relative paths not yet resolved
    agent_path: Path | None  # kestrel package directory; None = the repo's own
    source_dir: Path | None  # oci_rootfs: local root tree to start from
    filesystem_type: str = "ext4"
    size_buffer_mb: int = 100
    mappings: tuple[Mapping, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = ()


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValidationError(f"[{key}] must be a table")
    return value


def load_spec(path: Path) -> BuildSpec:
    """Read and validate a fledge.toml; every problem is a one-line ValidationError."""
    path = path.absolute()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValidationError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ValidationError(f"{path}: invalid TOML: {error}") from None
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: Path) -> BuildSpec:
    base = path.parent
    warnings: list[str] = []
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise ValidationError(f"{path.name}: unknown key(s) {', '.join(unknown)}")
    if data.get("version") != "1":
        raise ValidationError(f'{path.name}: version must be "1" (got {data.get("version")!r})')
    strategy = data.get("strategy")
    if strategy not in STRATEGIES:
        raise ValidationError(
            f"{path.name}: unknown strategy {strategy!r} (expected initramfs or oci_rootfs)")

    if data.get("init"):
        raise ValidationError("[init] (custom PID 1) is not supported: kestrel is always PID 1")

    agent = _table(data, "agent")
    agent_path: Path | None = None
    source_strategy = agent.get("source_strategy", "local")
    if source_strategy != "local":
        raise ValidationError(
            f"[agent] source_strategy {source_strategy!r} is not supported (only 'local')")
    if "path" in agent:
        agent_path = (base / str(agent["path"])).resolve()
        if not (agent_path / "__init__.py").is_file():
            raise ValidationError(f"[agent] path {agent_path} is not a kestrel Python package")

    source = _table(data, "source")
    source_dir: Path | None = None
    if "image" in source or "dockerfile" in source:
        raise ValidationError(
            "[source] image/dockerfile are not supported (no Docker/OCI registry access): "
            'use [source] path = "<local directory>" with strategy oci_rootfs')
    for ignored in ("busybox_url", "busybox_sha256"):
        if ignored in source:
            warnings.append(f"[source] {ignored} ignored: busybox comes from Debian busybox-static")
    if "path" in source:
        if strategy != "oci_rootfs":
            raise ValidationError("[source] path is only meaningful with strategy oci_rootfs")
        source_dir = (base / str(source["path"])).resolve()
        if not source_dir.is_dir():
            raise ValidationError(f"[source] path {source_dir} is not a directory")

    filesystem = _table(data, "filesystem")
    fs_type = filesystem.get("type", "ext4")
    if fs_type != "ext4":
        raise ValidationError(f"[filesystem] type {fs_type!r} is not supported (only ext4)")
    size_buffer = filesystem.get("size_buffer_mb", 100)
    if not isinstance(size_buffer, int) or isinstance(size_buffer, bool) or size_buffer < 0:
        raise ValidationError("[filesystem] size_buffer_mb must be an integer >= 0")

    mappings = tuple(_parse_mapping(host, guest, base)
                     for host, guest in sorted(_table(data, "mappings").items()))

    manifest = _table(data, "manifest")
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        raise ValidationError(f"[manifest] unknown key(s) {', '.join(unknown)}")
    name = manifest.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError("[manifest] name is required")
    validate_name(name, "plugin")
    if not isinstance(manifest.get("version"), str) or not manifest["version"]:
        raise ValidationError("[manifest] version is required (a string)")

    return BuildSpec(path=path, strategy=strategy, name=name, manifest=manifest,
                     agent_path=agent_path, source_dir=source_dir, filesystem_type=fs_type,
                     size_buffer_mb=size_buffer, mappings=mappings, warnings=tuple(warnings))


def _parse_mapping(host: str, guest: object, base: Path) -> Mapping:
    if not isinstance(guest, str):
        raise ValidationError(f"[mappings] {host!r}: the guest path must be a string")
    if not guest.startswith("/"):
        raise ValidationError(f"[mappings] {host!r} -> {guest!r}: guest path must be absolute")
    if ".." in guest.split("/"):
        raise ValidationError(f"[mappings] {host!r} -> {guest!r}: guest path must not contain '..'")
    host_path = (base / host).resolve()
    if not host_path.exists():
        raise ValidationError(f"[mappings] host path {host_path} does not exist")
    return Mapping(host_path, normalize_guest_path(guest))
