"""``volant-chaos`` entry point (the harness itself arrives with the resilience issue)."""

from __future__ import annotations

import sys


def main() -> None:
    print("volant-chaos: not available yet (arrives with the chaos-harness work)", file=sys.stderr)
    sys.exit(2)
