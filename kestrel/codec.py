"""The ``volant.manifest`` kernel-cmdline codec and a /proc/cmdline parser.

This module runs inside the guest, where only the Python standard library is
available, so it must not import anything else (not even ``volant``).

Wire format (compatible with the original Go implementation): the manifest is
serialised as JSON, gzip-compressed and encoded with the URL-safe base64
alphabet **without padding**, so the result contains only ``[A-Za-z0-9_-]``
and survives the kernel command line unquoted. We encode deterministically
(sorted keys, compact separators, gzip ``mtime=0``) so that the same manifest
always yields the same command line.

Decoding is lenient in what it accepts (missing or present padding, the
standard ``+/`` alphabet, bytes that are not gzip but raw JSON -- the original's
legacy fallback -- and a bare JSON object that was never base64-encoded) and
strict in what it returns: a ``dict`` or a ``ManifestDecodeError``. It is fed
untrusted input (and fuzzed), so every failure is funnelled into that one type
and decompression is bounded to defeat gzip bombs.

kestrel parses the command line before its API listens, so the module imports
nothing at load time: json, gzip and base64 are imported where they are used.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: Kernel parameter that carries the encoded manifest.
MANIFEST_KEY = "volant.manifest"

#: x86 ``COMMAND_LINE_SIZE`` default (bytes, including the terminating NUL).
CMDLINE_LIMIT = 2048

#: Upper bound for a decoded manifest. A command line holds at most ~2 KiB of
#: base64, but ``VOLANT_MANIFEST`` in the environment or an HTTP fetch has no
#: such limit; 1 MiB is far above any real manifest and still cheap to hold.
MAX_DECODED_BYTES = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
# Both base64 alphabets; at most two '=' may follow, at the very end.
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/")
# Whitespace as the kernel's isspace() sees it (ASCII only).
_KERNEL_SPACE = frozenset(" \t\n\v\f\r")


class ManifestDecodeError(ValueError):
    """The text is not a valid encoded manifest."""


class ManifestEncodeError(ValueError):
    """The object cannot be represented as JSON."""


def encode_manifest(obj: Mapping[str, Any]) -> str:
    """Encode a JSON-ready mapping as compact JSON -> gzip -> unpadded base64url."""
    import base64
    import gzip
    import json

    try:
        payload = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ManifestEncodeError(f"manifest is not JSON-serialisable: {exc}") from exc
    compressed = gzip.compress(payload, compresslevel=9, mtime=0)
    return base64.urlsafe_b64encode(compressed).rstrip(b"=").decode("ascii")


def decode_manifest(text: str) -> dict[str, Any]:
    """Decode what :func:`encode_manifest` (or the original Go encoder) produced.

    Raises :class:`ManifestDecodeError` for anything that does not decode to a
    JSON object.
    """
    if not isinstance(text, str):
        raise ManifestDecodeError(f"encoded manifest must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ManifestDecodeError("encoded manifest is empty")
    if stripped.startswith("{"):
        # A JSON object was passed as-is ('{' is not in any base64 alphabet).
        return _parse_json(stripped.encode("utf-8", errors="surrogatepass"))
    raw = _b64decode(stripped)
    if raw.startswith(_GZIP_MAGIC):
        raw = _gunzip(raw)
    # Not gzip: the original's legacy format carried raw JSON bytes.
    return _parse_json(raw)


def _is_base64_text(text: str) -> bool:
    """``[A-Za-z0-9_\\-+/]*={0,2}`` over the whole text (without importing re)."""
    body = text.rstrip("=")
    return len(text) - len(body) <= 2 and _BASE64_CHARS.issuperset(body)


def _b64decode(text: str) -> bytes:
    import base64
    import binascii

    if len(text) > 4 * MAX_DECODED_BYTES or not _is_base64_text(text):
        raise ManifestDecodeError("encoded manifest is neither base64url text nor a JSON object")
    body = text.rstrip("=").replace("+", "-").replace("/", "_")
    if len(body) % 4 == 1:
        raise ManifestDecodeError("encoded manifest has an impossible base64 length (truncated?)")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ManifestDecodeError(f"encoded manifest is not valid base64url: {exc}") from exc


def _gunzip(data: bytes) -> bytes:
    """Decompress every gzip member (Go's reader is multistream), bounded in size."""
    import zlib

    out = bytearray()
    remaining = data
    try:
        while remaining:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += inflater.decompress(remaining, MAX_DECODED_BYTES + 1 - len(out))
            if len(out) > MAX_DECODED_BYTES or inflater.unconsumed_tail:
                raise ManifestDecodeError(f"decoded manifest exceeds {MAX_DECODED_BYTES} bytes")
            if not inflater.eof:
                raise ManifestDecodeError("gzip stream of the manifest is truncated")
            remaining = inflater.unused_data
            # Trailing zero padding after the last member is tolerated, like gzip(1).
            if remaining and not remaining.startswith(_GZIP_MAGIC):
                if remaining.strip(b"\x00"):
                    raise ManifestDecodeError("trailing garbage after the gzip stream")
                break
    except zlib.error as exc:
        raise ManifestDecodeError(f"gzip stream of the manifest is corrupt: {exc}") from exc
    return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ManifestDecodeError(f"manifest JSON contains {name}, which is not valid JSON")


def _parse_json(raw: bytes) -> dict[str, Any]:
    import json

    if len(raw) > MAX_DECODED_BYTES:
        raise ManifestDecodeError(f"decoded manifest exceeds {MAX_DECODED_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestDecodeError("decoded manifest is neither gzip nor UTF-8 JSON") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ManifestDecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError; so is Python's int-digits limit.
        raise ManifestDecodeError(f"decoded manifest is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ManifestDecodeError(
            f"decoded manifest must be a JSON object, not {type(value).__name__}"
        )
    return value


def parse_cmdline(text: str) -> dict[str, str]:
    """Split a kernel command line into ``{key: value}`` the way the kernel does.

    Follows ``next_arg()`` in the kernel's ``lib/cmdline.c``: arguments are
    separated by ASCII whitespace, double quotes group text containing spaces
    (``key="a b"`` and ``"key=a b"`` both give ``a b``), the value's surrounding
    quotes are dropped, a bare word maps to ``""``, and when a key repeats the
    last occurrence wins.
    """
    params: dict[str, str] = {}
    pos = 0
    end = len(text)
    while True:
        while pos < end and text[pos] in _KERNEL_SPACE:
            pos += 1
        if pos >= end:
            return params
        quoted = text[pos] == '"'
        if quoted:
            pos += 1
        in_quote = quoted
        start = pos
        equals = -1
        while pos < end:
            char = text[pos]
            if char in _KERNEL_SPACE and not in_quote:
                break
            # Like the kernel, an '=' in the very first position is part of the key.
            if equals < 0 and char == "=" and pos > start:
                equals = pos
            if char == '"':
                in_quote = not in_quote
            pos += 1
        arg_end = pos
        if equals < 0:
            key_end = arg_end
            if quoted and arg_end > start and text[arg_end - 1] == '"':
                key_end -= 1
            key, value = text[start:key_end], ""
        else:
            key = text[start:equals]
            value_start, value_end = equals + 1, arg_end
            if value_start < value_end and text[value_start] == '"':
                value_start += 1
                if text[value_end - 1] == '"' and value_end - 1 >= value_start:
                    value_end -= 1
            elif quoted and text[value_end - 1] == '"' and value_end - 1 >= value_start:
                value_end -= 1
            value = text[value_start:value_end]
        if key:
            params[key] = value
        pos += 1


def format_cmdline(args: Mapping[str, str]) -> str:
    """Join ``{key: value}`` into command-line text, keys sorted for determinism.

    Values containing whitespace are double-quoted; an empty value gives a bare
    word. Text that the kernel cannot represent (a ``"`` in a value, whitespace
    or ``=`` or ``"`` in a key) is rejected with ``ValueError``.
    """
    parts: list[str] = []
    for key in sorted(args):
        value = args[key]
        if not key or any(c in _KERNEL_SPACE or c in '="' for c in key):
            raise ValueError(f"invalid kernel parameter name {key!r}")
        if '"' in value or "\x00" in value:
            raise ValueError(f"kernel parameter {key!r} has a value with a quote or NUL")
        if value == "":
            parts.append(key)
        elif any(c in _KERNEL_SPACE for c in value):
            parts.append(f'{key}="{value}"')
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
