"""VM control-plane benchmarks with the hollow VMM (issue 3 targets, 2-core machine).

    .venv/bin/python bench/vms.py [--json] [--vms 1000] [--adopt 500] [--crashes 50]

- creates through the API: >= 50 VMs/s sustained up to --vms VMs;
- GET /api/v1/vms p99 <= 50 ms with --vms VMs;
- VMM SIGKILL -> VM_CRASHED event on the SSE stream: p99 <= 50 ms;
- kill -9 of volantd with --adopt VMs -> API serving with all re-adopted: <= 3 s;
- volantd memory: <= 100 KiB RSS per additional VM.
The hollow VMM never runs a guest: these numbers are the control plane's alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Daemon, emit, percentile, result


def install_plugin(client: httpx.Client, base: Path) -> None:
    media = base / "media.img"
    media.write_bytes(b"hollow" * 100)
    digest = hashlib.sha256(media.read_bytes()).hexdigest()
    manifest = {
        "schema_version": "1", "name": "bench", "version": "1", "runtime": "bench",
        "initramfs": {"url": str(media), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 64},
        "workload": {"type": "http", "base_url": "http://127.0.0.1:80",
                     "entrypoint": ["/bin/true"]},
    }
    client.post("/api/v1/plugins", json=manifest).raise_for_status()


async def create_many(url: str, names: list[str], concurrency: int) -> float:
    """Create VMs with ``concurrency`` parallel clients; returns seconds taken."""
    queue = list(reversed(names))
    began = trio.current_time()

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            name = queue.pop()
            response = await client.post("/api/v1/vms", json={"name": name, "plugin": "bench"})
            if response.status_code != 201:
                raise RuntimeError(f"create {name}: {response.status_code} {response.text}")

    async with httpx.AsyncClient(base_url=url, timeout=60) as client, trio.open_nursery() as n:
        for _ in range(concurrency):
            n.start_soon(worker, client)
    return trio.current_time() - began


def wait_all_running(client: httpx.Client, count: int, timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        vms = client.get("/api/v1/vms", params={"status": "running"})
        if int(vms.headers["X-Total-Count"]) >= count:
            return time.monotonic() - began
        time.sleep(0.05)
    raise TimeoutError(f"not all {count} VMs running")


async def crash_latencies(url: str, vms: list[dict[str, Any]]) -> list[float]:
    """SIGKILL VMMs one at a time; time from the kill to VM_CRASHED on the SSE stream."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=None) as sse, sse.stream(
            "GET", "/api/v1/events/vms", params={"type": "VM_CRASHED"}) as stream:
        lines = stream.aiter_lines()
        for vm in vms:
            killed_at = time.monotonic()
            os.kill(vm["pid"], signal.SIGKILL)
            with trio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:") and json.loads(line[5:])["name"] == vm["name"]:
                        latencies.append(time.monotonic() - killed_at)
                        break
            await trio.sleep(0.05)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--adopt", type=int, default=500)
    parser.add_argument("--crashes", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="volant-bench-") as tmp:
        base = Path(tmp)
        daemon = Daemon(base)
        pids: list[int] = []
        try:
            daemon.start()
            rss_empty = daemon.rss_kib()
            client = httpx.Client(base_url=daemon.url, timeout=60)
            install_plugin(client, base)
            first = [f"vm-{i}" for i in range(args.adopt)]
            seconds = trio.run(create_many, daemon.url, first, args.concurrency)
            wait_all_running(client, args.adopt, 300)
            before = {v["name"]: v["pid"] for v in client.get("/api/v1/vms").json()}
            daemon.kill9()
            began = time.monotonic()
            daemon.start()
            wait_all_running(client, args.adopt, 120)
            readopt = time.monotonic() - began
            after = {v["name"]: v["pid"] for v in client.get("/api/v1/vms").json()}
            same = sum(after.get(n) == p for n, p in before.items())
            rows.append(result(f"kill -9 volantd, {args.adopt} VMs re-adopted", "s", 3.0,
                               readopt, False, same_pid=same))
            rest = [f"vm-{i}" for i in range(args.adopt, args.vms)]
            seconds += trio.run(create_many, daemon.url, rest, args.concurrency)
            rows.append(result(f"creates through the API up to {args.vms} VMs", "VMs/s",
                               50.0, args.vms / seconds, True))
            wait_all_running(client, args.vms, 300)
            samples = []
            for _ in range(200):
                t0 = time.monotonic()
                client.get("/api/v1/vms").raise_for_status()
                samples.append(time.monotonic() - t0)
            rows.append(result(f"GET /api/v1/vms p99 with {args.vms} VMs", "ms", 50.0,
                               percentile(samples, 99) * 1000, False))
            rss_full = daemon.rss_kib()
            rows.append(result(f"volantd RSS per VM at {args.vms} VMs", "KiB", 100.0,
                               (rss_full - rss_empty) / args.vms, False))
            running = client.get("/api/v1/vms", params={"status": "running"}).json()
            latencies = trio.run(crash_latencies, daemon.url, running[: args.crashes])
            rows.append(result("VMM SIGKILL -> VM_CRASHED event p99", "ms", 50.0,
                               percentile(latencies, 99) * 1000, False))
            pids = [v["pid"] for v in client.get("/api/v1/vms").json() if v.get("pid")]
            client.close()
        finally:
            daemon.stop()
            # Every VMM of this daemon, including ones restarted after the list was read.
            from volant.runtime import find_marked_processes, instance_id_for

            leftovers = [p.pid for p in find_marked_processes(instance_id_for(base / "state"))]
            for pid in {*pids, *leftovers}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    emit(rows, args.json)


if __name__ == "__main__":
    main()
