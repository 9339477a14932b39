"""Fuzz the manifest parser: any bytes, decoded as JSON, must give a Manifest or a 4xx error.

Run: ``mkdir -p /tmp/manifest-corpus && .venv/bin/python fuzz/manifest_fuzz.py
/tmp/manifest-corpus fuzz/corpus/manifest -max_total_time=60`` (libFuzzer writes
new inputs into the *first* directory, so keep the seeds second). Anything other than
``ValidationError`` escaping ``parse_manifest`` is a crash (see
``fuzz.properties.check_manifest_document``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.properties import check_manifest_document

#: FUZZ_TOLERATE_KNOWN=1 skips the reported file://[ urlsplit bug so a run can look for others.
TOLERATE_KNOWN = os.environ.get("FUZZ_TOLERATE_KNOWN") == "1"


def test_one_input(data: bytes) -> None:
    try:
        document = json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return
    check_manifest_document(document, tolerate_known=TOLERATE_KNOWN)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
