"""Benchmark of the state store: durable snapshot writes/s and bulk load time.

    .venv/bin/python bench/store.py [--json] [--dir DIR] [--seconds S]

Every write is the real thing: temp file, fsync, rename, fsync of the directory.
Run it on the filesystem that will hold the state dir (default: a temp dir under
/var/tmp, which is usually the root disk; /tmp may be tmpfs where fsync is free).
Target from issue 2: snapshot write with fsync >= 500/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from volant.store import SnapshotCodec, StateStore

VM_STATE = SnapshotCodec("vm-state", 1)
VM_CONFIG = SnapshotCodec("vm-config", 1)


def vm_state_document(index: int) -> dict[str, Any]:
    """A realistic runtime record (~1 KB of JSON), like a VM actor's state.json."""
    name = f"web-{index}"
    return {
        "name": name,
        "status": "running",
        "pid": 40000 + index,
        "pid_start_time": 1732766400123 + index,
        "cmdline_marker": f"volant-vm={name}",
        "ip": f"192.168.127.{index % 250 + 2}",
        "mac": f"02:00:00:00:{index // 256 % 256:02x}:{index % 256:02x}",
        "tap": f"vttap{index}",
        "cid": 3 + index,
        "restart_count": index % 3,
        "config_version": 4,
        "plugin": "nginx",
        "runtime": "qemu",
        "cpu_cores": 2,
        "memory_mb": 512,
        "kernel": "/var/lib/volant/kernel/bzImage",
        "initramfs": "/var/cache/volant/sha256/"
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "root_disk": f"/var/lib/volant/run/{name}/root.img",
        "serial_socket": f"/var/lib/volant/run/{name}/serial.sock",
        "qmp_socket": f"/var/lib/volant/run/{name}/qmp.sock",
        "console_log": f"/var/log/volant/{name}/console.log",
        "created_at": "2026-11-28T03:51:52.123456Z",
        "updated_at": "2026-11-28T03:52:07.654321Z",
        "last_exit": {"code": None, "signal": None, "at": None},
        "restart_policy": {"mode": "on-failure", "max_retries": 5, "backoff_ms": 500},
        "labels": {"team": "platform", "tier": "frontend", "deployment": "web"},
        "actions": ["restart", "reload", "logs"],
    }


def vm_config_document(index: int) -> dict[str, Any]:
    """A VM config people read (~1 KB of TOML)."""
    return {
        "name": f"web-{index}",
        "plugin": "nginx",
        "runtime": "qemu",
        "resources": {"cpu_cores": 2, "memory_mb": 512},
        "network": {"mode": "bridged", "bridge": "vbr0", "ip": f"192.168.127.{index % 250 + 2}"},
        "restart": {"policy": "on-failure", "max_retries": 5, "backoff_ms": 500},
        "env": {"NGINX_PORT": "80", "WORKERS": "2", "LOG_LEVEL": "info"},
        "cloud_init": {
            "user_data": "#cloud-config\nusers:\n  - name: ops\n    shell: /bin/sh\n" * 8,
        },
        "devices": {"vfio": []},
        "labels": {"team": "platform", "tier": "frontend"},
    }


def interleaved_rates(
    writers: list[Callable[[int], None]], seconds: float, batch: int = 20
) -> list[float]:
    """Writes/s of each writer, run in alternating batches for ``seconds`` in total.

    Alternating means a burst of disk contention from other processes hits all
    writers alike, so their ratio stays meaningful on a busy machine.
    """
    spent = [0.0] * len(writers)
    counts = [0] * len(writers)
    while sum(spent) < seconds or min(counts) < 10 * batch:
        for index, write in enumerate(writers):
            start = time.perf_counter()
            for _ in range(batch):
                write(counts[index])
                counts[index] += 1
            spent[index] += time.perf_counter() - start
    return [count / elapsed for count, elapsed in zip(counts, spent, strict=True)]


