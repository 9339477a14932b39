"""Garbage-collector settings for a long-running, latency-sensitive service.

CPython's cyclic collector stops the world. With its defaults (a young collection
every 700 allocations, full collections over the whole heap) a full collection in
the SSE benchmark's server paused the event loop for 111 ms (measured with
``gc.callbacks``) — longer than the whole delivery-latency budget. Two standard
remedies, applied once the service is up:

- ``gc.freeze()`` moves everything alive at that point (imported modules, the
  supervision tree, recovered records) into a permanent generation the collector
  never scans again, so a full collection only walks what was allocated since;
- a larger young-generation threshold: far fewer, slightly larger young collections.

Reference cycles are still collected; only the cadence changes.
"""

from __future__ import annotations

import gc

#: Allocations (minus deallocations) between young collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000
#: Young collections per middle one, middle ones per full one (CPython's defaults: 10, 10).
OLDER_THRESHOLDS = (20, 20)

_settled = False


def settle_heap() -> bool:
    """Collect once, freeze the survivors and widen the thresholds (first call only)."""
    global _settled
    if _settled:
        return False
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    _settled = True
    return True
