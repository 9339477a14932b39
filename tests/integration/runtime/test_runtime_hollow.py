"""The launcher contract with real processes, using the hollow stand-in VMM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import trio
from runtime_helpers import Reaper, make_spec

from volant.runtime import (
    HOLLOW_BOOT_MARKER,
    HollowLauncher,
    LaunchError,
    StopStep,
    VMMIdentity,
    find_marked_processes,
    read_marker,
    stop_ladder,
)
from volant.runtime.base import read_start_time
from volant.runtime.qmp import QMPClient


async def wait_for_text(path: Path, text: str, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not (path.exists() and text in path.read_text(errors="replace")):
            await trio.sleep(0.01)


async def test_launch_creates_sockets_marker_and_boot_line(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    spec = make_spec(vm_dir, cmdline="console=ttyS0 volant.x=1")
    handle = reaper.add(await hollow.launch(spec))
    ident = handle.identity
    assert ident.kind == "hollow"
    assert ident.marker == "test0:vm1"
    assert read_marker(ident.pid) == "test0:vm1"
    assert ident.start_time == read_start_time(ident.pid)
    assert Path(ident.control_socket).exists()
    assert Path(ident.serial_socket).exists()
    # Own session: a signal to volantd's process group does not reach the VMM.
    assert os.getsid(ident.pid) == ident.pid
    await wait_for_text(spec.console_log, HOLLOW_BOOT_MARKER)
    assert "Command line: console=ttyS0 volant.x=1" in spec.console_log.read_text()
    # The identity round-trips through JSON, as the VM record stores it.
    assert VMMIdentity(**json.loads(json.dumps(attrs.asdict(ident)))) == ident
    # The serial socket is connectable.
    stream = await trio.open_unix_socket(ident.serial_socket)
    with trio.fail_after(5):
        banner = await stream.receive_some(100)
        await stream.send_all(b"ping")
        echoed = b""
        while b"ping" not in echoed:
            echoed += await stream.receive_some(100)
    assert b"vm1" in banner
    await stream.aclose()


async def test_sigkill_is_reported_promptly(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    assert handle.alive
    handle.send_signal(signal.SIGKILL)
    started = time.monotonic()
    with trio.fail_after(2):
        info = await handle.wait()
    assert time.monotonic() - started < 0.5
    assert info.signal == signal.SIGKILL
    assert info.returncode is None
    assert not info.clean
    assert not handle.alive
    # Reaped through the Popen object: no zombie is left.
    assert not Path(f"/proc/{handle.pid}").exists() or read_start_time(handle.pid) != (
        handle.identity.start_time
    )


async def test_two_waiters_both_see_the_exit(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    results = []

    async def waiter() -> None:
        results.append(await handle.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.sleep(0.05)
        handle.send_signal(signal.SIGTERM)
    assert len(results) == 2
    assert results[0] == results[1]
    assert results[0].clean  # the hollow VMM, like QEMU, exits 0 on SIGTERM


async def test_crash_after_is_detected(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    spec = make_spec(vm_dir, cmdline="console=ttyS0 hollow.crash_after=0.3")
    handle = reaper.add(await hollow.launch(spec))
    with trio.fail_after(5):
        info = await handle.wait()
    assert info.signal == signal.SIGABRT
    assert "simulated crash" in spec.console_log.read_text()


async def test_adopt_live_process(hollow: HollowLauncher, vm_dir: Path, reaper: Reaper) -> None:
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    adopted = hollow.adopt(handle.identity)
    assert adopted is not None
    reaper.add(adopted)
    assert adopted.alive
    assert not adopted.is_child
    adopted.send_signal(signal.SIGKILL)
    with trio.fail_after(2):
        info = await adopted.wait()
    # Not reaped by the adopted handle, so the status is unknown there ...
    assert info.returncode is None
    assert info.signal is None
    # ... while the original child handle reaps it and sees the signal.
    assert (await handle.wait()).signal == signal.SIGKILL


async def test_adopt_refuses_reused_pid_or_foreign_process(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    ident = handle.identity
    assert hollow.adopt(attrs.evolve(ident, start_time=ident.start_time + 1)) is None
    assert hollow.adopt(attrs.evolve(ident, marker="test0:other")) is None
    assert hollow.adopt(attrs.evolve(ident, marker="otherinstance:vm1")) is None
    assert hollow.adopt(attrs.evolve(ident, kind="qemu")) is None
    # Our own pytest process: live, but not carrying the marker.
    me = attrs.evolve(ident, pid=os.getpid(), start_time=read_start_time(os.getpid()))
    assert hollow.adopt(me) is None
    handle.send_signal(signal.SIGKILL)
    await handle.wait()
    assert hollow.adopt(ident) is None  # gone


async def test_stop_ladder_graceful_via_control_socket(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    spec = make_spec(vm_dir)
    handle = reaper.add(await hollow.launch(spec))
    result = await stop_ladder(hollow, handle, powerdown_timeout=5, term_timeout=5, kill_timeout=5)
    assert result.step == StopStep.POWERDOWN
    assert result.exit.clean
    assert not Path(handle.identity.control_socket).exists()
    assert not Path(handle.identity.serial_socket).exists()
    assert "power down requested via system_powerdown" in spec.console_log.read_text()


async def test_stop_ladder_sigterm_when_guest_ignores_powerdown(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    spec = make_spec(vm_dir, cmdline="hollow.ignore_powerdown=1")
    handle = reaper.add(await hollow.launch(spec))
    started = time.monotonic()
    result = await stop_ladder(
        hollow, handle, powerdown_timeout=0.5, term_timeout=5, kill_timeout=5
    )
    assert result.step == StopStep.SIGTERM
    assert result.exit.clean
    assert time.monotonic() - started >= 0.5
    assert "ignored by" in spec.console_log.read_text()


async def test_stop_ladder_ends_at_sigkill_when_sigterm_is_ignored(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    spec = make_spec(vm_dir, cmdline="hollow.ignore_powerdown=1 hollow.ignore_sigterm=1")
    handle = reaper.add(await hollow.launch(spec))
    result = await stop_ladder(
        hollow, handle, powerdown_timeout=0.2, term_timeout=0.3, kill_timeout=5
    )
    assert result.step == StopStep.SIGKILL
    assert result.exit.signal == signal.SIGKILL
    assert not Path(handle.identity.control_socket).exists()


async def test_stop_ladder_on_exited_process(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    handle.send_signal(signal.SIGKILL)
    await handle.wait()
    result = await stop_ladder(hollow, handle, powerdown_timeout=1, term_timeout=1, kill_timeout=1)
    assert result.step == StopStep.ALREADY_EXITED
    assert result.exit.signal == signal.SIGKILL


async def test_qmp_handshake_on_control_socket(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    async with await QMPClient.connect(handle.identity.control_socket) as qmp:
        assert qmp.greeting["version"]["package"] == "hollow-vmm"
        status = await qmp.execute("query-status")
        assert status["running"] is True
        assert (await qmp.execute("query-name"))["name"] == "vm1"


async def test_find_marked_processes_only_finds_our_instance(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    mine = [
        reaper.add(await hollow.launch(make_spec(vm_dir, name=n, instance_id="instA")))
        for n in ("vm-a", "vm-b")
    ]
    other = reaper.add(await hollow.launch(make_spec(vm_dir, name="vm-a", instance_id="instB")))
    found = find_marked_processes("instA")
    assert sorted((p.pid, p.vm_name, p.start_time) for p in found) == sorted(
        (h.pid, h.identity.marker.split(":")[1], h.identity.start_time) for h in mine
    )
    assert [p.pid for p in find_marked_processes("instB")] == [other.pid]
    assert find_marked_processes("inst") == []  # a prefix of an id is not a match


async def test_launch_failure_reports_the_log_and_leaves_nothing(
    vm_dir: Path, hollow_cache: Path
) -> None:
    # /bin/false exits at once without creating the control socket.
    launcher = HollowLauncher(binary=Path("/bin/false"), cache_dir=hollow_cache)
    spec = make_spec(vm_dir)
    with pytest.raises(LaunchError, match="exited during start"):
        await launcher.launch(spec)
    assert find_marked_processes("test0") == []


async def test_python_fallback_honours_the_contract(
    vm_dir: Path, hollow_cache: Path, reaper: Reaper
) -> None:
    launcher = HollowLauncher(cache_dir=hollow_cache, use_c=False)
    assert launcher.command()[0] == sys.executable
    spec = make_spec(vm_dir)
    handle = reaper.add(await launcher.launch(spec))
    assert read_marker(handle.pid) == "test0:vm1"
    await wait_for_text(spec.console_log, HOLLOW_BOOT_MARKER)
    result = await stop_ladder(
        launcher, handle, powerdown_timeout=5, term_timeout=5, kill_timeout=5
    )
    assert result.step == StopStep.POWERDOWN
    assert result.exit.clean


@pytest.mark.parametrize("use_c", [True, False], ids=["c", "python"])
async def test_boot_delay_holds_the_marker_back(
    vm_dir: Path, hollow_cache: Path, reaper: Reaper, use_c: bool
) -> None:
    """``hollow.boot_delay``: the VMM is up (sockets, marker env) before it 'boots'."""
    launcher = HollowLauncher(cache_dir=hollow_cache, use_c=use_c)
    spec = attrs.evolve(make_spec(vm_dir), cmdline="hollow.boot_delay=1.5")
    handle = reaper.add(await launcher.launch(spec))
    await trio.sleep(0.5)
    assert HOLLOW_BOOT_MARKER not in spec.console_log.read_text()
    with trio.fail_after(10):
        await wait_for_text(spec.console_log, HOLLOW_BOOT_MARKER)
    result = await stop_ladder(
        launcher, handle, powerdown_timeout=5, term_timeout=5, kill_timeout=5
    )
    assert result.step == StopStep.POWERDOWN


SURVIVOR = """
import json, sys, trio
from pathlib import Path
import attrs
from volant.runtime.base import LaunchSpec
from volant.runtime.hollow import HollowLauncher

