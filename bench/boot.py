"""Real QEMU boot through volantd vs the same QEMU command run bare (issue 3 target).

    .venv/bin/python bench/boot.py [--json] [--rounds 3]

Both paths boot the same kernel + busybox initramfs (its init prints ``VOLANT_BOOT_OK``)
with the same QEMU command line, inside one network namespace, alternating bare and
managed boots in one run. Bare: spawn QEMU, time until the marker is in its console
log. Managed: ``POST /api/v1/vms?wait=running`` until it returns (volantd reports running
only after the same marker). Target: managed / bare <= 1.10.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import emit, result  # noqa: E402

from tests.guest_media import build_boot_media  # noqa: E402
from volant.network import links  # noqa: E402
from volant.network.ipam import derive_mac  # noqa: E402
from volant.runtime.base import LaunchSpec  # noqa: E402
from volant.runtime.qemu import build_argv, detect_host  # noqa: E402

MARKER = b"VOLANT_BOOT_OK"
BRIDGE = "vbr-bench"


def wait_marker(path: Path, proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and MARKER in path.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError("qemu exited before the boot marker")
        time.sleep(0.01)
    raise TimeoutError("no boot marker")


def bare_boot(netns: str, kernel: Path, initramfs: Path, workdir: Path, index: int) -> float:
    run_dir = workdir / f"b{index}"
    run_dir.mkdir()
    tap = f"vtbench{index}"
    links.create_tap(tap, BRIDGE, "fe:00:00:00:00:aa", netns=netns)
    spec = LaunchSpec(name=f"bare{index}", instance_id="bench", cpu_cores=1, memory_mb=256,
                      kernel=kernel, initramfs=initramfs,
                      cmdline="console=ttyS0 reboot=t panic=1 quiet loglevel=1",
                      run_dir=run_dir, console_log=run_dir / "console.log", tap=tap,
                      mac=derive_mac(f"bare{index}", None), accel="auto")
    argv = build_argv(spec, detect_host())
    began = time.monotonic()
    with open(run_dir / "vmm.log", "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_marker(spec.console_log, proc)
        return time.monotonic() - began
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        links.delete_link(tap, netns)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    media = build_boot_media(MARKER.decode())
    netns = f"vbench-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="vb-"))
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    daemon: subprocess.Popen[bytes] | None = None
    bare: list[float] = []
    managed: list[float] = []
    try:
        links.ensure_bridge(BRIDGE, "10.79.0.1/24", netns=netns)
        sock = work / "api.sock"
        env = {**os.environ, "VOLANT_STATE_DIR": str(work / "state"),
               "VOLANT_RUNTIME_DIR": str(work / "run"), "VOLANT_API_UNIX_SOCKET": str(sock),
               "VOLANT_API_LISTEN": "127.0.0.1:7777", "VOLANT_HYPERVISOR": "qemu",
               "VOLANT_BRIDGE": BRIDGE, "VOLANT_SUBNET": "10.79.0.0/24",
               "VOLANT_HOST_IP": "10.79.0.1", "VOLANT_KERNEL_VMLINUX": str(media.kernel),
               "VOLANT_LOG_LEVEL": "warning"}
        with open(work / "volantd.log", "ab") as log:
            daemon = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m",
                                       "volant.daemon"], env=env, stdout=log, stderr=log)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                              base_url="http://volantd", timeout=300)
        for _ in range(600):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        digest = hashlib.sha256(media.initramfs.read_bytes()).hexdigest()
        client.post("/api/v1/plugins", json={
            "schema_version": "1", "name": "tiny", "version": "1", "runtime": "tiny",
            "initramfs": {"url": str(media.initramfs), "checksum": f"sha256:{digest}"},
            "resources": {"cpu_cores": 1, "memory_mb": 256}}).raise_for_status()
        for index in range(args.rounds):
            bare.append(bare_boot(netns, media.kernel, media.initramfs, work, index))
            began = time.monotonic()
            response = client.post("/api/v1/vms", params={"wait": "running", "timeout": "240"},
                                   json={"name": f"m{index}", "plugin": "tiny"})
            response.raise_for_status()
            managed.append(time.monotonic() - began)
            client.delete(f"/api/v1/vms/m{index}").raise_for_status()
        client.close()
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        subprocess.run(["ip", "netns", "pids", netns], check=False)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(work, ignore_errors=True)
    ratio = statistics.median(managed) / statistics.median(bare)
    rows: list[dict[str, Any]] = [
        result("QEMU boot to marker: through volantd / bare (median)", "x", 1.10, ratio, False,
               bare_s=[round(b, 3) for b in bare], managed_s=[round(m, 3) for m in managed]),
    ]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
