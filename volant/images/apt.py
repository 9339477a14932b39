"""Adapter for Debian packaging tools: apt-cache, apt-get download, dpkg-deb.

Every Debian package the builder uses comes through here.  Downloads are
cached by exact package version, so a rebuild with unchanged inputs reuses the
``.deb`` files and only a new candidate version triggers a download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from volant.errors import NotFoundError, VolantError
from volant.logging import get_logger

log = get_logger("volant.images.apt")


class PackageNotFoundError(NotFoundError):
    """A Debian package is unknown to apt (wrong name, or ``apt-get update`` needed)."""


class ToolError(VolantError):
    """An external tool is missing or failed."""


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        # apt-get download escapes the epoch colon exactly like this.
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"


def _run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise ToolError(f"{argv[0]} is not installed (needed for: {' '.join(argv[:2])})")
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, env=env)


def candidate(name: str) -> DebPackage:
    """The version apt would install now (no network access)."""
    result = _run(["apt-cache", "show", "--no-all-versions", name])
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" ") and key not in fields:
            fields[key] = value.strip()
    if result.returncode != 0 or "Version" not in fields:
        raise PackageNotFoundError(
            f"Debian package {name!r} not found by apt-cache "
            "(check the name, or run 'apt-get update')", package=name)
    return DebPackage(fields.get("Package", name), fields["Version"],
                      fields.get("Architecture", "amd64"))


def depends(name: str) -> list[str]:
    """Direct ``Depends:`` of a package (used to resolve the kernel metapackage)."""
    result = _run(["apt-cache", "depends", "--important", name])
    if result.returncode != 0:
        raise PackageNotFoundError(f"Debian package {name!r} not found by apt-cache",
                                   package=name)
    found = []
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key in ("Depends", "|Depends"):
            found.append(value.strip().strip("<>"))
    return found


def download(package: DebPackage, cache_dir: Path) -> Path:
    """Return the cached ``.deb`` for this exact version, downloading it only if absent."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / package.filename
    if target.is_file() and target.stat().st_size > 0:
        return target
    log.info("downloading", package=package.pin)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".dl-") as tmp:
        # apt drops privileges to _apt for downloads; let it write here.
        os.chmod(tmp, 0o777)
        result = _run(["apt-get", "download", "-q", package.pin], cwd=Path(tmp))
        downloaded = Path(tmp) / package.filename
        if result.returncode != 0 or not downloaded.is_file():
            message = result.stderr.strip().splitlines()
            raise PackageNotFoundError(
                f"apt-get download {package.pin} failed: {message[-1] if message else '?'}",
                package=package.name)
        os.chmod(downloaded, 0o644)
        downloaded.replace(target)
    return target


def fetch(name: str, cache_dir: Path) -> tuple[DebPackage, Path]:
    package = candidate(name)
    return package, download(package, cache_dir)


def extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    result = _run(["dpkg-deb", "-x", str(deb), str(dest)])
    if result.returncode != 0:
        raise ToolError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
