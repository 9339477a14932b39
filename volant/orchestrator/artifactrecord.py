"""Plugin artifacts: the upsert request, the record, and fetching into the media cache.

Upstream (section 1.3) kept artifact rows as pure metadata, served them with
PascalCase keys and never fetched or verified anything. Here a record with a
source is *realised*: its bytes are copied into the content-addressed media cache
(``volant/media.py``) and checked against its checksum, and the record says how
that went (``status``):

- ``registered`` -- no source (neither ``source_url`` nor ``local_path``): metadata only,
  as upstream;
- ``fetching``   -- the copy is under way (resumed after a volantd restart);
- ``ready``      -- verified and cached: ``sha256`` and ``cached_path`` are set;
- ``failed``     -- ``error`` says why (checksum or size mismatch, unreachable source,
  too large, ...). Posting the artifact again retries.

Source rules: ``source_url`` is ``http(s)://`` or ``file:///absolute/path`` and then
needs a ``checksum`` (remote bytes can change under the same URL; a checksum is what
makes the record verifiable); ``local_path`` is an absolute path on the daemon's host
whose digest is recorded at ingestion, so its checksum is optional. Giving both is
ambiguous and refused. ``size_bytes``, when given (> 0), must match too.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import attrs
import trio

from volant.errors import UnprocessableError, ValidationError, VolantError
from volant.logging import get_logger
from volant.media import MediaCache

log = get_logger("volant.artifacts")

STATUSES = ("registered", "fetching", "ready", "failed")
REQUEST_FIELDS = ("version", "artifact_name", "kind", "source_url", "checksum", "format",
                  "local_path", "size_bytes")
SOURCE_SCHEMES = ("http", "https", "file")

#: Upper bound of one artifact (root disks are the large ones).
MAX_ARTIFACT_BYTES = 8 * 1024 ** 3
#: httpx's per-operation timeout (connect, each read).
HTTP_TIMEOUT = 30.0
#: Deadline for a whole fetch; a transfer still running then fails.
FETCH_DEADLINE = 1800.0

MAX_NAME = 128
MAX_LABEL = 64
MAX_URL = 2048
MAX_PATH = 4096
# Versions and artifact names appear in URLs and tables: a conservative token.
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
# Free labels (kind, format): also '/' for media types such as application/x-raw.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~/-]*$")
_CHECKSUM = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


@attrs.frozen
class FetchLimits:
    max_bytes: int = MAX_ARTIFACT_BYTES
    http_timeout: float = HTTP_TIMEOUT
    deadline: float = FETCH_DEADLINE


# -- the request ------------------------------------------------------------------------------
@attrs.frozen
class ArtifactRequest:
    """A validated upsert body (``checksum`` normalised to ``sha256:<hex>`` or empty)."""

    version: str
    artifact_name: str
    kind: str = ""
    source_url: str = ""
    checksum: str = ""
    format: str = ""
    local_path: str = ""
    size_bytes: int = 0

    @property
    def source(self) -> str:
        """What to fetch: the URL, or the local path; empty for a metadata-only record."""
        return self.source_url or self.local_path

    @property
    def expected_sha256(self) -> str:
        return self.checksum.removeprefix("sha256:")


def _bad(field: str, message: str) -> ValidationError:
    return ValidationError(f"{field}: {message}", field=field)


def _string(body: Mapping[str, Any], field: str, *, required: bool = False,
            max_length: int = MAX_LABEL) -> str:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise _bad(field, "is required")
        return ""
    if not isinstance(value, str):
        raise _bad(field, "expected a string")
    if len(value) > max_length:
        raise _bad(field, f"is too long ({len(value)} characters, at most {max_length})")
    return value


def validate_token(value: str, field: str) -> str:
    """A version or artifact name: letters, digits and ``. _ + ~ -``, not starting with one."""
    if not value:
        raise _bad(field, "is required")
    if len(value) > MAX_NAME or not _TOKEN.fullmatch(value):
        raise _bad(field, f"invalid {value[:80]!r}: use at most {MAX_NAME} letters, digits "
                          "and '._+~-', starting with a letter or digit")
    return value


def normalise_checksum(value: str) -> str:
    """``sha256:<hex>`` (or bare hex, any case) -> ``sha256:<lower hex>``; 400 otherwise."""
    match = _CHECKSUM.fullmatch(value.strip().lower())
    if not match:
        raise _bad("checksum", "must be 'sha256:' followed by 64 hex digits, or 64 hex digits")
    return f"sha256:{match.group(1)}"


def _check_source_url(value: str) -> None:
    if _UNSAFE.search(value):
        raise _bad("source_url", "must not contain whitespace or control characters")
    parsed = urlparse(value)
    scheme = parsed.scheme.lower()
    if scheme not in SOURCE_SCHEMES:
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        raise _bad("source_url", f"unsupported {shown}: use http://, https:// or file:///")
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise _bad("source_url", "a file:// URL names an absolute path (file:///path)")
        if not PurePosixPath(unquote(parsed.path)).is_absolute() or parsed.path == "/":
            raise _bad("source_url", "a file:// URL must name a file (file:///path)")
    elif not parsed.hostname:
        raise _bad("source_url", f"an {scheme}:// URL needs a host")


def _check_local_path(value: str) -> None:
    if "\x00" in value or any(ch in value for ch in "\n\r"):
        raise _bad("local_path", "must not contain NUL or line breaks")
    if not PurePosixPath(value).is_absolute() or value == "/":
        raise _bad("local_path", "must be an absolute path to a file")


def parse_artifact_request(body: Any, max_bytes: int = MAX_ARTIFACT_BYTES) -> ArtifactRequest:
    """Validate an upsert body; any problem is a 400 naming the field (422 over the limit)."""
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    unknown = sorted(str(key) for key in body if key not in REQUEST_FIELDS)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    version = validate_token(_string(body, "version", required=True, max_length=MAX_NAME),
                             "version")
    name = validate_token(_string(body, "artifact_name", required=True, max_length=MAX_NAME),
                          "artifact_name")
    labels = {}
    for field in ("kind", "format"):
        value = _string(body, field)
        if value and not _LABEL.fullmatch(value):
            raise _bad(field, f"invalid {value!r}: letters, digits and '._+~/-' only")
        labels[field] = value
    source_url = _string(body, "source_url", max_length=MAX_URL)
    local_path = _string(body, "local_path", max_length=MAX_PATH)
    if source_url and local_path:
        raise ValidationError("give source_url or local_path, not both", field="local_path")
    if source_url:
        _check_source_url(source_url)
    if local_path:
        _check_local_path(local_path)
    raw_checksum = _string(body, "checksum", max_length=128)
    checksum = normalise_checksum(raw_checksum) if raw_checksum else ""
    if source_url and not checksum:
        raise _bad("checksum", "is required with source_url (sha256:<hex>)")
    size = body.get("size_bytes")
    if size is None:
        size = 0
    if isinstance(size, bool) or not isinstance(size, int):
        raise _bad("size_bytes", "expected an integer")
    if size < 0:
        raise _bad("size_bytes", "must be >= 0")
    if size > max_bytes:
        raise UnprocessableError(f"size_bytes: {size} exceeds the limit of {max_bytes} bytes",
                                 field="size_bytes")
    return ArtifactRequest(version=version, artifact_name=name, kind=labels["kind"],
                           source_url=source_url, checksum=checksum, format=labels["format"],
                           local_path=local_path, size_bytes=size)


# -- the record -------------------------------------------------------------------------------
@attrs.frozen
class ArtifactRecord:
    """One artifact of one plugin version; ``(plugin_name, version, artifact_name)`` is unique."""

    id: int
    plugin_name: str
    version: str
    artifact_name: str
    kind: str
    source_url: str
    checksum: str
    format: str
    local_path: str
    size_bytes: int
    status: str
    created_at: str
    updated_at: str
    error: str | None = None
    error_status: int = 0  # the HTTP status a waiting client gets for ``error``
    sha256: str | None = None
    cached_path: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.version, self.artifact_name

    @property
    def source(self) -> str:
        return self.source_url or self.local_path

    @classmethod
    def from_request(cls, request: ArtifactRequest, *, id: int, plugin: str,
                     created_at: str, now: str) -> ArtifactRecord:
        return cls(id=id, plugin_name=plugin, version=request.version,
                   artifact_name=request.artifact_name, kind=request.kind,
                   source_url=request.source_url, checksum=request.checksum,
                   format=request.format, local_path=request.local_path,
                   size_bytes=request.size_bytes,
                   status="fetching" if request.source else "registered",
                   created_at=created_at, updated_at=now)

    def to_json(self) -> dict[str, Any]:
        """The API shape: upstream's fields in snake_case, then ours."""
        return {
            "id": self.id, "plugin_name": self.plugin_name, "version": self.version,
            "artifact_name": self.artifact_name, "kind": self.kind,
            "source_url": self.source_url, "checksum": self.checksum, "format": self.format,
            "local_path": self.local_path, "size_bytes": self.size_bytes,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "status": self.status, "error": self.error, "sha256": self.sha256,
            "cached_path": self.cached_path,
        }

    def to_doc(self) -> dict[str, Any]:
        """What the snapshot file keeps (no nulls: TOML-safe, and explicit)."""
        doc = self.to_json()
        doc["error_status"] = self.error_status
        return {key: value for key, value in doc.items() if value is not None}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ArtifactRecord:
        """Decode a persisted record; ``KeyError``/``TypeError``/``ValueError`` when corrupt."""
        status = str(doc["status"])
        if status not in STATUSES:
            raise ValueError(f"unknown artifact status {status!r}")
        size = doc.get("size_bytes", 0)
        ident = doc["id"]
        if not isinstance(ident, int) or not isinstance(size, int):
            raise TypeError("id and size_bytes must be integers")

        def text(key: str) -> str:
            value = doc.get(key, "")
            if not isinstance(value, str):
                raise TypeError(f"{key} must be a string")
            return value

        return cls(id=ident, plugin_name=text("plugin_name"), version=text("version"),
                   artifact_name=text("artifact_name"), kind=text("kind"),
                   source_url=text("source_url"), checksum=text("checksum"),
                   format=text("format"), local_path=text("local_path"), size_bytes=size,
                   status=status, created_at=text("created_at"),
                   updated_at=text("updated_at"), error=doc.get("error"),
                   error_status=int(doc.get("error_status", 0)), sha256=doc.get("sha256"),
                   cached_path=doc.get("cached_path"))


