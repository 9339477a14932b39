"""Workload supervision with real child processes (no VM)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kestrel_testutil import write_workload

from kestrel.children import ChildReaper
from kestrel.health import HealthMonitor
from kestrel.logring import LogRing
from kestrel.workload import Workload, WorkloadSpec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spec_for(tmp_path: Path, **env: str) -> WorkloadSpec:
    script = write_workload(tmp_path)
    port = env.setdefault("WPORT", str(free_port()))
    return WorkloadSpec(
        entrypoint=[sys.executable, str(script)],
        env=env,
        workdir=str(tmp_path),
        base_url=f"http://127.0.0.1:{port}",
    )


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_crashing_workload_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, WMODE="crash")

    def scenario() -> tuple[Workload, list[float], object]:
        reaper = ChildReaper(reap_all=False)
        reaper.start()
        ring = LogRing(100)
        workload = Workload(
            spec, reaper, ring, lambda _l: None, backoff_initial=0.1, backoff_max=0.4
        )
        runner = in_thread(workload.run)
        starts: list[float] = []
        last = 0
        deadline = time.monotonic() + 15
        while len(starts) < 5 and time.monotonic() < deadline:
            if workload.starts != last:
                last = workload.starts
                starts.append(time.monotonic())
            time.sleep(0.005)
        exit_before_stop = workload.last_exit
        workload.stop()
        runner.join(5)
        assert not runner.is_alive()
        return workload, starts, exit_before_stop

    workload, starts, exit_before_stop = scenario()
    assert workload.starts >= 5
    assert workload.restarts >= 4
    assert isinstance(exit_before_stop, dict) and exit_before_stop["code"] == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # backoff 0.1, 0.2, 0.4, 0.4 (capped): later gaps are clearly longer than the first
    assert gaps[2] > gaps[0] + 0.15
    assert gaps[3] < gaps[2] + 0.2  # the cap holds


def test_logs_are_captured_and_health_goes_green(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)

    def scenario() -> tuple[list[tuple[str, str]], dict[str, object], list[str], bool]:
        reaper = ChildReaper(reap_all=False)
        reaper.start()
        ring = LogRing(100)
        echoed: list[str] = []
        workload = Workload(spec, reaper, ring, echoed.append, stop_timeout=5)
        became_healthy: list[bool] = []
        health = HealthMonitor(workload, "/health", 1000, lambda: became_healthy.append(True))
        threads = [in_thread(workload.run), in_thread(health.run)]
        wait_until(lambda: health.current)
        lines = [(line.stream, line.line) for line in ring.tail()]
        status = health.status()
        code = workload.stop()
        health.stop()
        for thread in threads:
            thread.join(5)
            assert not thread.is_alive()
        assert code == -signal.SIGTERM
        return lines, status, echoed, bool(became_healthy)

    lines, status, echoed, announced = scenario()
    assert ("stderr", "a line on stderr") in lines
    assert any(stream == "stdout" and text.startswith("workload up") for stream, text in lines)
    assert "a line on stderr" in echoed  # echoed to the console too
    assert status["healthy"] is True and status["last_status"] == 200
    assert announced


def test_health_reports_failure_while_the_workload_is_not_serving(tmp_path: Path) -> None:
    # The workload runs but nothing listens on base_url: unhealthy, and the VM keeps going.
    spec = WorkloadSpec(
        entrypoint=[sys.executable, "-c", "import time; time.sleep(30)"],
        base_url=f"http://127.0.0.1:{free_port()}",
    )

    def scenario() -> dict[str, object]:
        reaper = ChildReaper(reap_all=False)
        reaper.start()
        workload = Workload(spec, reaper, LogRing(10), lambda _l: None, stop_timeout=5)
        health = HealthMonitor(workload, "/health", 300)
        threads = [in_thread(workload.run), in_thread(health.run)]
        wait_until(lambda: health.checks >= 2)
        status = health.status()
        assert workload.state == "running"
        workload.stop()
        health.stop()
        for thread in threads:
            thread.join(5)
        return status

    status = scenario()
    assert status["healthy"] is False
    assert "connect" in str(status["last_error"]).lower()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code_text = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring TERM', flush=True); time.sleep(60)"
    )
    spec = WorkloadSpec(entrypoint=[sys.executable, "-c", code_text])

    def scenario() -> tuple[int | None, float, str]:
        reaper = ChildReaper(reap_all=False)
        reaper.start()
        ring = LogRing(10)
        workload = Workload(spec, reaper, ring, lambda _l: None, stop_timeout=0.3)
        runner = in_thread(workload.run)
        wait_until(lambda: any("ignoring TERM" in line.line for line in ring.tail()))
        started = time.monotonic()
        code = workload.stop()
        elapsed = time.monotonic() - started
        runner.join(2)
        assert not runner.is_alive()
        return code, elapsed, workload.state

    code, elapsed, state = scenario()
    assert code == -signal.SIGKILL
    assert 0.25 <= elapsed < 3
    assert state == "stopped"


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code_text = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen(['sleep', '60']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); "
        "print('spawned', flush=True); time.sleep(60)"
    )
    spec = WorkloadSpec(entrypoint=[sys.executable, "-c", code_text])

    def scenario() -> int:
        reaper = ChildReaper(reap_all=False)
        reaper.start()
        ring = LogRing(10)
        workload = Workload(spec, reaper, ring, lambda _l: None, stop_timeout=5)
        runner = in_thread(workload.run)
        wait_until(lambda: any(line.line == "spawned" for line in ring.tail()))
        grandchild = int(pid_file.read_text())
        workload.stop()
        runner.join(5)
        return grandchild

    grandchild = scenario()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        try:
            stat = Path(f"/proc/{grandchild}/stat").read_text()
        except OSError:
            break
        if stat.split(") ", 1)[1].startswith("Z"):
            break  # dead, waiting for its (orphaned) parent's reaper
        time.sleep(0.05)
    else:
        os.kill(grandchild, signal.SIGKILL)
        raise AssertionError("grandchild survived the stop")


def test_missing_entrypoint_is_reported_and_retried(tmp_path: Path) -> None:
    spec = WorkloadSpec(entrypoint=[str(tmp_path / "does-not-exist")])

    def scenario() -> Workload:
        reaper = ChildReaper(reap_all=False)
        workload = Workload(spec, reaper, LogRing(10), lambda _l: None, backoff_initial=0.05)
        runner = in_thread(workload.run)
        wait_until(lambda: workload.restarts >= 2)
        workload.stop()
        runner.join(2)
        assert not runner.is_alive()
        return workload

    workload = scenario()
    assert workload.last_error is not None and "does-not-exist" in workload.last_error
    assert workload.state == "stopped"


def test_reaper_collects_orphans_without_stealing_a_supervised_status() -> None:
    def scenario() -> tuple[int | None, int, list[tuple[int, int]]]:
        reaper = ChildReaper(reap_all=True)
        reaper.start()
        # An unregistered child stands in for an orphan re-parented to PID 1.
        stray = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 5"], dict(os.environ))
        _process, exited = reaper.spawn(
            [sys.executable, "-c", "import sys, time; time.sleep(0.3); sys.exit(7)"]
        )
        code = exited.wait(10)
        wait_until(lambda: reaper.orphans_reaped >= 1)
        reaper.stop()
        return code, stray, list(reaper.recent_orphans)

    code, stray, orphans = scenario()
    assert code == 7  # the supervised child's own status, not lost to the blanket reaper
    assert (stray, 5) in orphans


def test_reaper_in_scoped_mode_leaves_other_children_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoped mode only ever waits for the children it spawned.

    The reaper's wait calls are recorded rather than inferred from the other child's fate:
    in a long test run, anything else in this process (e.g. subprocess's cleanup of a
    stale Popen whose pid was reused) could collect that child too.
    """
    calls: list[tuple[str, int, int]] = []
    real_waitpid, real_waitid = os.waitpid, os.waitid

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        calls.append(("waitpid", pid, options))
        return real_waitpid(pid, options)

    def waitid(idtype: int, ident: int, options: int) -> object:
        calls.append(("waitid", idtype, ident))
        return real_waitid(idtype, ident, options)

    reaper = ChildReaper(reap_all=False)
    reaper.start()
    other = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 4"], dict(os.environ))
    monkeypatch.setattr("kestrel.children.os.waitpid", waitpid)
    monkeypatch.setattr("kestrel.children.os.waitid", waitid)
    process, exited = reaper.spawn(["/bin/sh", "-c", "sleep 0.2; exit 2"])
    code = exited.wait(10)
    time.sleep(0.3)  # the other child is a zombie by now: the reaper must not touch it
    reaper.stop()
    monkeypatch.undo()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(other, 0)
    assert code == 2
    waited = {(kind, target) for kind, target, _ in calls if kind == "waitpid"}
    waited |= {(kind, ident) for kind, idtype, ident in calls
               if kind == "waitid" and idtype == os.P_PID}
    assert waited and all(target == process.pid for _kind, target in waited), calls
    assert not [c for c in calls if c[0] == "waitid" and c[1] != os.P_PID], calls


