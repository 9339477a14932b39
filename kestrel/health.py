"""The health actor: probe the workload's health endpoint and remember the verdict.

A failing check is reported (``/healthz`` -> ``workload.healthy``), never acted on
by halting the VM as upstream did; volantd decides what to do. Probes run every
0.5 s until the first success of each workload run, then every 5 s. ``run`` blocks:
it is the body of the health thread, which ``stop`` ends.
"""

from __future__ import annotations

import time

from kestrel.httpclient import HttpClientError, join_url, request
from kestrel.latch import Latch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kestrel.workload import Workload

__all__ = ["HealthMonitor", "join_url"]

FAST_INTERVAL = 0.5
SLOW_INTERVAL = 5.0
DEFAULT_PROBE_TIMEOUT = 2.0
MAX_PROBE_TIMEOUT = 5.0


class HealthMonitor:
    def __init__(
        self,
        workload: Workload,
        endpoint: str | None,
        timeout_ms: int | None,
        on_first_healthy: Callable[[], None] | None = None,
    ) -> None:
        self.workload = workload
        self.endpoint = endpoint or None
        seconds = (timeout_ms or 0) / 1000
        self.probe_timeout = (
            min(seconds, MAX_PROBE_TIMEOUT) if seconds > 0 else DEFAULT_PROBE_TIMEOUT
        )
        self.on_first_healthy = on_first_healthy
        self.healthy = False
        self.last_check: float | None = None
        self.last_error: str | None = None
        self.last_status: int | None = None
        self.checks = 0
        self._healthy_pid: int | None = None
        self._announced = False
        self._stopped = Latch()

    def stop(self) -> None:
        self._stopped.set()

    @property
    def current(self) -> bool:
        """Healthy *and* still the same run that passed the check."""
        return (
            self.healthy
            and self.workload.state == "running"
            and self.workload.pid is not None
            and self.workload.pid == self._healthy_pid
        )

    def status(self) -> dict[str, Any]:
        return {
            "healthy": self.current,
            "endpoint": self.endpoint,
            "last_check": self.last_check,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "checks": self.checks,
        }

    def _mark(self, healthy: bool) -> None:
        self.healthy = healthy
        if healthy and not self._announced:
            self._announced = True
            if self.on_first_healthy is not None:
                self.on_first_healthy()

    def probe_once(self) -> bool:
        assert self.endpoint is not None
        url = join_url(self.workload.spec.base_url, self.endpoint)
        self.checks += 1
        self.last_check = time.time()
        try:
            response = request("GET", url, timeout=self.probe_timeout)
        except HttpClientError as exc:
            self.last_status = None
            self.last_error = str(exc)
            return False
        self.last_status = response.status
        if 200 <= response.status < 300:
            self.last_error = None
            return True
        self.last_error = f"health endpoint answered {response.status}"
        return False

    def run(self) -> None:
        while not self._stopped.is_set():
            pid = self.workload.pid
            if self.workload.state != "running" or pid is None:
                self.healthy = False
                self._healthy_pid = None
                self._stopped.wait(FAST_INTERVAL / 2)
                continue
            if self.endpoint is None:
                # Nothing to probe: a running process is the best evidence there is.
                self._healthy_pid = pid
                self._mark(True)
                self._stopped.wait(FAST_INTERVAL / 2)
                continue
            if self._healthy_pid != pid:
                self.healthy = False
            ok = self.probe_once()
            if ok and self.workload.pid == pid:
                self._healthy_pid = pid
                self._mark(True)
            elif not ok:
                self.healthy = False
            self._sleep_while_same_run(SLOW_INTERVAL if self.healthy else FAST_INTERVAL, pid)

    def _sleep_while_same_run(self, seconds: float, pid: int) -> None:
        """Sleep, but wake early when the workload restarted so the new run is probed fast."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopped.wait(min(remaining, FAST_INTERVAL / 2)):
                return
            if self.workload.pid != pid:
                return
