"""The volantd under test: one the harness starts itself (``own``) or one at a URL.

``OwnTarget`` builds a small world and tears all of it down again: a network namespace
(``vchaos-<hex>``) holding volantd's bridge and taps, a tmpfs mounted as the state
directory (so the disk-full fault fills a few MiB, not the host's disk), and a volantd
with the hollow VMM reached over a Unix socket (with ``use_qemu``: hollow plus QEMU for
one VM, see ``mixed_volantd``). Everything it starts is recorded by PID and ended by PID;
VMMs (QEMU too) are found by this instance's ``VOLANT_VMM`` marker.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from volant.runtime.base import find_marked_processes, instance_id_for

DEFAULT_VOLANTD = [sys.executable, "-m", "volant.daemon"]
NETNS_PREFIX = "vchaos-"
BRIDGE = "vbr-chaos"
SUBNET = "10.213.0.0/24"
HOST_IP = "10.213.0.1"
TMPFS_SIZE = "48m"


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Target:
    """What every target offers: an HTTP client and, for some, process control."""

    #: Whether the harness may kill/restart volantd and touch its host-side resources.
    controllable = False
    netns: str | None = None
    bridge: str | None = None
    subnet: str | None = None
    host_ip: str | None = None
    state_dir: Path | None = None
    instance_id: str | None = None

    def client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        raise NotImplementedError

    def sync_client(self, timeout: float = 10.0) -> httpx.Client:
        raise NotImplementedError

    def healthy(self) -> bool:
        try:
            with self.sync_client(timeout=1.0) as client:
                return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            time.sleep(0.05)
        return False

    def describe(self) -> dict[str, Any]:
        """Where this target lives, for the report."""
        return {}

    def start(self) -> None:
        """Bring the target up (a URL target only checks it answers)."""

    def teardown(self) -> list[str]:
        """Release everything; return a list of what could not be cleaned."""
        return []


class UrlTarget(Target):
    """A volantd someone else runs: the harness only talks to its API."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"X-Volant-API-Key": api_key} if api_key else {}

    def client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=self.headers)

    def sync_client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url}

    def start(self) -> None:
        if not self.wait_healthy(10.0):
            raise RuntimeError(f"no volantd answering at {self.url}")


class OwnTarget(Target):
    """A volantd (hollow VMM) in a namespace and on a tmpfs that the harness made."""

    controllable = True
    netns: str
    state_dir: Path

    def __init__(self, volantd_cmd: list[str] | None = None,
                 extra_env: dict[str, str] | None = None,
                 keep_dir: Path | None = None) -> None:
        self.volantd_cmd = list(volantd_cmd or DEFAULT_VOLANTD)
        self.base_dir = Path(tempfile.mkdtemp(prefix="volant-chaos-", dir=keep_dir))
        self.state_dir = self.base_dir / "state"
        self.run_dir = self.base_dir / "run"
        self.socket_path = self.base_dir / "api.sock"
        self.log_path = self.base_dir / "volantd.log"
        self.netns = f"{NETNS_PREFIX}{secrets.token_hex(4)}"
        self.bridge, self.subnet, self.host_ip = BRIDGE, SUBNET, HOST_IP
        self.instance_id = instance_id_for(self.state_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.mounted = False
        self.netns_made = False
        self.env = {
            **os.environ,
            "VOLANT_API_LISTEN": "127.0.0.1:7777",  # the namespace's own loopback
            "VOLANT_API_UNIX_SOCKET": str(self.socket_path),
            "VOLANT_STATE_DIR": str(self.state_dir),
            "VOLANT_RUNTIME_DIR": str(self.run_dir),
            "VOLANT_HYPERVISOR": "hollow",
            "VOLANT_MANAGE_NETWORK": "true",
            "VOLANT_BRIDGE": BRIDGE,
            "VOLANT_SUBNET": SUBNET,
            "VOLANT_HOST_IP": HOST_IP,
            "VOLANT_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        self.env.pop("VOLANT_API_KEY", None)
        self.env.pop("VOLANT_CONFIG", None)
        self.qemu_vm: str | None = None

    def use_qemu(self, vm_name: str, vmlinux: Path) -> None:
        """Run ``vm_name`` on real QEMU (TCG unless KVM is usable), every other VM hollow."""
        self.qemu_vm = vm_name
        self.volantd_cmd = [sys.executable, "-m", "volant.chaos.mixed_volantd",
                            "--qemu-vm", vm_name]
        self.env.update({"VOLANT_HYPERVISOR": "qemu", "VOLANT_KERNEL_VMLINUX": str(vmlinux)})

    # -- HTTP -------------------------------------------------------------------------------
    def client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
        return httpx.AsyncClient(base_url="http://volantd", transport=transport, timeout=timeout)

    def sync_client(self, timeout: float = 10.0) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket_path))
        return httpx.Client(base_url="http://volantd", transport=transport, timeout=timeout)

    # -- world ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"netns": self.netns, "bridge": self.bridge, "subnet": self.subnet,
                "base_dir": str(self.base_dir), "state_dir": str(self.state_dir),
                "socket": str(self.socket_path), "instance_id": self.instance_id,
                "volantd_cmd": self.volantd_cmd, "qemu_vm": self.qemu_vm}

    def start(self) -> None:
        _run("ip", "netns", "add", self.netns)
        self.netns_made = True
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")
        self.state_dir.mkdir(parents=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "volant-chaos",
             str(self.state_dir))
        self.mounted = True
        self.start_daemon()

    def start_daemon(self, timeout: float = 30.0) -> None:
        """Start volantd (``ip netns exec`` execs it, so the PID is volantd's own)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *self.volantd_cmd], env=self.env,
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"volantd exited with {self.proc.returncode}:\n{self.logs()}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"volantd not healthy after {timeout}s:\n{self.logs()}")

    def kill9(self) -> int | None:
        """SIGKILL volantd (a crash: no cleanup of any kind); returns its PID."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        return pid

    def daemon_pid(self) -> int | None:
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid

    def logs(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def vmm_pids(self) -> list[int]:
        assert self.instance_id is not None
        return [p.pid for p in find_marked_processes(self.instance_id)]

    def teardown(self) -> list[str]:
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                problems.append("volantd ignored SIGTERM for 20 s and was killed")
        # VMMs outlive volantd by design: end the ones our daemon started, by PID.
        for pid in self.vmm_pids():
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.vmm_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.vmm_pids():
            problems.append(f"VMM processes still alive: {self.vmm_pids()}")
        if self.netns_made:
            result = subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                problems.append(f"netns {self.netns}: {result.stderr.strip()}")
        if self.mounted:
            result = subprocess.run(["umount", str(self.state_dir)], capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                problems.append(f"umount {self.state_dir}: {result.stderr.strip()}")
            else:
                self.mounted = False
        if not self.mounted:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        return problems
