"""Fuzz snapshot loading: ``SnapshotCodec.decode`` (JSON and TOML) and ``StateStore.load_all``.

Run: ``python fuzz/snapshot_fuzz.py /tmp/scratch fuzz/corpus/snapshot -max_total_time=60``.
Input layout: byte 0 picks the target (0 JSON decode, 1 TOML decode, 2 ``load_all``);
for ``load_all`` byte 1 picks the file name (``LOAD_ALL_NAMES``); the rest is the
file content. Only ``SnapshotError``/``StoreReadError`` may escape ``decode``;
``load_all`` must never raise and must report the file exactly once.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["volant", "kestrel", "fuzz"]):
    from fuzz.properties import LOAD_ALL_NAMES, check_load_all, check_snapshot_decode
    from volant.logging import configure_logging

STATE_DIR = Path(tempfile.mkdtemp(prefix="snapshot-fuzz-"))
atexit.register(shutil.rmtree, STATE_DIR, ignore_errors=True)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 3
    if mode == 0:
        check_snapshot_decode(data[1:], "json")
    elif mode == 1:
        check_snapshot_decode(data[1:], "toml")
    elif len(data) >= 2:
        check_load_all(STATE_DIR, LOAD_ALL_NAMES[data[1] % len(LOAD_ALL_NAMES)], data[2:])


def main() -> None:
    configure_logging("critical")  # quarantine warnings would flood the fuzzer's output
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