# -- fetching ---------------------------------------------------------------------------------
@attrs.frozen
class FetchOutcome:
    """A finished fetch: the verified cache entry, or an error with its HTTP status."""

    sha256: str | None = None
    cached_path: str | None = None
    size_bytes: int = 0
    error: str | None = None
    error_status: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


async def fetch_into_cache(media: MediaCache, source: str, checksum: str, *, name: str,
                           declared_size: int = 0,
                           limits: FetchLimits = FetchLimits()) -> FetchOutcome:
    """Copy ``source`` into ``media``, verify checksum and size; never raises for bad input.

    Runs on the trio thread: HTTP through httpx's async client, local copies and
    hashing in worker threads (inside ``MediaCache``), so the event loop never blocks.
    """
    what = f"artifact {name!r}"
    try:
        with trio.fail_after(limits.deadline):
            path = await media.ensure(source, checksum, what=what, max_bytes=limits.max_bytes,
                                      timeout=limits.http_timeout)
        size = (await trio.to_thread.run_sync(path.stat)).st_size
    except trio.TooSlowError:
        return FetchOutcome(error=f"{what}: fetching {source} did not finish within "
                                  f"{limits.deadline:g}s", error_status=504)
    except VolantError as exc:
        return FetchOutcome(error=exc.message, error_status=exc.status)
    except OSError as exc:
        status = 507 if exc.errno == errno.ENOSPC else 500
        return FetchOutcome(error=f"{what}: cannot store {source}: {exc.strerror or exc}",
                            error_status=status)
    if declared_size and size != declared_size:
        return FetchOutcome(error=f"{what}: size mismatch for {source}: declared "
                                  f"{declared_size} bytes, got {size}", error_status=422)
    return FetchOutcome(sha256=path.name, cached_path=str(path), size_bytes=size)
