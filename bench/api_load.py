"""API under 200 concurrent clients (issue 5 target): no 5xx, p99 <= 200 ms.

    .venv/bin/python bench/api_load.py [--json] [--clients 200] [--seconds 10] [--vms 50]

A volantd with the hollow VMM and --vms VMs; --clients concurrent HTTP/1.1 clients (each
its own connection, on loopback) loop over a read-heavy mix: GET /api/v1/vms, GET
/api/v1/vms/{name}, GET /api/v1/system/summary, GET /healthz. Reports requests/s, the
p50/p99 latency seen by the clients and the count of 5xx answers. Client and server share
the machine's two cores, so the latency includes the client's own scheduling.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Daemon, emit, percentile, result
from vms import create_many, install_plugin, wait_all_running


async def load(url: str, names: list[str], clients: int, seconds: float
               ) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    errors = 0
    count = 0
    deadline = trio.current_time() + seconds
    rng = random.Random(7)

    async def client_loop() -> None:
        nonlocal errors, count
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            while trio.current_time() < deadline:
                roll = rng.random()
                if roll < 0.4:
                    path = "/api/v1/vms"
                elif roll < 0.8:
                    path = f"/api/v1/vms/{rng.choice(names)}"
                elif roll < 0.9:
                    path = "/api/v1/system/summary"
                else:
                    path = "/healthz"
                started = time.monotonic()
                response = await client.get(path)
                latencies.append(time.monotonic() - started)
                count += 1
                if response.status_code >= 500:
                    errors += 1

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client_loop)
    return latencies, errors, count


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--vms", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="volant-load-") as tmp:
        daemon = Daemon(Path(tmp))
        try:
            daemon.start()
            with httpx.Client(base_url=daemon.url, timeout=60) as client:
                install_plugin(client, Path(tmp))
                names = [f"vm-{i}" for i in range(args.vms)]
                trio.run(create_many, daemon.url, names, 8)
                wait_all_running(client, args.vms, 120)
            latencies, errors, count = trio.run(load, daemon.url, names, args.clients,
                                                args.seconds)
        finally:
            daemon.stop()
            import os
            import signal

            from volant.runtime import find_marked_processes, instance_id_for

            for proc in find_marked_processes(instance_id_for(Path(tmp) / "state")):
                os.kill(proc.pid, signal.SIGKILL)
    rows: list[dict[str, Any]] = [
        result(f"API p99 latency, {args.clients} concurrent clients", "ms", 200.0,
               percentile(latencies, 99) * 1000, False,
               p50_ms=round(percentile(latencies, 50) * 1000, 1),
               requests_per_s=round(count / args.seconds, 1)),
        result(f"API 5xx answers under {args.clients} concurrent clients", "count", 0.0,
               float(errors), False),
    ]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