def raw_replace_writer(directory: Path, data: bytes) -> Callable[[int], None]:
    """The floor: the same syscalls as write_atomic with none of the store's work."""
    directory.mkdir(parents=True)

    def write(n: int) -> None:
        temp = directory / f".raw{n}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, directory / f"vm{n % 10}.json")
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dir_fd)
        os.close(dir_fd)

    return write


def filesystem_of(path: Path) -> str:
    """The mount (device and type) that holds ``path``, from /proc/mounts."""
    best = ("?", "?", "")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mountpoint, fstype, *_ = line.split()
                inside = str(path).startswith(mountpoint.rstrip("/") + "/")
                if inside and len(mountpoint) >= len(best[2]):
                    best = (device, fstype, mountpoint)
    except OSError:
        pass
    return f"{best[1]} ({best[0]} on {best[2]})"


def result(name: str, unit: str, target: float, measured: float, higher: bool) -> dict[str, Any]:
    ratio = measured / target if higher else target / measured
    return {
        "name": name,
        "unit": unit,
        "target": target,
        "measured": round(measured, 4),
        "ratio": round(ratio, 3),
        "higher_is_better": higher,
    }


def run(base: Path, seconds: float) -> list[dict[str, Any]]:
    store = StateStore(base / "state")

    # Ten VMs, each rewriting its own state.json (the owner pattern).
    docs = [vm_state_document(index) for index in range(10)]
    configs = [vm_config_document(index) for index in range(10)]
    raw = raw_replace_writer(base / "raw", VM_STATE.encode(docs[0], "json"))
    json_rate, toml_rate, raw_rate = interleaved_rates(
        [
            lambda n: store.write(f"vms/web-{n % 10}/state.json", VM_STATE, docs[n % 10]),
            lambda n: store.write(f"vms/web-{n % 10}/config.toml", VM_CONFIG, configs[n % 10]),
            raw,
        ],
        seconds * 3,
    )

    for index in range(10, 1000):
        store.write(f"vms/web-{index}/state.json", VM_STATE, vm_state_document(index))
    os.sync()
    start = time.perf_counter()
    loaded = store.load_all("vms", "*/state.json", VM_STATE)
    load_seconds = time.perf_counter() - start
    if len(loaded.documents) != 1000 or loaded.quarantined:
        raise SystemExit(f"load_all found {len(loaded.documents)} documents, expected 1000")

    return [
        result("snapshot_write_json_fsync", "writes/s", 500.0, json_rate, higher=True),
        result("snapshot_write_toml_fsync", "writes/s", 500.0, toml_rate, higher=True),
        result("json_write_vs_raw_syscalls", "fraction", 0.8, json_rate / raw_rate, higher=True),
        result("load_all_1000_json", "s", 0.5, load_seconds, higher=False),
    ]


def print_table(benchmarks: list[dict[str, Any]]) -> None:
    header = f"{'metric':<28} {'target':>16} {'measured':>16} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for bench in benchmarks:
        comparison = ">=" if bench["higher_is_better"] else "<="
        target = f"{comparison} {bench['target']:g} {bench['unit']}"
        measured = f"{bench['measured']:.4g} {bench['unit']}"
        mark = "" if bench["ratio"] >= 1 else "  (below target)"
        print(f"{bench['name']:<28} {target:>16} {measured:>16} {bench['ratio']:>7.2f}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where to create the scratch state dir (default /var/tmp)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each write test")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="volant-bench-store-", dir=args.dir))
    try:
        context = (
            f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
            f"python={platform.python_version()} fs={filesystem_of(base)} "
            f"date={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            f"# documents: JSON {len(VM_STATE.encode(vm_state_document(0), 'json'))} bytes, "
            f"TOML {len(VM_CONFIG.encode(vm_config_document(0), 'toml'))} bytes"
        )
        print(context, file=sys.stderr if args.json else sys.stdout)
        benchmarks = run(base, args.seconds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps({"benchmarks": benchmarks}, indent=2))
    else:
        print_table(benchmarks)


if __name__ == "__main__":
    main()