def test_stop_right_after_start_leaves_no_process_behind(tmp_path: Path) -> None:
    """stop() and the spawn exclude each other: a run that starts is always stopped."""
    spec = WorkloadSpec(entrypoint=[sys.executable, "-c", "import time; time.sleep(30)"])
    reaper = ChildReaper(reap_all=False)
    reaper.start()
    original = reaper.spawn
    spawned: list[int] = []

    def recording_spawn(argv: list[str], **kwargs: object) -> object:
        process, exited = original(argv, **kwargs)
        spawned.append(process.pid)
        return process, exited

    reaper.spawn = recording_spawn  # type: ignore[method-assign,assignment]
    for delay in (0.0, 0.001, 0.01, 0.05):
        spawned.clear()
        workload = Workload(spec, reaper, LogRing(10), lambda _l: None, stop_timeout=5)
        runner = in_thread(workload.run)
        time.sleep(delay)
        workload.stop()
        runner.join(5)
        assert not runner.is_alive()
        assert workload.state == "stopped"
        for pid in spawned:
            wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 5)


def test_a_child_that_cannot_start_is_no_orphan() -> None:
    """Popen collects a child whose exec failed; the reaper must not count it."""
    reaper = ChildReaper(reap_all=True)
    reaper.start()
    try:
        for _ in range(3):
            try:
                reaper.spawn(["/nonexistent/binary"])
            except OSError:
                pass
            else:
                raise AssertionError("spawn of a missing binary succeeded")
        _process, exited = reaper.spawn(["/bin/sh", "-c", "exit 3"])
        assert exited.wait(10) == 3
        assert reaper.orphans_reaped == 0
    finally:
        reaper.stop()
