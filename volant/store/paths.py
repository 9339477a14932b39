"""Validation of paths relative to the state directory.

Names that users choose (VM, deployment, plugin names) become directory and
file names here, so every component must be a DNS label (``validate_name``):
that rules out ``/``, ``..``, NUL, control characters, spaces and overlong
names. Only the last component may carry a short extension (``state.json``,
``3.toml``). The result can never be absolute or leave the state directory.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from volant.errors import ValidationError
from volant.names import validate_name
from volant.store.errors import InvalidStatePathError

MAX_RELPATH_LENGTH = 512
_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")


def _describe(relpath: str) -> str:
    # repr() shows control characters escaped instead of emitting them into logs.
    shown = relpath if len(relpath) <= 80 else relpath[:77] + "..."
    return repr(shown)


def validate_relpath(relpath: object) -> PurePosixPath:
    """Return ``relpath`` as a ``PurePosixPath`` if safe, else raise ``InvalidStatePathError``."""
    if not isinstance(relpath, str) or not relpath:
        raise InvalidStatePathError("state path is required", field="path")
    shown = _describe(relpath)
    if len(relpath) > MAX_RELPATH_LENGTH:
        raise InvalidStatePathError(
            f"state path {shown} is too long ({len(relpath)} > {MAX_RELPATH_LENGTH})", field="path"
        )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in relpath):
        raise InvalidStatePathError(
            f"state path {shown} contains NUL or control characters", field="path"
        )
    if relpath.startswith("/"):
        raise InvalidStatePathError(f"state path {shown} must be relative", field="path")
    parts = relpath.split("/")
    for index, part in enumerate(parts):
        if part in ("", ".", ".."):
            raise InvalidStatePathError(
                f"state path {shown} has an empty, '.' or '..' component", field="path"
            )
        is_last = index == len(parts) - 1
        _validate_component(part, shown, allow_extension=is_last)
    return PurePosixPath(*parts)


def _validate_component(part: str, shown: str, *, allow_extension: bool) -> None:
    stem, dot, extension = part.rpartition(".") if allow_extension else ("", "", part)
    if not dot:
        stem, extension = part, ""
    try:
        validate_name(stem, "state path component")
    except ValidationError as exc:
        raise InvalidStatePathError(f"state path {shown}: {exc.message}", field="path") from exc
    if dot and not _EXTENSION.match(extension):
        raise InvalidStatePathError(
            f"state path {shown}: invalid file extension {extension!r}", field="path"
        )
