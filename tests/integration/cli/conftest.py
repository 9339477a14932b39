"""One live volantd (hollow VMM) shared by the CLI tests of a module."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess
from tests.vmtools import write_plugin


def remove_all_vms(daemon: VolantdProcess) -> None:
    """VMMs are detached and outlive volantd by design: tests must destroy what they made.

    Deletes every VM (deployments first) through the API; if the daemon cannot do
    it, kills the VMM pids recorded in the daemon's VM views (ours, by PID).
    """
    pids: list[int] = []
    try:
        with daemon.client(timeout=60) as client:
            for deployment in client.get("/api/v1/deployments").json() or []:
                if isinstance(deployment, dict):
                    client.delete(f"/api/v1/deployments/{deployment['name']}")
            for vm in client.get("/api/v1/vms").json():
                pids.append(vm.get("pid") or 0)
                client.delete(f"/api/v1/vms/{vm['name']}")
            if not client.get("/api/v1/vms").json():
                return
    except Exception:
        pass
    for pid in pids:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VolantdProcess]:
    process = VolantdProcess(tmp_path_factory.mktemp("volantd")).start()
    try:
        yield process
    finally:
        remove_all_vms(process)
        process.stop()


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest file whose initramfs is named relative to the file."""
    directory = tmp_path_factory.mktemp("plugin")
    manifest = write_plugin(directory)
    manifest["initramfs"]["url"] = Path(manifest["initramfs"]["url"]).name
    path = directory / "demo.json"
    path.write_text(json.dumps(manifest))
    return path
