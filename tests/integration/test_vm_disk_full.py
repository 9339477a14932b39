"""A full state filesystem: requests are refused cleanly, facts are never lost.

volantd's state directory sits on a small tmpfs that the test fills to the last byte.
Found by ``volant-chaos``: a VMM crash reported while the disk was full was dropped
(its state write failed), so the VM showed ``running`` for good and was never restarted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_process import VolantdProcess, running_daemon
from tests.vmtools import create, get, install, kill, pid_alive, wait_status, write_plugin

TMPFS_SIZE = "32m"


@pytest.fixture
def state_tmpfs(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700",
                    "volant-test-full", str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


@pytest.fixture
def daemon(tmp_path: Path, state_tmpfs: Path) -> Iterator[VolantdProcess]:
    with running_daemon(tmp_path) as proc:
        yield proc


@contextlib.contextmanager
def disk_full(directory: Path) -> Iterator[Path]:
    """Fill ``directory``'s filesystem until ENOSPC; free it on exit."""
    filler = directory / "filler"
    try:
        with open(filler, "wb", buffering=0) as out:
            chunk = b"\0" * (1 << 20)
            while True:
                try:
                    out.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
            for size in (4096, 1):  # the last partial pages
                with contextlib.suppress(OSError):
                    while out.write(b"\0" * size):
                        pass
        yield filler
    finally:
        filler.unlink(missing_ok=True)


def running_vm(client: httpx.Client, tmp_path: Path, state: Path, name: str
               ) -> tuple[dict[str, Any], Path]:
    """A running VM of the demo plugin and the path of its state record."""
    install(client, write_plugin(tmp_path))
    return create(client, name), state / "vms" / name / "state.json"


def test_a_crash_during_a_full_disk_is_handled_once_the_disk_frees(
        daemon: VolantdProcess, tmp_path: Path, state_tmpfs: Path) -> None:
    with daemon.client() as client:
        vm, record_file = running_vm(client, tmp_path, state_tmpfs, "crashy")
        with disk_full(state_tmpfs):
            kill(vm["pid"])
            time.sleep(1.5)  # the crash report arrives and cannot be written
            assert get(client, "crashy")["restart_count"] == 0
        # The disk has room again: the crash is recorded and the policy restarts the VM.
        back = wait_status(client, "crashy", "running", timeout=20,
                           predicate=lambda v: v["pid"] not in (None, vm["pid"]))
        assert back["restart_count"] == 1 and pid_alive(back["pid"])
        record = json.loads(record_file.read_text())
        assert record["vmm"]["pid"] == back["pid"] and record["restart_count"] == 1


def test_a_request_that_cannot_be_written_is_refused_and_changes_nothing(
        daemon: VolantdProcess, tmp_path: Path, state_tmpfs: Path) -> None:
    with daemon.client() as client:
        vm, record_file = running_vm(client, tmp_path, state_tmpfs, "steady")
        before = record_file.read_bytes()
        with disk_full(state_tmpfs):
            answer = client.post("/api/v1/vms/steady/stop")
            assert answer.status_code == 507, answer.text
            assert "space" in answer.json()["error"]
            assert record_file.read_bytes() == before
        view = get(client, "steady")
        assert view["status"] == "running" and view["pid"] == vm["pid"]
        assert pid_alive(vm["pid"])
        # Nothing was half-done: a stop now works as usual.
        assert client.post("/api/v1/vms/steady/stop").status_code in (200, 202)
        wait_status(client, "steady", "stopped")
        assert not pid_alive(vm["pid"])
        with disk_full(state_tmpfs):
            answer = client.post("/api/v1/vms/steady/start")
            assert answer.status_code == 507, answer.text
            time.sleep(0.5)
            view = get(client, "steady")
            assert view["status"] == "stopped" and view["pid"] is None
            assert view["desired_state"] == "stopped"

