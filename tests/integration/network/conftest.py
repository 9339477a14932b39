"""Makes ``tests.netns`` importable (the repo root is not on sys.path under pytest's
default import mode) and provides its ``netns`` fixture to these tests."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.netns import netns  # noqa: E402, F401
