"""The plugin manifest the builder writes next to the artifact (upstream manifest v1 shape)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from volant.errors import ValidationError
from volant.images.fledge import BuildSpec

SCHEMA_VERSION = "1.0"


def sha256_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _require_positive_int(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"[manifest.{where}] {key} must be an integer >= 1")
    return value


def _check_workload(workload: dict[str, Any]) -> None:
    if workload.get("type") != "http":
        raise ValidationError('[manifest.workload] type must be "http"')
    if not isinstance(workload.get("base_url"), str) or "://" not in workload["base_url"]:
        raise ValidationError("[manifest.workload] base_url must be a URL")
    entrypoint = workload.get("entrypoint")
    if (not isinstance(entrypoint, list) or not entrypoint
            or not all(isinstance(arg, str) for arg in entrypoint) or not entrypoint[0]):
        raise ValidationError("[manifest.workload] entrypoint must be a non-empty list of strings")
    env = workload.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValidationError("[manifest.workload] env values must be strings")


def _check_actions(actions: dict[str, Any]) -> None:
    for name, action in actions.items():
        if not isinstance(action, dict) or not action.get("method") or not action.get("path"):
            raise ValidationError(f"[manifest.actions.{name}] needs method and path")


def build_manifest(spec: BuildSpec, *, artifact: Path, kind: str, output_dir: Path,
                   extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Manifest dict for ``artifact`` (``kind`` = ``initramfs`` or ``rootfs``)."""
    source = spec.manifest
    resources = source.get("resources")
    if not isinstance(resources, dict):
        raise ValidationError("[manifest.resources] is required (cpu_cores, memory_mb)")
    workload = source.get("workload")
    if not isinstance(workload, dict):
        raise ValidationError("[manifest.workload] is required (type, base_url, entrypoint)")
    _check_workload(workload)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": spec.name,
        "version": source["version"],
        "runtime": source.get("runtime", spec.name),
        "resources": {
            "cpu_cores": _require_positive_int(resources, "cpu_cores", "resources"),
            "memory_mb": _require_positive_int(resources, "memory_mb", "resources"),
        },
        "workload": dict(workload),
    }
    artifact_ref: dict[str, Any] = {"url": str(artifact.absolute()),
                                    "checksum": sha256_checksum(artifact)}
    if kind == "rootfs":
        artifact_ref["format"] = "raw"
    manifest[kind] = artifact_ref
    if "health_check" in source:
        manifest["health_check"] = dict(source["health_check"])
    if "actions" in source:
        _check_actions(source["actions"])
        manifest["actions"] = {name: dict(action) for name, action in source["actions"].items()}
    if "openapi" in source:
        manifest["openapi"] = _resolve_openapi(str(source["openapi"]), spec, output_dir)
    for key in ("network", "cloud_init", "devices", "disks", "image", "image_digest"):
        if key in source:
            manifest[key] = source[key]
    labels = {str(k): str(v) for k, v in source.get("labels", {}).items()}
    labels.update(extra_labels or {})
    if labels:
        manifest["labels"] = dict(sorted(labels.items()))
    return manifest


def _resolve_openapi(value: str, spec: BuildSpec, output_dir: Path) -> str:
    """URLs pass through; a local document is copied beside the manifest (absolute path),
    so the output directory is self-contained."""
    if value.startswith(("http://", "https://")):
        return value
    source = (spec.path.parent / value).resolve()
    if not source.is_file():
        raise ValidationError(f"[manifest] openapi document {source} does not exist")
    destination = output_dir.absolute() / f"{spec.name}.openapi.json"
    shutil.copyfile(source, destination)
    return str(destination)
