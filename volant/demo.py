"""``make demo``: boot the example "hello" VM through volantd, end to end.

    python -m volant.demo up      # kernel, image, daemon in a namespace, plugin, VM, answers
    python -m volant.demo down    # destroy the VM, stop the daemon, delete the namespace

Everything runs inside the network namespace ``volant-demo`` (its own bridge, NAT table
and guest network), so the host's interfaces are never touched. volantd inside it is
reached through a Unix socket, so commands on the host need no namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

NETNS = "volant-demo"
BASE = Path("/var/lib/volant-demo")
RUN = Path("/run/volant-demo")
SOCKET = RUN / "api.sock"
PIDFILE = RUN / "volantd.pid"
REPO = Path(__file__).resolve().parents[1]
FLEDGE = REPO / "conf" / "plugins" / "hello" / "fledge.toml"
VENV_BIN = Path(sys.executable).parent
VM = "hello"


def say(text: str) -> None:
    print(f"\033[1;34m==>\033[0m {text}", flush=True)


def fail(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, text=True, capture_output=True)


def client(timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(SOCKET)),
                        base_url="http://volantd", timeout=timeout)


def api(method: str, path: str, timeout: float = 30.0, **kwargs: Any) -> Any:
    with client(timeout) as http:
        response = http.request(method, path, **kwargs)
    if response.status_code >= 400:
        fail(f"{method} {path} -> {response.status_code}: {response.text.strip()}")
    return response.json() if response.content else None


def netns_exists() -> bool:
    return NETNS in run(["ip", "netns", "list"]).stdout.split()


def daemon_pid() -> int | None:
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def kernel() -> dict[str, str]:
    say("fetching the guest kernel (Debian linux-image-cloud-amd64, cached)")
    out = run([str(VENV_BIN / "volant-image"), "kernel", "--json"]).stdout
    info: dict[str, str] = json.loads(out)
    print(f"    kernel {info['version']}: {info['vmlinux']}")
    return info


def image() -> Path:
    say("building the hello image (busybox + python3 + kestrel + the workload, cached)")
    out = run([str(VENV_BIN / "volant-image"), "build", str(FLEDGE), "--output",
               str(BASE / "images")]).stdout
    manifest = Path(out.strip().splitlines()[-1])
    print(f"    manifest: {manifest}")
    return manifest


def start_daemon(vmlinux: str) -> None:
    if daemon_pid() is not None:
        say("volantd is already running in the demo namespace")
        return
    if not netns_exists():
        say(f"creating network namespace {NETNS}")
        run(["ip", "netns", "add", NETNS])
        run(["ip", "-n", NETNS, "link", "set", "lo", "up"])
    RUN.mkdir(parents=True, exist_ok=True)
    BASE.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "VOLANT_STATE_DIR": str(BASE / "state"),
        "VOLANT_RUNTIME_DIR": str(RUN),
        "VOLANT_API_LISTEN": "127.0.0.1:7777",
        "VOLANT_API_UNIX_SOCKET": str(SOCKET),
        "VOLANT_HYPERVISOR": "qemu",
        "VOLANT_KERNEL_VMLINUX": vmlinux,
        "VOLANT_LOG_FORMAT": "json",
    }
    say("starting volantd inside the namespace (QEMU microvm, accel auto)")
    with open(BASE / "volantd.log", "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, str(VENV_BIN / "volantd")],
            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"volantd exited ({proc.returncode}); see {BASE / 'volantd.log'}")
        try:
            with client(2.0) as http:
                if http.get("/healthz").status_code == 200:
                    PIDFILE.write_text(str(proc.pid))
                    print(f"    volantd pid {proc.pid}, API on {SOCKET}")
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    fail("volantd did not become healthy within 60 s")


def boot(manifest: Path) -> None:
    say("installing the hello plugin")
    api("POST", "/api/v1/plugins", json=json.loads(manifest.read_text()))
    existing = [vm["name"] for vm in api("GET", "/api/v1/vms")]
    if VM not in existing:
        say("creating the VM and waiting until it is running (TCG emulation: ~10-30 s)")
        started = time.monotonic()
        view = api("POST", "/api/v1/vms", params={"wait": "running", "timeout": "300"},
                   timeout=330, json={"name": VM, "plugin": "hello"})
        print(f"    {VM}: {view['status']} at {view['ip_address']} (pid {view['pid']}), "
              f"{time.monotonic() - started:.1f} s")
    else:
        api("GET", f"/api/v1/vms/{VM}/wait", params={"state": "running", "timeout": "300"},
            timeout=330)


def show() -> None:
    say("waiting for the workload to report healthy through the agent")
    health: dict[str, Any] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with client() as http:
            response = http.get(f"/api/v1/vms/{VM}/agent/healthz")
        if response.status_code == 200:
            health = response.json()
            if (health.get("workload") or {}).get("healthy"):
                break
        time.sleep(1)
    print(json.dumps(health, indent=2))
    say("calling the plugin's 'greet' action through volantd")
    print(json.dumps(api("POST", f"/api/v1/vms/{VM}/actions/hello/greet",
                         json={"name": "volant"}), indent=2))
    say("last lines of the workload's log")
    for entry in api("GET", f"/api/v1/vms/{VM}/agent/v1/logs", params={"tail": "5"}):
        print(f"    [{entry.get('stream')}] {entry.get('line')}")
    say("talk to it")
    print(f"    {VENV_BIN / 'volar'} --api unix://{SOCKET} vms list")
    print(f"    curl --unix-socket {SOCKET} http://volantd/api/v1/vms/{VM}")
    print(f"    curl -N --unix-socket {SOCKET} http://volantd/api/v1/events/vms")
    print("    make demo-down    # stop the VM, the daemon and the namespace")


def up() -> None:
    if os.geteuid() != 0:
        fail("the demo needs root (network namespace, bridge, taps)")
    info = kernel()
    manifest = image()
    start_daemon(info["vmlinux"])
    boot(manifest)
    show()


def down() -> None:
    if daemon_pid() is not None:
        say("destroying the demo VMs")
        try:
            with client(120.0) as http:
                for vm in http.get("/api/v1/vms").json():
                    http.delete(f"/api/v1/vms/{vm['name']}")
        except httpx.HTTPError as exc:
            print(f"    (API unreachable: {exc})")
        pid = daemon_pid()
        if pid is not None:
            say(f"stopping volantd (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if daemon_pid() is None:
                    break
                time.sleep(0.1)
    if netns_exists():
        # Anything still running in the namespace was started by the demo.
        leftovers = run(["ip", "netns", "pids", NETNS], check=False).stdout.split()
        for leftover in leftovers:
            os.kill(int(leftover), signal.SIGKILL)
        say(f"deleting network namespace {NETNS}")
        run(["ip", "netns", "del", NETNS])
    PIDFILE.unlink(missing_ok=True)
    shutil.rmtree(RUN, ignore_errors=True)
    say("demo stopped (state kept in /var/lib/volant-demo; remove it to start afresh)")


def main() -> None:
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    if action == "up":
        up()
    elif action == "down":
        down()
    else:
        fail("usage: python -m volant.demo up|down")


if __name__ == "__main__":
    main()
