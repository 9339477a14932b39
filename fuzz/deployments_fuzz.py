"""Fuzz the deployment request parsers (``parse_create_deployment``, ``parse_patch``).

Run: ``python fuzz/deployments_fuzz.py /tmp/scratch fuzz/corpus/deployments -max_total_time=60``.
Byte 0 picks the parser and how the body is made: 0 create / 1 patch from JSON
text, 2 create / 3 patch from ``fuzz.jsongen``. Only ``ValidationError`` may
escape; an accepted config must survive the TOML state file unchanged and turn
into create-VM bodies that parse under the API's own rules.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.jsongen import json_object
    from fuzz.properties import check_deployment_create, check_deployment_patch

#: FUZZ_TOLERATE_KNOWN=1 skips the reported null-inside-a-list bug so a run can look for others.
TOLERATE_KNOWN = os.environ.get("FUZZ_TOLERATE_KNOWN") == "1"


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 4
    body: Any
    if mode < 2:
        try:
            body = json.loads(data[1:].decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            return
    else:
        body = json_object(atheris.FuzzedDataProvider(data[1:]))
    if mode % 2 == 0:
        check_deployment_create(body, tolerate_known=TOLERATE_KNOWN)
    else:
        check_deployment_patch(body, tolerate_known=TOLERATE_KNOWN)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
