"""Boot media: a content-addressed cache with sha256 verification.

Kernels, initramfs and rootfs images named by a manifest (``http(s)://``,
``file://`` or an absolute path) are copied once into
``<state_dir>/cache/media/sha256/<hex>`` and verified. A manifest that names
a checksum is served from the cache without touching the source again (upstream
re-downloaded every medium at every boot). A checksum mismatch is a 422 and
leaves nothing in the cache. Callers may bound the size (``max_bytes``: the copy
stops as soon as the source is larger, a 422) and the HTTP timeout.
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
HTTP_TIMEOUT = 60.0


def _too_large(what: str, source: str, max_bytes: int) -> UnprocessableError:
    return UnprocessableError(f"{what}: {source} is larger than the limit of {max_bytes} bytes",
                              field=what)


class MediaCache:
    def __init__(self, root: Path) -> None:
        self.root = root / "sha256"
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, trio.Lock] = {}

    def path_for(self, hex_digest: str) -> Path:
        return self.root / hex_digest

    async def ensure(self, url: str, checksum: str = "", what: str = "medium", *,
                     max_bytes: int | None = None, timeout: float = HTTP_TIMEOUT) -> Path:
        """Return the cached, verified path of ``url``; fetch it if needed.

        ``max_bytes`` bounds the copy; ``timeout`` is httpx's per-operation timeout
        (connect, each read), not a deadline for the whole transfer.
        """
        expected = checksum_hex(checksum) if checksum else None
        if expected is not None and self.path_for(expected).is_file():
            return self.path_for(expected)
        lock = self._locks.setdefault(url, trio.Lock())
        async with lock:
            if expected is not None and self.path_for(expected).is_file():
                return self.path_for(expected)
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https"):
                tmp, digest = await self._download(url, what, max_bytes, timeout)
            else:
                source = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
                tmp, digest = await trio.to_thread.run_sync(self._copy_local, source, what,
                                                            max_bytes)
            if expected is not None and digest != expected:
                tmp.unlink(missing_ok=True)
                raise UnprocessableError(
                    f"{what} checksum mismatch for {url}: expected sha256:{expected}, "
                    f"got sha256:{digest}",
                    field=what,
                )
            final = self.path_for(digest)
            try:
                await trio.to_thread.run_sync(os.replace, tmp, final)
            except BaseException:  # cancelled (a superseded fetch): leave no temp file
                tmp.unlink(missing_ok=True)
                raise
            return final

    def _tempfile(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".fetch-")
        return fd, Path(name)

    def _copy_local(self, source: Path, what: str,
                    max_bytes: int | None = None) -> tuple[Path, str]:
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
        copied = 0
        try:
            with src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    copied += len(chunk)
                    if max_bytes is not None and copied > max_bytes:
                        raise _too_large(what, str(source), max_bytes)
                    sha.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, sha.hexdigest()

    async def _download(self, url: str, what: str, max_bytes: int | None = None,
                        timeout: float = HTTP_TIMEOUT) -> tuple[Path, str]:
        fd, tmp = self._tempfile()
        sha = hashlib.sha256()
        received = 0
        try:
            with os.fdopen(fd, "wb") as dst:
                async with (
                    httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
                    client.stream("GET", url) as response,
                ):
                    if response.status_code >= 300:
                        raise UpstreamError(
                            f"{what}: GET {url} returned {response.status_code}", field=what
                        )
                    announced = response.headers.get("content-length", "")
                    if (max_bytes is not None and announced.isdigit()
                            and int(announced) > max_bytes):
                        raise _too_large(what, url, max_bytes)
                    async for chunk in response.aiter_bytes(CHUNK):
                        received += len(chunk)
                        if max_bytes is not None and received > max_bytes:
                            raise _too_large(what, url, max_bytes)
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
