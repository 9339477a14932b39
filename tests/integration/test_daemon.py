import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.daemon_process import VolantdProcess


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_healthz_and_exits_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    daemon = VolantdProcess(tmp_path).start()
    try:
        answer = httpx.get(f"{daemon.url}/healthz", timeout=5).json()
        assert answer["status"] == "ok"
        daemon.signal(signum)
        assert daemon.proc is not None
        assert daemon.proc.wait(20) == 0
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.logs()


def test_unknown_route_is_json_404_with_request_id(tmp_path: Path) -> None:
    daemon = VolantdProcess(tmp_path).start()
    try:
        response = httpx.get(f"{daemon.url}/api/v1/nope", headers={"X-Request-Id": "abc-1"})
        assert response.status_code == 404
        assert "error" in response.json()
        assert response.headers["X-Request-Id"] == "abc-1"
    finally:
        daemon.stop()


def test_invalid_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "volant.daemon"],
        env={"PATH": "/usr/bin:/bin", "VOLANT_SUBNET": "fd00::/64",
             "VOLANT_STATE_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "VOLANT_SUBNET" in lines[0]
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 60


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = VolantdProcess(tmp_path / "a").start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "volant.daemon"],
            env={**first.env, "VOLANT_STATE_DIR": str(tmp_path / "b")},
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
    finally:
        first.stop()


def test_keep_alive_survives_answers_that_ignore_the_body(tmp_path: Path) -> None:
    """An early error answer must not leave the connection waiting for the unread body."""
    daemon = VolantdProcess(tmp_path).start()
    try:
        with httpx.Client(base_url=daemon.url, timeout=3) as client:
            for _ in range(20):
                assert client.post("/api/v1/plugins/nope/enabled",
                                   json={"enabled": True}).status_code == 404
                assert client.post("/api/v1/vms/x/actions/demo/nope",
                                   content=b"[1]").status_code == 404
                assert client.get("/healthz").status_code == 200
    finally:
        daemon.close()
