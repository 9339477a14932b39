"""Fuzz the guest codec: decode_manifest and parse_cmdline on arbitrary input.

Run: ``.venv/bin/python fuzz/codec_fuzz.py /tmp/scratch fuzz/corpus/codec -max_total_time=60``.
Byte 0 picks how the rest becomes the encoded text (0 raw, 1 base64url, 2-3
gzip+base64url); the rest, read as Latin-1, is also a kernel command line. The only
exception ``decode_manifest`` may raise is ``ManifestDecodeError``;
``parse_cmdline`` must never raise; encode/decode must round-trip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.properties import check_codec, codec_text


def test_one_input(data: bytes) -> None:
    if not data:
        return
    payload = data[1:]
    check_codec(codec_text(data[0] % 4, payload), payload.decode("latin-1"))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
