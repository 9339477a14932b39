"""Fuzz the guest codec: decode_manifest and parse_cmdline on arbitrary input.

Run: ``.venv/bin/python fuzz/codec_fuzz.py -max_total_time=60``. The only
exception ``decode_manifest`` may raise is ``ManifestDecodeError``;
``parse_cmdline`` must never raise; encode/decode must round-trip.
"""

from __future__ import annotations

import base64
import gzip
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from kestrel.codec import (
        ManifestDecodeError,
        decode_manifest,
        encode_manifest,
        parse_cmdline,
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 0:
        text = payload.decode("utf-8", errors="replace")
    elif mode == 1:
        text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    else:
        text = base64.urlsafe_b64encode(gzip.compress(payload, mtime=0)).decode()
    try:
        decoded = decode_manifest(text)
    except ManifestDecodeError:
        decoded = None
    if decoded is not None and decode_manifest(encode_manifest(decoded)) != decoded:
        raise AssertionError("encode/decode round trip changed the manifest")
    parse_cmdline(payload.decode("latin-1"))  # must not raise


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
