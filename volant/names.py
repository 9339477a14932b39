"""Validation of names that end up in file paths, interface names and kernel cmdlines.

VM, deployment and plugin names follow DNS-label rules (RFC 1123): lower-case
letters, digits and ``-``, 1-63 characters, starting and ending with a letter or
digit. That keeps them safe as directory names, hostnames and cmdline values,
and rules out ``/``, ``..``, NUL, spaces and control characters by construction.
"""

from __future__ import annotations

import re

from volant.errors import ValidationError

MAX_NAME_LENGTH = 63
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_name(name: object, kind: str = "name") -> str:
    """Return ``name`` if it is a valid DNS label, else raise ``ValidationError``."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{kind} is required", field=kind)
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"{kind} is too long ({len(name)} characters, at most {MAX_NAME_LENGTH})", field=kind
        )
    if not _LABEL.fullmatch(name):
        raise ValidationError(
            f"invalid {kind} {name!r}: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
            field=kind,
        )
    return name
