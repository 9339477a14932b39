"""Boot media: a content-addressed cache with sha256 verification.

Kernels, initramfs and rootfs images named by a manifest (``http(s)://``,
``file://`` or an absolute path) are copied once into
``<state_dir>/cache/media/sha256/<hex>`` and verified. A manifest that names
a checksum is served from the cache without touching the source again (upstream
re-downloaded every medium at every boot). A checksum mismatch is a 422 and
leaves nothing in the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import trio

from volant.errors import UnprocessableError, UpstreamError
from volant.logging import get_logger
from volant.manifest import checksum_hex

log = get_logger("volant.media")
CHUNK = 1024 * 1024


class MediaCache:
    def __init__(self, root: Path) -> None:
        self.root = root / "sha256"
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, trio.Lock] = {}

    def path_for(self, hex_digest: str) -> Path:
        return self.root / hex_digest

    async def ensure(self, url: str, checksum: str = "", what: str = "medium") -> Path:
        """Return the cached, verified path of ``url``; fetch it if needed."""
        expected = checksum_hex(checksum) if checksum else None
        if expected is not None and self.path_for(expected).is_file():
            return self.path_for(expected)
        lock = self._locks.setdefault(url, trio.Lock())
        async with lock:
            if expected is not None and self.path_for(expected).is_file():
                return self.path_for(expected)
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https"):
                tmp, digest = await self._download(url, what)
            else:
                source = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
                tmp, digest = await trio.to_thread.run_sync(self._copy_local, source, what)
            if expected is not None and digest != expected:
                tmp.unlink(missing_ok=True)
                raise UnprocessableError(
                    f"{what} checksum mismatch for {url}: expected sha256:{expected}, "
                    f"got sha256:{digest}",
                    field=what,
                )
            final = self.path_for(digest)
            await trio.to_thread.run_sync(os.replace, tmp, final)
            return final

    def _tempfile(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".fetch-")
        return fd, Path(name)

    def _copy_local(self, source: Path, what: str) -> tuple[Path, str]:
        if not source.is_absolute():
            raise UnprocessableError(f"{what}: {source} is not an absolute path", field=what)
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise UnprocessableError(f"{what}: {source} does not exist", field=what) from None
        except OSError as exc:
            raise UnprocessableError(f"{what}: cannot read {source}: {exc}", field=what) from None
        fd, tmp = self._tempfile()
        sha = hashlib.sha256()
        try:
            with src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    sha.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, sha.hexdigest()

    async def _download(self, url: str, what: str) -> tuple[Path, str]:
        fd, tmp = self._tempfile()
        sha = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as dst:
                async with (
                    httpx.AsyncClient(timeout=60.0, follow_redirects=True) as client,
                    client.stream("GET", url) as response,
                ):
                    if response.status_code >= 300:
                        raise UpstreamError(
                            f"{what}: GET {url} returned {response.status_code}", field=what
                        )
                    async for chunk in response.aiter_bytes(CHUNK):
                        sha.update(chunk)
                        await trio.to_thread.run_sync(dst.write, chunk)
                await trio.to_thread.run_sync(os.fsync, dst.fileno())
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise UpstreamError(f"{what}: cannot fetch {url}: {exc}", field=what) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, sha.hexdigest()


def copy_once(source: Path, target: Path) -> bool:
    """Create ``target`` as a copy of ``source`` unless it exists (a VM's writable root disk).

    Returns whether a copy was made. The copy is atomic, so a crash mid-copy never
    leaves a half disk that a later boot would take for the real one.
    """
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".copy-")
    os.close(fd)
    try:
        shutil.copyfile(source, name)
        with open(name, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return True
