"""``volant-chaos --target URL``: API-level faults against a volantd someone else runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_process import VolantdProcess

pytestmark = pytest.mark.chaos


def test_url_target_runs_only_api_faults_and_leaves_the_daemon_as_it_was(
        tmp_path: Path) -> None:
    daemon = VolantdProcess(tmp_path / "daemon").start()
    try:
        report_path = tmp_path / "report.json"
        result = subprocess.run(
            [sys.executable, "-m", "volant.chaos.cli", "--target", daemon.url,
             "--duration", "8", "--seed", "3", "--vms", "1", "--converge-deadline", "60",
             "--report", str(report_path)],
            capture_output=True, text=True, timeout=300, check=False)
        report = json.loads(report_path.read_text())
        assert report["violations"] == [], result.stderr[-4000:]
        assert result.returncode == 0
        assert report["target"] == "url"
        assert set(report["faults_by_kind"]) <= {"flood_api", "stall_sse", "vm_churn"}
        assert report["faults"], "no fault was injected"
        assert "kill_volantd" not in report["faults_by_kind"]
        host_checks = {"vm_records_match_vmms", "no_tap_without_vm", "state_files_parse"}
        assert not host_checks & set(report["checks"])
        assert report["checks"]["converges_after_faults"] == 1
        assert report["checks"]["crashloop_is_honest"] == 1
        with daemon.client() as client:
            assert client.get("/api/v1/vms").json() == []
            assert client.get("/api/v1/deployments").json() == []
            assert client.get("/api/v1/plugins/chaos").status_code == 404
    finally:
        daemon.stop()
        daemon.kill_vmms()
