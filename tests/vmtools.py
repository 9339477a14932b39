"""Helpers for tests that drive VMs through a live volantd's API."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx


def write_plugin(tmp_path: Path, name: str = "demo", *, network: str = "bridged",
                 **extra: Any) -> dict[str, Any]:
    """A valid manifest whose initramfs is a small local file with its real checksum."""
    media = tmp_path / f"{name}-initramfs.img"
    media.write_bytes(b"not a real initramfs: the hollow VMM never reads it\n" * 64)
    digest = hashlib.sha256(media.read_bytes()).hexdigest()
    manifest: dict[str, Any] = {
        "schema_version": "1",
        "name": name,
        "version": "1.0.0",
        "runtime": name,
        "initramfs": {"url": str(media), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 128},
        "workload": {"type": "http", "base_url": "http://127.0.0.1:8000",
                     "entrypoint": ["/bin/true"]},
        "network": {"mode": network},
    }
    manifest.update(extra)
    return manifest


def install(client: httpx.Client, manifest: dict[str, Any]) -> None:
    response = client.post("/api/v1/plugins", json=manifest)
    assert response.status_code == 201, response.text


def create(client: httpx.Client, name: str, plugin: str = "demo", wait: str | None = "running",
           **body: Any) -> dict[str, Any]:
    params = {"wait": wait, "timeout": "60"} if wait else {}
    response = client.post("/api/v1/vms", json={"name": name, "plugin": plugin, **body},
                           params=params)
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    return view


def get(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/vms/{name}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def wait_status(client: httpx.Client, name: str, status: str, timeout: float = 30.0,
                predicate: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = get(client, name)
        if view["status"] == status and (predicate is None or predicate(view)):
            return view
        time.sleep(0.05)
    raise AssertionError(f"{name} did not reach {status}: last view {view}")


def events(client: httpx.Client, name: str | None = None, after: int | None = None
           ) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000}
    if name:
        params["name"] = name
    if after is not None:
        params["after"] = after
    response = client.get("/api/v1/events/vms", params=params,
                          headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def wait_event(client: httpx.Client, name: str, type_: str, timeout: float = 20.0,
               after: int = 0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events(client, name, after=after):
            if event["type"] == type_:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no {type_} for {name}; saw {[e['type'] for e in events(client, name)]}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
