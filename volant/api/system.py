"""System routes: liveness, daemon facts, host usage and the dashboard summary.

``/api/v1/system/status`` and ``/summary`` read the daemon through optional
callables in ``ctx.services`` so this module depends on no actor:

- ``vm_counts() -> dict[status, int]``
- ``vm_summary() -> {"total_vms", "by_status", "by_runtime"}``
- ``plugin_summary() -> {"total_plugins", "enabled_plugins",
  "plugins": [{name, version, enabled}]}``

Each may also be an ``async`` callable. Absent ones yield zeros / empty shapes.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
from quart import Blueprint, Response, current_app, jsonify

from volant.api import spec
from volant.api.context import ApiContext

blueprint = Blueprint("system", __name__)


def _ctx() -> ApiContext:
    ctx: ApiContext = current_app.config["VOLANT_CONTEXT"]
    return ctx


@blueprint.get("/healthz")
@spec.api_doc(summary="Health check", description="Needs no API key.", tags=["health"],
              operation_id="getHealth", public=True, responses={200: spec.HEALTH})
async def healthz() -> Response:
    """Liveness: 200 as long as the event loop answers (upstream: ``{"status":"ok"}``)."""
    ctx = _ctx()
    return jsonify(
        {"status": "ok", "version": ctx.version, "uptime_seconds": round(ctx.uptime_seconds, 3)}
    )


@blueprint.get("/api/v1/system/info")
@spec.api_doc(summary="Get system information", tags=["system"], operation_id="getSystemInfo",
              responses={200: spec.SYSTEM_INFO})
async def system_info() -> Response:
    ctx = _ctx()
    cfg = ctx.config
    advertise = f"{cfg.advertise_host}:{cfg.advertise_port}"
    return jsonify(
        {
            "status": "ok",
            "api_listen_addr": cfg.api_listen,
            "api_advertise_addr": advertise,
            "host_ip": cfg.host_ip,
            "version": ctx.version,
            "bridge": cfg.bridge,
            "subnet": cfg.subnet,
            "hypervisor": cfg.hypervisor,
        }
    )


# -- host usage ---------------------------------------------------------------------------


@attrs.define
class CpuSample:
    busy: int
    total: int
    at: float


class HostUsage:
    """CPU % from the delta between two ``/proc/stat`` samples; memory % from ``/proc/meminfo``.

    The previous sample is kept between calls, so a status request reports the CPU
    use since the last one (at least ``MIN_WINDOW`` apart: a first call waits that
    long for its second sample).
    """

    MIN_WINDOW = 0.1

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._last: CpuSample | None = None
        self._percent = 0.0

    def _cpu_sample(self) -> CpuSample:
        with open(self.proc / "stat", encoding="ascii") as fh:
            fields = fh.readline().split()
        if not fields or fields[0] != "cpu":
            raise ValueError("unexpected /proc/stat format")
        values = [int(v) for v in fields[1:]]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        return CpuSample(busy=total - idle, total=total, at=time.monotonic())

    async def cpu_percent(self) -> float:
        now = self._cpu_sample()
        previous = self._last
        if previous is None:
            await trio.sleep(self.MIN_WINDOW)
            previous, now = now, self._cpu_sample()
        elif now.at - previous.at < self.MIN_WINDOW:
            return self._percent  # too soon for a meaningful delta: repeat the last answer
        self._last = now
        delta_total = now.total - previous.total
        if delta_total > 0:
            self._percent = round(100.0 * (now.busy - previous.busy) / delta_total, 2)
        return self._percent

    def mem_percent(self) -> float:
        info: dict[str, int] = {}
        with open(self.proc / "meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    info[key] = int(parts[0])
        total = info.get("MemTotal", 0)
        if total <= 0:
            return 0.0
        available = info.get("MemAvailable", info.get("MemFree", 0))
        return round(100.0 * (total - available) / total, 2)


def _host_usage() -> HostUsage:
    usage = current_app.extensions.get("volant_host_usage")
    if usage is None:
        usage = current_app.extensions["volant_host_usage"] = HostUsage()
    return usage


async def _optional(name: str) -> Any:
    """Call ``ctx.services[name]`` (sync or async) if the daemon provided it."""
    provider: Callable[[], Any] | None = _ctx().services.get(name)
    if provider is None:
        return None
    result = provider()
    if inspect.isawaitable(result):
        result = await result
    return result


@blueprint.get("/api/v1/system/status")
@spec.api_doc(summary="System status summary", tags=["status"], operation_id="getSystemStatus",
              responses={200: spec.SYSTEM_STATUS})
async def system_status() -> Response:
    counts: dict[str, int] = await _optional("vm_counts") or {}
    usage = _host_usage()
    return jsonify(
        {
            "vm_count": int(sum(counts.values())),
            "cpu_percent": float(await usage.cpu_percent()),
            "mem_percent": float(usage.mem_percent()),
            "vms_by_status": {str(k).lower(): int(v) for k, v in counts.items()},
        }
    )


@blueprint.get("/api/v1/system/summary")
@spec.api_doc(summary="System summary for dashboards", tags=["status"],
              operation_id="getSystemSummary", responses={200: spec.SYSTEM_SUMMARY})
async def system_summary() -> Response:
    vms: dict[str, Any] = await _optional("vm_summary") or {}
    plugins: dict[str, Any] = await _optional("plugin_summary") or {}
    plugin_list = [
        {"name": str(p.get("name", "")), "version": str(p.get("version", "")),
         "enabled": bool(p.get("enabled", False))}
        for p in plugins.get("plugins", [])
    ]
    return jsonify(
        {
            "total_vms": int(vms.get("total_vms", 0)),
            "by_status": {str(k).lower(): int(v) for k, v in vms.get("by_status", {}).items()},
            "by_runtime": {str(k).lower(): int(v) for k, v in vms.get("by_runtime", {}).items()},
            "total_plugins": int(plugins.get("total_plugins", len(plugin_list))),
            "enabled_plugins": int(
                plugins.get("enabled_plugins", sum(1 for p in plugin_list if p["enabled"]))
            ),
            "plugins": plugin_list,
        }
    )
