"""Prepare a plugin manifest for install: fetch it, resolve paths, validate locally.

A manifest on disk may name its artifacts relative to itself (``"url":
"hello-initramfs.img"``) and point cloud-init documents at files next to it
(``"path": "user-data.yaml"``). The daemon cannot see the user's working
directory, so relative artifact paths become absolute (against the manifest's
directory) and cloud-init documents are inlined (``content`` + ``inline:
true``). The result is validated with the same ``parse_manifest`` the daemon
uses, so mistakes are caught before anything is sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from volant.cli.errors import CliError
from volant.errors import VolantError
from volant.manifest import parse_manifest

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TAG = re.compile(r"<[^>]*>")
CLOUD_INIT_DOCS = ("user_data", "meta_data", "network_config")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def load_source(source: str, timeout: float = 30.0) -> tuple[dict[str, Any], Path | None]:
    """The decoded manifest and the directory relative paths resolve against (None for URLs)."""
    if is_url(source):
        try:
            response = httpx.get(source, timeout=timeout, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot fetch manifest {source}: {exc or type(exc).__name__}"
                           ) from None
        if response.status_code != 200:
            raise CliError(f"cannot fetch manifest {source}: http {response.status_code}")
        text = response.text[:MAX_MANIFEST_BYTES]
        base: Path | None = None
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise CliError(f"cannot read manifest {source}: {exc.strerror or exc}") from None
        base = path.resolve().parent
    data = _decode(text, source)
    if not isinstance(data, dict):
        raise CliError(f"manifest {source}: expected a JSON object")
    return data, base


def _decode(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as first:
        # Manifests published on web pages sometimes arrive wrapped in HTML tags.
        stripped = _TAG.sub("", text)
        if stripped != text:
            try:
                return json.loads(stripped)
            except ValueError:
                pass
        raise CliError(f"manifest {source}: invalid JSON: {first}") from None


def _absolute(value: str, base: Path) -> str:
    if not value or value.startswith("/") or _SCHEME.match(value):
        return value
    return str((base / value).resolve())


def resolve_paths(manifest: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy with relative artifact paths made absolute and cloud-init files inlined."""
    result: dict[str, Any] = json.loads(json.dumps(manifest))
    for key in ("rootfs", "initramfs"):
        section = result.get(key)
        if isinstance(section, dict) and isinstance(section.get("url"), str):
            section["url"] = _absolute(section["url"], base)
    for disk in result.get("disks") or []:
        if isinstance(disk, dict) and isinstance(disk.get("source"), str):
            disk["source"] = _absolute(disk["source"], base)
    cloud_init = result.get("cloud_init")
    if isinstance(cloud_init, dict):
        for key in CLOUD_INIT_DOCS:
            doc = cloud_init.get(key)
            if isinstance(doc, dict) and isinstance(doc.get("path"), str) and doc["path"]:
                file = Path(doc["path"]) if doc["path"].startswith("/") else base / doc["path"]
                try:
                    content = file.read_text()
                except OSError as exc:
                    raise CliError(f"cloud_init.{key}.path: cannot read {file}: "
                                   f"{exc.strerror or exc}") from None
                cloud_init[key] = {"inline": True, "content": content}
    return result


def prepare(source: str) -> dict[str, Any]:
    """Load, resolve and validate; returns the JSON body to POST."""
    data, base = load_source(source)
    if base is not None:
        data = resolve_paths(data, base)
    try:
        parse_manifest(data)
    except VolantError as exc:
        raise CliError(f"invalid manifest {source}: {exc.message}") from None
    return data
