"""Tap interface names: deterministic, short enough for IFNAMSIZ, collision-resistant.

Upstream dropped hyphens and used the sanitised name verbatim for short names,
so ``web-1`` and ``web1`` both became ``vttap-web1`` (a [GAP]). Here the name is
``vt`` + up to four readable characters + ``-`` + a base32 digest of the *full*
VM name filling the rest, so every tap name is exactly 15 characters (8 to 12
digest characters, i.e. 40 to 60 bits). The readable part only helps humans reading ``ip link``; the
digest is what separates names, so distinct VM names differ in the digest.
Deterministic: after a restart the same VM finds the same tap.
"""

from __future__ import annotations

import base64
import hashlib
import re

MAX_IFNAME = 15  # IFNAMSIZ - 1
PREFIX = "vt"
_READABLE = 4
_OUR_TAP = re.compile(r"^vt[a-z0-9]{0,4}-[a-z2-7]{8,12}$")


def _digest(name: str, length: int) -> str:
    raw = hashlib.sha256(name.encode("utf-8")).digest()
    return base64.b32encode(raw).decode("ascii").lower()[:length]


def tap_name(vm_name: str) -> str:
    """The tap name for ``vm_name`` (at most 15 characters of ``[a-z0-9-]``)."""
    readable = re.sub(r"[^a-z0-9]", "", vm_name.lower())[:_READABLE]
    digest_len = MAX_IFNAME - len(PREFIX) - len(readable) - 1
    return f"{PREFIX}{readable}-{_digest(vm_name, digest_len)}"


def is_our_tap(ifname: str) -> bool:
    """True if ``ifname`` has the shape :func:`tap_name` produces (for the orphan sweep)."""
    return len(ifname) == MAX_IFNAME and _OUR_TAP.match(ifname) is not None
