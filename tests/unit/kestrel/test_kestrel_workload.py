"""Workload supervision with real child processes (no VM)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import time
from pathlib import Path

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


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_crashing_workload_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, WMODE="crash")

    async def scenario() -> tuple[Workload, list[float], object]:
        reaper = ChildReaper(reap_all=False)
        ring = LogRing(100)
        workload = Workload(
            spec, reaper, ring, lambda _l: None, backoff_initial=0.1, backoff_max=0.4
        )
        tasks = [asyncio.ensure_future(reaper.run()), asyncio.ensure_future(workload.run())]
        starts: list[float] = []
        last = 0
        deadline = time.monotonic() + 15
        while len(starts) < 5 and time.monotonic() < deadline:
            if workload.starts != last:
                last = workload.starts
                starts.append(time.monotonic())
            await asyncio.sleep(0.005)
        exit_before_stop = workload.last_exit
        await workload.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return workload, starts, exit_before_stop

    workload, starts, exit_before_stop = asyncio.run(scenario())
    assert workload.starts >= 5
    assert workload.restarts >= 4
    assert isinstance(exit_before_stop, dict) and exit_before_stop["code"] == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # backoff 0.1, 0.2, 0.4, 0.4 (capped): later gaps are clearly longer than the first
    assert gaps[2] > gaps[0] + 0.15
    assert gaps[3] < gaps[2] + 0.2  # the cap holds


def test_logs_are_captured_and_health_goes_green(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)

    async def scenario() -> tuple[list[tuple[str, str]], dict[str, object], list[str], bool]:
        reaper = ChildReaper(reap_all=False)
        ring = LogRing(100)
        echoed: list[str] = []
        workload = Workload(spec, reaper, ring, echoed.append, stop_timeout=5)
        became_healthy: list[bool] = []
        health = HealthMonitor(workload, "/health", 1000, lambda: became_healthy.append(True))
        tasks = [asyncio.ensure_future(c) for c in (reaper.run(), workload.run(), health.run())]
        await wait_until(lambda: health.current)
        lines = [(line.stream, line.line) for line in ring.tail()]
        status = health.status()
        code = await workload.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert code == -signal.SIGTERM
        return lines, status, echoed, bool(became_healthy)

    lines, status, echoed, announced = asyncio.run(scenario())
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

    async def scenario() -> dict[str, object]:
        reaper = ChildReaper(reap_all=False)
        workload = Workload(spec, reaper, LogRing(10), lambda _l: None, stop_timeout=5)
        health = HealthMonitor(workload, "/health", 300)
        tasks = [asyncio.ensure_future(c) for c in (reaper.run(), workload.run(), health.run())]
        await wait_until(lambda: health.checks >= 2)
        status = health.status()
        assert workload.state == "running"
        await workload.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return status

    status = asyncio.run(scenario())
    assert status["healthy"] is False
    assert "connect" in str(status["last_error"]).lower()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code_text = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring TERM', flush=True); time.sleep(60)"
    )
    spec = WorkloadSpec(entrypoint=[sys.executable, "-c", code_text])

    async def scenario() -> tuple[int | None, float, str]:
        reaper = ChildReaper(reap_all=False)
        ring = LogRing(10)
        workload = Workload(spec, reaper, ring, lambda _l: None, stop_timeout=0.3)
        tasks = [asyncio.ensure_future(reaper.run()), asyncio.ensure_future(workload.run())]
        await wait_until(lambda: any("ignoring TERM" in line.line for line in ring.tail()))
        started = time.monotonic()
        code = await workload.stop()
        elapsed = time.monotonic() - started
        await asyncio.wait_for(tasks[1], 2)
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return code, elapsed, workload.state

    code, elapsed, state = asyncio.run(scenario())
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

    async def scenario() -> int:
        reaper = ChildReaper(reap_all=False)
        ring = LogRing(10)
        workload = Workload(spec, reaper, ring, lambda _l: None, stop_timeout=5)
        tasks = [asyncio.ensure_future(reaper.run()), asyncio.ensure_future(workload.run())]
        await wait_until(lambda: any(line.line == "spawned" for line in ring.tail()))
        grandchild = int(pid_file.read_text())
        await workload.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return grandchild

    grandchild = asyncio.run(scenario())
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

    async def scenario() -> Workload:
        reaper = ChildReaper(reap_all=False)
        workload = Workload(spec, reaper, LogRing(10), lambda _l: None, backoff_initial=0.05)
        task = asyncio.ensure_future(workload.run())
        await wait_until(lambda: workload.restarts >= 2)
        await workload.stop()
        await asyncio.wait_for(task, 2)
        return workload

    workload = asyncio.run(scenario())
    assert workload.last_error is not None and "does-not-exist" in workload.last_error
    assert workload.state == "stopped"


def test_reaper_collects_orphans_without_stealing_a_supervised_status() -> None:
    async def scenario() -> tuple[int, int, list[tuple[int, int]]]:
        reaper = ChildReaper(reap_all=True)
        task = asyncio.ensure_future(reaper.run())
        # An unregistered child stands in for an orphan re-parented to PID 1.
        stray = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 5"], dict(os.environ))
        _process, exited = reaper.spawn(
            [sys.executable, "-c", "import sys, time; time.sleep(0.3); sys.exit(7)"]
        )
        code = await asyncio.wait_for(exited, 10)
        await wait_until(lambda: reaper.orphans_reaped >= 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return code, stray, list(reaper.recent_orphans)

    code, stray, orphans = asyncio.run(scenario())
    assert code == 7  # the supervised child's own status, not lost to the blanket reaper
    assert (stray, 5) in orphans


def test_reaper_in_scoped_mode_leaves_other_children_alone() -> None:
    async def scenario() -> tuple[int, int]:
        reaper = ChildReaper(reap_all=False)
        task = asyncio.ensure_future(reaper.run())
        other = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 4"], dict(os.environ))
        _process, exited = reaper.spawn(["/bin/sh", "-c", "sleep 0.2; exit 2"])
        code = await asyncio.wait_for(exited, 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return code, other

    code, other = asyncio.run(scenario())
    assert code == 2
    # Not collected by kestrel: its owner (this test) still gets the status.
    _pid, status = os.waitpid(other, 0)
    assert os.waitstatus_to_exitcode(status) == 4
