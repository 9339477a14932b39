"""Fuzz kestrel's boot-time parsing: the ``ip=`` parameter and the agent settings.

Run: ``python fuzz/kestrel_fuzz.py /tmp/scratch fuzz/corpus/kestrel -max_total_time=60``.
Byte 0 picks the target: 0 ``parse_ip_param`` on the rest (may raise only
``IpConfigError``); 1 ``load_config`` with the rest split on ``\\x1e`` into
command line, ``KESTREL_LISTEN`` and the numeric settings (may raise only
``ConfigError``), then the command line's ``ip=`` as the agent parses it at boot.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.properties import check_ip_param, check_kestrel_cmdline

SEPARATOR = "\x1e"
#: FUZZ_TOLERATE_KNOWN=1 skips the reported netmask int() bug so a run can look for others.
TOLERATE_KNOWN = os.environ.get("FUZZ_TOLERATE_KNOWN") == "1"


def test_one_input(data: bytes) -> None:
    if not data:
        return
    text = data[1:].decode("utf-8", errors="replace")
    if data[0] % 2 == 0:
        check_ip_param(text, tolerate_known=TOLERATE_KNOWN)
        return
    cmdline, _, rest = text.partition(SEPARATOR)
    listen, _, numbers = rest.partition(SEPARATOR)
    check_kestrel_cmdline(cmdline, listen, numbers.split(SEPARATOR) if numbers else [],
                          tolerate_known=TOLERATE_KNOWN)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