async def main():
    run_dir = Path(sys.argv[1])
    spec = LaunchSpec(name="survivor", instance_id="instS", cpu_cores=1, memory_mb=64,
                      kernel=Path("/k"), initramfs=None, cmdline="", run_dir=run_dir,
                      console_log=run_dir / "console.log")
    handle = await HollowLauncher(cache_dir=Path(sys.argv[2])).launch(spec)
    print("IDENTITY", json.dumps(attrs.asdict(handle.identity)), flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


async def test_vmm_survives_the_death_of_its_launcher(
    hollow: HollowLauncher, vm_dir: Path, hollow_cache: Path, reaper: Reaper
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SURVIVOR, str(vm_dir / "survivor"), str(hollow_cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert parent.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.startswith(b"IDENTITY "):  # structlog may print first
                line = await trio.to_thread.run_sync(parent.stdout.readline)
                assert line, "the launcher process died before reporting"
        identity = VMMIdentity(**json.loads(line.removeprefix(b"IDENTITY ")))
        reaper.add_identity(identity)
        parent.kill()
        assert parent.wait(timeout=10) == -signal.SIGKILL
    finally:
        parent.kill()
        parent.wait()
    await trio.sleep(0.2)
    adopted = hollow.adopt(identity)
    assert adopted is not None, "the VMM died with the process that launched it"
    reaper.add(adopted)
    assert adopted.alive
    assert os.getsid(identity.pid) == identity.pid
    result = await stop_ladder(hollow, adopted, powerdown_timeout=5, term_timeout=5, kill_timeout=5)
    assert result.step == StopStep.POWERDOWN


async def test_handles_work_with_fd_numbers_above_1024(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper
) -> None:
    # Occupy low descriptors so the pidfd lands above select()'s 1024 limit.
    from volant.runtime.process import raise_fd_limit

    if raise_fd_limit() < 1200:
        pytest.fail("cannot raise RLIMIT_NOFILE above 1200 for this test")
    filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
        assert handle._pidfd is not None and handle._pidfd > 1024
        assert handle.alive
        handle.send_signal(signal.SIGKILL)
        with trio.fail_after(2):
            assert (await handle.wait()).signal == signal.SIGKILL
        assert not handle.alive
    finally:
        for fd in filler:
            os.close(fd)


async def test_launch_timeout_kills_the_process(
    vm_dir: Path, hollow_cache: Path, reaper: Reaper
) -> None:
    # A "VMM" that never creates its control socket.
    script = vm_dir / "hollow-vmm-stuck"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    launcher = HollowLauncher(binary=script, cache_dir=hollow_cache, ready_timeout=0.5)
    with pytest.raises(LaunchError, match="did not create"):
        await launcher.launch(make_spec(vm_dir, instance_id="stuck"))
    assert find_marked_processes("stuck") == []


async def test_vmm_environment_is_an_allow_list(
    hollow: HollowLauncher, vm_dir: Path, reaper: Reaper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOLANT_API_KEY", "s3cret")
    monkeypatch.setenv("VOLANT_VMM", "inherited:wrong")
    handle = reaper.add(await hollow.launch(make_spec(vm_dir)))
    environ = Path(f"/proc/{handle.pid}/environ").read_bytes().split(b"\0")
    assert not [e for e in environ if e.startswith(b"VOLANT_API_KEY=")]
    assert [e for e in environ if e.startswith(b"VOLANT_VMM=")] == [b"VOLANT_VMM=test0:vm1"]
    assert any(e.startswith(b"PATH=") for e in environ)
