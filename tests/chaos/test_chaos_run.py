"""Bounded ``volant-chaos`` runs: a healthy volantd survives, a broken one is caught.

Both run the real console entry point as a subprocess (its own volantd, hollow VMs, a
network namespace and a tmpfs it makes) and then check that nothing of that world is
left: no namespace, no mount, no directory (so no socket or file), no process whose
environment points into it, no VMM carrying its marker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netns import have_netns_privileges
from volant.runtime.base import find_marked_processes

BROKEN_VOLANTD = Path(__file__).with_name("broken_volantd.py")

pytestmark = [pytest.mark.chaos, pytest.mark.netns]


def run_harness(tmp_path: Path, *args: str, timeout: float = 400) -> tuple[int, dict[str, Any],
                                                                          str]:
    if not have_netns_privileges():
        pytest.fail("chaos runs need root and iproute2")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "volant.chaos.cli", "--report", str(report), *args],
        capture_output=True, text=True, timeout=timeout, check=False)
    assert report.exists(), f"no report; rc={result.returncode}\n{result.stderr[-4000:]}"
    return result.returncode, json.loads(report.read_text()), result.stderr


def processes_mentioning(text: str) -> list[int]:
    needle = text.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"{entry.path}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"{entry.path}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if needle in environ or needle in cmdline:
            found.append(int(entry.name))
    return found


def assert_nothing_leaked(world: dict[str, Any]) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
    assert world["netns"] not in namespaces
    with open("/proc/mounts") as fh:
        assert world["state_dir"] not in fh.read()
    assert not Path(world["base_dir"]).exists()
    assert not Path(world["socket"]).exists()
    assert find_marked_processes(world["instance_id"]) == []
    assert processes_mentioning(world["base_dir"]) == []


def test_bounded_run_with_volantd_kills_has_no_violations(tmp_path: Path) -> None:
    rc, report, stderr = run_harness(tmp_path, "--duration", "70", "--seed", "20261128",
                                     "--vms", "3", "--corrupt-probability", "0.3")
    assert report["violations"] == [], stderr[-4000:]
    assert rc == 0
    kinds = report["faults_by_kind"]
    assert kinds["kill_volantd"] >= 10, kinds
    assert len(kinds) >= 6, kinds  # kills plus a spread of the other faults
    assert all(f["time"] >= 0 and f["kind"] for f in report["faults"])
    assert sum(kinds.values()) == len(report["faults"])
    for invariant in ("vm_records_match_vmms", "no_unrecorded_vmm", "no_tap_without_vm",
                      "ips_unique_in_subnet", "restart_count_monotonic", "state_files_parse",
                      "sse_matches_journal", "converges_after_faults", "crashloop_is_honest"):
        assert report["checks"].get(invariant, 0) >= 1, invariant
    assert report["checks"]["vm_records_match_vmms"] >= kinds["kill_volantd"]
    assert_nothing_leaked(report["world"])


def test_bounded_run_with_a_real_qemu_vm_has_no_violations(tmp_path: Path) -> None:
    """Hollow VMs plus one QEMU guest (hello plugin, TCG) through volantd kills and faults.

    Seed 20261316 draws ``sigkill_qemu_vmm`` in the second window, so the guest reboots
    while volantd keeps being killed (adopted while still booting). The media come from
    volant-image's cache; a host that cannot build them fails the run (no report).
    """
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: apt-get install -y qemu-system-x86")
    rc, report, stderr = run_harness(
        tmp_path, "--qemu-vm", "--duration", "45", "--seed", "20261316", "--vms", "2",
        "--corrupt-probability", "0.3", "--converge-deadline", "90", timeout=300)
    assert report["violations"] == [], stderr[-4000:]
    assert rc == 0
    qemu = report["qemu_vm"]
    assert qemu["name"] == "chaos-qemu" and qemu["plugin"] == "hello"
    assert qemu["hypervisor"] == "qemu" and qemu["status"] == "running"
    assert qemu["agent_healthz"]["status"] == "ok"
    assert qemu["agent_healthz"]["workload"]["healthy"] is True
    assert qemu["agent_healthz"]["manifest"]["name"] == "hello"
    kinds = report["faults_by_kind"]
    assert kinds["kill_volantd"] >= 5, kinds
    assert kinds["sigkill_qemu_vmm"] >= 1, kinds
    checks = report["checks"]
    assert checks["qemu_agent_healthz"] == 1
    # Every volantd restart that found the QEMU process alive judged its adoption.
    assert checks["qemu_vm_adopted"] >= 3, checks
    judged = len(qemu["adopted_pids"]) + len(qemu["replaced_pids"]) + qemu["adoptions_excused"]
    assert judged == checks["qemu_vm_adopted"]
    assert checks["qemu_vm_restarted"] == len(qemu["vmm_kills"]) >= 1
    killed = {k["pid"] for k in qemu["vmm_kills"]}
    assert qemu["pid"] not in killed
    for invariant in ("vm_records_match_vmms", "no_unrecorded_vmm", "no_tap_without_vm",
                      "converges_after_faults", "sse_matches_journal"):
        assert checks.get(invariant, 0) >= 1, invariant
    assert report["world"]["qemu_vm"] == "chaos-qemu"
    assert_nothing_leaked(report["world"])


def test_a_volantd_that_leaks_taps_fails_the_run(tmp_path: Path) -> None:
    rc, report, stderr = run_harness(
        tmp_path, "--duration", "10", "--seed", "7", "--vms", "1", "--scenario", "vm-churn",
        "--settle", "2", "--volantd-cmd", f"{sys.executable} {BROKEN_VOLANTD}")
    assert rc == 1, stderr[-4000:]
    broken = {v["invariant"] for v in report["violations"]}
    assert broken == {"no_tap_without_vm"}, report["violations"]
    first = report["violations"][0]
    assert "exists but no VM owns it" in first["detail"]
    assert [f["kind"] for f in first["preceding_faults"]][-1] == "vm_churn"
    assert_nothing_leaked(report["world"])


def test_the_same_volantd_without_the_bug_passes_that_run(tmp_path: Path) -> None:
    """The control for the test above: same seed and scenario, the real volantd."""
    rc, report, stderr = run_harness(
        tmp_path, "--duration", "10", "--seed", "7", "--vms", "1", "--scenario", "vm-churn",
        "--settle", "2")
    assert report["violations"] == [], stderr[-4000:]
    assert rc == 0
    assert report["faults_by_kind"]["vm_churn"] >= 1
    assert_nothing_leaked(report["world"])
