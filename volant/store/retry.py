"""Writing a fact that must not be lost to a full or failing disk.

A request may be refused when its state cannot be written (the caller gets 507 and
nothing changed). A *fact* cannot be refused: a VMM that exited has exited, whether or
not the disk has room to say so. Dropping the write would drop the fact with it (the
actor would never restart the VM; found by volant-chaos: a crash report handled while
the state filesystem was full was lost, and the VM showed ``running`` for good). So
facts are written with :func:`write_until_stored`, which waits for the disk instead.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from volant.logging import get_logger
from volant.store.errors import StoreFullError, StoreWriteError

log = get_logger("volant.store")

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
#: How often a write that keeps failing is logged again (the first failure always is).
LOG_EVERY = 30.0


async def write_until_stored(write: Callable[[], None], *, what: str) -> None:
    """Run ``write`` in a worker thread until it succeeds.

    Only the store's "cannot persist" errors (disk full, I/O error, read-only) are
    retried, with a backoff from 50 ms to 2 s; anything else (a bug, an encoding
    error) is raised at once. Cancellation ends the wait as usual.
    """
    delay = FIRST_DELAY
    failing_since: float | None = None
    last_logged = 0.0
    while True:
        try:
            await trio.to_thread.run_sync(write)
        except (StoreFullError, StoreWriteError) as exc:
            now = trio.current_time()
            if failing_since is None or now - last_logged >= LOG_EVERY:
                log.warning("state write failed; retrying until it lands", what=what,
                            error=str(exc),
                            failing_for=round(now - failing_since, 1) if failing_since else 0.0)
                last_logged = now
            if failing_since is None:
                failing_since = now
            await trio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if failing_since is not None:
            log.info("state write landed after failures", what=what,
                     failed_for=round(trio.current_time() - failing_since, 1))
        return
