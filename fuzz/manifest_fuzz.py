"""Fuzz the manifest parser: any bytes, decoded as JSON, must give a Manifest or a 4xx error.

Run: ``mkdir -p /tmp/manifest-corpus && .venv/bin/python fuzz/manifest_fuzz.py
/tmp/manifest-corpus fuzz/corpus/manifest -max_total_time=60`` (libFuzzer writes
new inputs into the *first* directory, so keep the seeds second). Anything other than
``ValidationError`` escaping ``parse_manifest`` is a crash.
"""

from __future__ import annotations

import contextlib
import json
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from volant.errors import ValidationError
    from volant.manifest import encode_for_cmdline, manifest_to_dict, parse_manifest


def test_one_input(data: bytes) -> None:
    try:
        document = json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return
    try:
        manifest = parse_manifest(document)
    except ValidationError:
        return
    # Accepted manifests must round-trip and either encode or fail with a 4xx.
    if parse_manifest(manifest_to_dict(manifest)) != manifest:
        raise AssertionError("manifest_to_dict/parse_manifest round trip changed the manifest")
    with contextlib.suppress(ValidationError):
        encode_for_cmdline(manifest)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
