"""Fuzz the CLI's SSE parser (``volant.cli.sse``) and its event decoding.

Run: ``python fuzz/sse_fuzz.py /tmp/scratch fuzz/corpus/sse -max_total_time=60``.
Byte 0 picks the mode. 0: bytes 1-3 are cut points, the rest is a stream; the
parser must never raise and must give the same events however the stream is
split. 1: the rest drives a list of ``Event`` objects that volantd serialises
with ``sse_frame``; the parser must give them back unchanged.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.jsongen import json_object
    from fuzz.properties import check_sse_server_frames, check_sse_stream
    from volant.orchestrator.events import Event

_LINE_BREAKS = re.compile(r"[\r\n]")


def _events(fdp: atheris.FuzzedDataProvider) -> list[Event]:
    events: list[Event] = []
    seq = fdp.ConsumeIntInRange(0, 1 << 40)
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        # Types are server constants (VM_CRASHED...): never empty, never a line break.
        kind = _LINE_BREAKS.sub("", fdp.ConsumeUnicodeNoSurrogates(12)) or "VM_RUNNING"
        extra = {f"x_{key}": value for key, value in json_object(fdp).items()}
        events.append(Event(seq=seq, type=kind, name=fdp.ConsumeUnicodeNoSurrogates(20),
                            message=fdp.ConsumeUnicodeNoSurrogates(30) or None, extra=extra))
        seq += fdp.ConsumeIntInRange(1, 3)
    return events


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        check_sse_stream(data[4:].decode("utf-8", errors="replace"), list(data[1:4]))
        return
    fdp = atheris.FuzzedDataProvider(data[1:])
    events = _events(fdp)
    overflow = fdp.ConsumeIntInRange(0, 1 << 40) if fdp.ConsumeBool() else None
    check_sse_server_frames(events, overflow)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
