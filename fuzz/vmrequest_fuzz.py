"""Fuzz the create-VM request parser (``volant.orchestrator.vmrequest``).

Run: ``python fuzz/vmrequest_fuzz.py /tmp/scratch fuzz/corpus/vmrequest -max_total_time=60``.
Byte 0 picks how the body is made: 0 the rest is JSON text (as the API receives
it), 1 the rest drives ``fuzz.jsongen`` (known field names, values near the
limits). ``parse_create`` and ``resolve`` may raise only ``ValidationError`` or
``UnprocessableError``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.jsongen import json_object
    from fuzz.properties import check_create_request


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        try:
            body = json.loads(data[1:].decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            return
    else:
        body = json_object(atheris.FuzzedDataProvider(data[1:]))
    check_create_request(body)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
