"""Guest-side benchmarks with the real hello image under TCG (issue 6 targets).

    .venv/bin/python bench/kestrel.py [--json] [--boots 3]

Boots the hello VM through volantd (QEMU, in a private network namespace) several times
and reads kestrel's boot timeline from the console log (guest uptime seconds):
- PID 1 start -> agent API up: target <= 2.5 s ("init" is when the kernel hands over to
  /init; "api" when kestrel's HTTP server listens);
- kernel start -> workload healthy (no target; reported);
- the initramfs size: target <= 30 MB compressed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import emit, result  # noqa: E402

VOLANT_IMAGE = str(Path(sys.executable).parent / "volant-image")
TIMELINE = re.compile(r"kestrel: timeline (.*)")


def timeline(console: str) -> dict[str, float]:
    found = TIMELINE.findall(console)
    if not found:
        raise RuntimeError("no kestrel timeline on the console")
    return {k: float(v) for k, v in (item.split("=") for item in found[-1].split())}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--boots", type=int, default=3)
    args = parser.parse_args()
    kernel = json.loads(subprocess.run([VOLANT_IMAGE, "kernel", "--json"], check=True,
                                       capture_output=True, text=True).stdout)
    work = Path(tempfile.mkdtemp(prefix="vk-"))
    built = subprocess.run([VOLANT_IMAGE, "build", str(ROOT / "conf/plugins/hello/fledge.toml"),
                            "--output", str(work / "img")], check=True, capture_output=True,
                           text=True)
    manifest = json.loads(Path(built.stdout.strip().splitlines()[-1]).read_text())
    image_mb = Path(manifest["initramfs"]["url"]).stat().st_size / 1e6
    netns = f"vkbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    sock = work / "api.sock"
    env = {**os.environ, "VOLANT_STATE_DIR": str(work / "state"),
           "VOLANT_RUNTIME_DIR": str(work / "run"), "VOLANT_API_UNIX_SOCKET": str(sock),
           "VOLANT_HYPERVISOR": "qemu", "VOLANT_BRIDGE": "vbr-kb",
           "VOLANT_SUBNET": "10.81.0.0/24", "VOLANT_HOST_IP": "10.81.0.1",
           "VOLANT_KERNEL_VMLINUX": kernel["vmlinux"], "VOLANT_LOG_LEVEL": "warning"}
    daemon = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m",
                               "volant.daemon"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    lines: list[dict[str, float]] = []
    try:
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                              base_url="http://volantd", timeout=330)
        for _ in range(600):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client.post("/api/v1/plugins", json=manifest).raise_for_status()
        for index in range(args.boots):
            name = f"k{index}"
            vm = client.post("/api/v1/vms", params={"wait": "running", "timeout": "300"},
                             json={"name": name, "plugin": "hello"})
            vm.raise_for_status()
            console = Path(vm.json()["console_log"])
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                text = console.read_text(errors="replace")
                if "workload_healthy=" in text:
                    break
                time.sleep(0.5)
            lines.append(timeline(console.read_text(errors="replace")))
            client.delete(f"/api/v1/vms/{name}").raise_for_status()
        client.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(work, ignore_errors=True)
    api_after_init = statistics.median(t["api"] - t["init"] for t in lines)
    healthy = statistics.median(t["workload_healthy"] - t["kernel"] for t in lines
                                if "workload_healthy" in t)
    python_start = statistics.median(t["kestrel"] - t["init"] for t in lines)
    rows: list[dict[str, Any]] = [
        result("PID 1 start -> agent API up (TCG, median)", "s", 2.5, api_after_init, False,
               python_start_s=round(python_start, 2), timelines=lines),
        result("kernel start -> workload healthy (TCG, median)", "s", 30.0, healthy, False),
        result("hello initramfs size (gzip)", "MB", 30.0, image_mb, False),
    ]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
