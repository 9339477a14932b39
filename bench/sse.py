"""SSE fan-out benchmark: N subscribers over real HTTP while events are published at a rate.

    .venv/bin/python bench/sse.py [--json] [--subscribers 100] [--rate 1000] [--seconds 5]

A server process (EventBus on a temporary directory + the API app on hypercorn,
exactly as volantd serves it) waits for every subscriber, publishes ``rate`` events
per second for ``seconds``, then a final ``BENCH_END`` event carrying the count.
This process runs the subscribers on raw sockets (cheap parsing, so the client
side does not dominate the two cores) and measures, per delivered event, the time
from ``publish()`` to arrival. Targets (issue 5): zero lost events, p99 delivery
latency <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, free_port, percentile, result

END_TYPE = "BENCH_END"


# -- server side (child process) ----------------------------------------------------------------

async def serve(port: int, subscribers: int, rate: int, seconds: float, state: Path) -> None:
    from volant.api.app import create_app
    from volant.api.context import ApiContext
    from volant.api.server import serve_api
    from volant.config import load_config
    from volant.gcpolicy import settle_heap
    from volant.orchestrator.events import EventBus

    cfg = load_config(environ={"VOLANT_API_LISTEN": f"127.0.0.1:{port}",
                               "VOLANT_STATE_DIR": str(state),
                               "VOLANT_LOG_LEVEL": "warning"})
    async with trio.open_nursery() as nursery:
        bus = EventBus(state / "events")
        await nursery.start(bus.run)
        app = create_app(ApiContext(config=cfg, version="bench", services={"events": bus}))
        await nursery.start(serve_api, app, cfg, trio.Event())
        if os.environ.get("BENCH_GC_DEFAULTS") != "1":
            settle_heap()  # as volantd does once its API listens
        print("ready", flush=True)
        with trio.fail_after(120):
            while bus.subscriber_count < subscribers:  # noqa: ASYNC110 (polling a count)
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        tick = 0.005
        per_tick = rate * tick
        published = 0
        started = time.perf_counter()
        total = int(seconds * rate)
        while published < total:
            elapsed = time.perf_counter() - started
            due = int(elapsed * rate) + 1
            while published < min(due, total):
                published += 1
                bus.publish("VM_LOG", f"vm{published % 50}", "running",
                            line=f"line {published}", t=time.time())
            await trio.sleep(tick if per_tick >= 1 else 1 / rate)
        bus.publish(END_TYPE, "bench", "", count=published)
        await trio.sleep_forever()  # the parent terminates us once its clients are done


# -- client side -------------------------------------------------------------------------------

class Subscriber:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.latencies: list[float] = []
        self.expected = -1
        self.overflowed = False

    def frame(self, frame: bytes, now: float) -> None:
        if frame.startswith(b"id: "):
            newline = frame.index(b"\n")
            self.ids.append(int(frame[4:newline]))
            if b"event: " + END_TYPE.encode() in frame:
                at = frame.index(b'"count":') + 8
                end = frame.index(b"}", at)
                self.expected = int(frame[at:end].split(b",")[0])
                return
            at = frame.find(b'"t":')
            if at >= 0:
                end = at + 4
                while frame[end:end + 1] not in (b",", b"}", b""):
                    end += 1
                self.latencies.append(now - float(frame[at + 4:end]))
        elif b"STREAM_OVERFLOW" in frame:
            self.overflowed = True


async def subscribe(port: int, sub: Subscriber, connected: trio.Semaphore) -> None:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    await sock.send(b"GET /api/v1/events/vms HTTP/1.0\r\nHost: bench\r\n\r\n")
    connected.release()
    buffer = b""
    headers_done = False
    try:
        while sub.expected < 0 and not sub.overflowed:
            chunk = await sock.recv(262144)
            if not chunk:
                break
            now = time.time()
            buffer += chunk
            if not headers_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                buffer = buffer.split(b"\r\n\r\n", 1)[1]
                headers_done = True
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                sub.frame(frame, now)
    finally:
        sock.close()


async def run_clients(port: int, count: int) -> list[Subscriber]:
    subs = [Subscriber() for _ in range(count)]
    connected = trio.Semaphore(count, max_value=count)
    async with trio.open_nursery() as nursery:
        for sub in subs:
            await connected.acquire()
            nursery.start_soon(subscribe, port, sub, connected)
    return subs


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (to show where the two cores went)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        trio.run(serve, args.serve, args.subscribers, args.rate, args.seconds, args.state)
        return

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="volant-bench-sse-") as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--state", tmp,
             "--subscribers", str(args.subscribers), "--rate", str(args.rate),
             "--seconds", str(args.seconds)],
            stdout=subprocess.PIPE, env={**os.environ, "VOLANT_LOG_LEVEL": "warning"},
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != b"ready":
                raise SystemExit("bench server did not start")
            client_cpu = time.process_time()
            subs = trio.run(run_clients, port, args.subscribers)
            client_cpu = time.process_time() - client_cpu
            server_cpu = _cpu_seconds(server.pid)
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()

    expected = max((s.expected for s in subs), default=0)
    lost = 0
    for sub in subs:
        got = {i for i in sub.ids}
        first = min(got) if got else 1
        data_ids = set(range(first, first + expected))  # contiguous ids, then the END event
        lost += len(data_ids - got) + (1 if sub.expected < 0 else 0)
    latencies = [lat for s in subs for lat in s.latencies]
    p99_ms = percentile(latencies, 99) * 1000
    p50_ms = percentile(latencies, 50) * 1000
    extra: dict[str, Any] = {"subscribers": args.subscribers, "rate": args.rate,
                             "seconds": args.seconds, "events": expected,
                             "deliveries": len(latencies),
                             "overflowed": sum(s.overflowed for s in subs),
                             "server_cpu_s": round(server_cpu, 2),
                             "client_cpu_s": round(client_cpu, 2)}
    rows = [
        result("sse_lost_events", "events", 0, lost, False, **extra),
        result("sse_delivery_p99", "ms", 50, p99_ms, False, p50_ms=round(p50_ms, 3)),
    ]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
