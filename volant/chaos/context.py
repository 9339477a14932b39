"""State shared by the faults and the invariants of one run.

Every API call the harness makes goes through :meth:`ChaosContext.api`, which records
the status code: a 5xx is a violation unless the run is in a window where it is the
designed answer (volantd down, the state filesystem deliberately full, back-pressure
503 with ``Retry-After``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from volant.chaos.report import Report
from volant.chaos.target import Target

if TYPE_CHECKING:
    from volant.chaos.qemu_vm import QemuVM

PLUGIN = "chaos"
STEADY_DEPLOYMENT = "steady"
CRASHLOOP_DEPLOYMENT = "crashloop"


@attrs.define
class ChaosContext:
    target: Target
    report: Report
    rng: random.Random
    #: True from the moment we kill volantd until it answers /healthz again.
    daemon_down: bool = False
    #: True while the disk-full fault holds the state tmpfs full (507 is the designed answer).
    disk_full: bool = False
    #: Names of the standalone VMs the harness keeps alive (recreated if quarantined away).
    vm_names: list[str] = attrs.field(factory=list)
    #: Deployments the harness created: name -> create body (re-created if quarantined away).
    deployments: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    plugin_manifest: dict[str, Any] = attrs.field(factory=dict)
    #: State files the harness corrupted while volantd was down, awaiting quarantine.
    corrupted: list[str] = attrs.field(factory=list)
    #: The real QEMU VM (``--qemu-vm``), if the run has one.
    qemu: QemuVM | None = None

    def status_allowed(self, response: httpx.Response, designed: tuple[int, ...] = ()) -> bool:
        code = response.status_code
        if code < 500 or code in designed:
            return True
        if self.daemon_down:
            return True
        if code == 507 and self.disk_full:
            return True
        return code == 503 and "retry-after" in response.headers

    def record(self, method: str, path: str, response: httpx.Response,
               designed: tuple[int, ...] = ()) -> None:
        self.report.http_status[str(response.status_code)] += 1
        if not self.status_allowed(response, designed):
            self.report.violation(
                "no_api_5xx",
                f"{method} {path} -> {response.status_code}: {response.text[:300]}")

    async def api(self, method: str, path: str, *, timeout: float = 30.0,
                  designed: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response | None:
        """One recorded API call; None when volantd could not be reached.

        ``designed``: 5xx codes that are this route's designed answer here (e.g. 502 from
        the agent proxy while the guest boots), so not a ``no_api_5xx`` violation.
        """
        try:
            async with self.target.client(timeout=timeout) as client:
                response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.report.http_status[type(exc).__name__] += 1
            return None
        self.record(method, path, response, designed)
        return response

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        response = await self.api("GET", path, **kwargs)
        if response is None or response.status_code != 200:
            return None
        return response.json()

    async def wait_healthy(self, timeout: float = 45.0) -> bool:
        ok = await trio.to_thread.run_sync(self.target.wait_healthy, timeout)
        if ok:
            self.daemon_down = False
        return ok
