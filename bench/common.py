"""Shared pieces of the benchmarks: result rows, output, a volantd subprocess."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

RATIO_CAP = 1000.0


def result(name: str, unit: str, target: float, measured: float, higher: bool,
           **extra: Any) -> dict[str, Any]:
    """One benchmark row; ``ratio`` >= 1 means the target is met."""
    if higher:
        ratio = measured / target if target else RATIO_CAP
    else:
        ratio = RATIO_CAP if measured <= target / RATIO_CAP else target / measured
    return {"name": name, "unit": unit, "target": target, "measured": round(measured, 6),
            "ratio": round(ratio, 3), "higher_is_better": higher, **extra}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


def emit(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"machine": machine(), "benchmarks": rows}, indent=2))
        return
    print(f"{'metric':48} {'target':>10} {'measured':>12} {'ratio':>7}")
    for row in rows:
        cmp = ">=" if row["higher_is_better"] else "<="
        print(f"{row['name']:48} {cmp}{row['target']:>8g} {row['measured']:>12.4g} "
              f"{row['ratio']:>7.2f}  {row['unit']}")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    """volantd with the hollow VMM in a private state directory."""

    def __init__(self, base: Path, **env: str) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "VOLANT_API_LISTEN": f"127.0.0.1:{self.port}",
                    "VOLANT_STATE_DIR": str(base / "state"),
                    "VOLANT_RUNTIME_DIR": str(base / "run"),
                    "VOLANT_HYPERVISOR": "hollow", "VOLANT_MANAGE_NETWORK": "false",
                    "VOLANT_LOG_LEVEL": "warning", "VOLANT_SUBNET": "10.200.0.0/16",
                    "VOLANT_HOST_IP": "10.200.0.1", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for /healthz; returns the seconds it took."""
        began = time.monotonic()
        log = open(self.base / "volantd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "volant.daemon"], env=self.env,
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        while time.monotonic() - began < timeout:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise TimeoutError("volantd did not start")

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
