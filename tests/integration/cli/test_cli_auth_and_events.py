"""API keys, and `events --follow` surviving a volantd restart without gaps or duplicates."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from tests.daemon_process import VolantdProcess
from tests.integration.cli.conftest import remove_all_vms
from tests.integration.cli.volar_run import VOLAR, volar
from tests.vmtools import create, install, write_plugin

KEY = "cli-test-key"


def test_api_key_flag_and_env(tmp_path: Path) -> None:
    daemon = VolantdProcess(tmp_path, env={"VOLANT_API_KEY": KEY}).start()
    try:
        volar(daemon.url, "vms", "list").assert_one_line_error("http 401")
        volar(daemon.url, "--api-key", "wrong", "vms", "list").assert_one_line_error("http 401")
        volar(daemon.url, "vms", "list", env={"VOLANT_API_KEY": "wrong"}
              ).assert_one_line_error("http 401")
        by_flag = volar(daemon.url, "--api-key", KEY, "vms", "list", "-o", "json")
        assert (by_flag.code, by_flag.json()) == (0, [])
        by_env = volar(daemon.url, "system", "info", "-o", "json", env={"VOLANT_API_KEY": KEY})
        assert by_env.code == 0 and by_env.json()["status"] == "ok"
        # Streams are guarded too, and their refusals read the same.
        volar(daemon.url, "events", "--follow").assert_one_line_error("http 401")
        volar(daemon.url, "vms", "logs", "x").assert_one_line_error("http 401")
        volar(daemon.url, "vms", "console", "x", stdin="").assert_one_line_error("http 401")
        with_key = volar(daemon.url, "--api-key", KEY, "vms", "logs", "x")
        with_key.assert_one_line_error("vm x not found")
    finally:
        # No VM was created, so nothing outlives it; a graceful stop costs ~5 s here.
        daemon.kill9()


def _reader(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _collect(lines: queue.Queue[str], seen: list[dict[str, Any]], until: Any,
             timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not until(seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"follower output so far: {seen}"
        try:
            seen.append(json.loads(lines.get(timeout=remaining)))
        except queue.Empty:
            continue


def _running(name: str) -> Any:
    return lambda seen: any(e["type"] == "VM_RUNNING" and e["name"] == name for e in seen)


def test_follow_resumes_across_a_daemon_restart(tmp_path: Path) -> None:
    daemon = VolantdProcess(tmp_path).start()
    follower: subprocess.Popen[str] | None = None
    try:
        with daemon.client() as client:
            install(client, write_plugin(tmp_path))
            create(client, "before")
        follower = subprocess.Popen(
            [*VOLAR, "--api", daemon.url, "events", "--follow", "--since", "0", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_reader, args=(follower.stdout, lines), daemon=True).start()
        seen: list[dict[str, Any]] = []
        _collect(lines, seen, _running("before"))

        daemon.kill9()
        time.sleep(1.5)  # long enough for the follower to notice and start retrying
        restarted = VolantdProcess(tmp_path)
        restarted.port = daemon.port
        restarted.env["VOLANT_API_LISTEN"] = f"127.0.0.1:{daemon.port}"
        daemon = restarted.start()
        with daemon.client() as client:
            create(client, "after")
        _collect(lines, seen, _running("after"))

        with daemon.client() as client:
            response = client.get("/api/v1/events/vms", params={"after": 0, "limit": 1000},
                                  headers={"Accept": "application/json"})
        expected = [e["id"] for e in response.json()["events"]]
        ids = [e["id"] for e in seen]
        assert ids == sorted(set(ids)), "duplicated or out-of-order ids"
        assert ids == expected[: len(ids)], "an event was lost"
        assert any(e["name"] == "after" for e in seen)
        follower.kill()
        follower.wait(5)
        assert follower.stderr is not None
        stderr = follower.stderr.read()
        assert "reconnecting" in stderr and "Traceback" not in stderr
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(5)
        remove_all_vms(daemon)
        daemon.stop()
