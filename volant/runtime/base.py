"""The launcher protocol every VMM adapter implements, and the process plumbing they share.

A VMM is identified by three facts together: its pid, its start time (clock ticks since boot,
field 22 of ``/proc/<pid>/stat``) and a marker ``VOLANT_VMM=<instance_id>:<vm name>`` in its
environment. The pid alone is not enough (pids are reused); the start time proves it is the
same process; the marker proves it is ours (and which volantd instance owns it), so two daemons
on one host never touch each other's VMMs.

Exit detection is event-driven through a pidfd, which works for adopted processes that are not
our children (after a volantd restart) as well as for processes we spawned.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import select
import signal
import subprocess
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import trio

from volant.errors import UnavailableError, UnprocessableError, UpstreamError
from volant.logging import get_logger

MARKER_ENV = "VOLANT_VMM"
PROC = Path("/proc")

_log = get_logger("volant.runtime")


class RuntimeUnsupported(UnprocessableError):
    """The request needs something this host or this VMM cannot provide (422)."""


class LaunchError(UpstreamError):
    """The VMM process could not be started, or exited before it was ready (502)."""


class VMMStuckError(UnavailableError):
    """The VMM survived even SIGKILL within the timeout (e.g. stuck in uninterruptible sleep)."""


@attrs.frozen
class DiskSpec:
    path: Path
    readonly: bool
    id: str


@attrs.frozen(kw_only=True)
class LaunchSpec:
    """Everything a launcher needs to start one VMM; adapters only translate it to argv.

    ``disks[0]``, if any, is the root disk (``/dev/vda``). ``run_dir`` holds the VMM's
    sockets and its own log (``vmm.log``).
    """

    name: str
    instance_id: str
    cpu_cores: int
    memory_mb: int
    kernel: Path
    initramfs: Path | None
    cmdline: str
    run_dir: Path
    console_log: Path
    disks: tuple[DiskSpec, ...] = ()
    tap: str | None = None
    mac: str | None = None
    vsock_cid: int | None = None
    vfio_devices: tuple[str, ...] = ()
    accel: str = "auto"

    @property
    def marker(self) -> str:
        return make_marker(self.instance_id, self.name)

    @property
    def vmm_log(self) -> Path:
        """The VMM's own stdout/stderr (not the guest console)."""
        return self.run_dir / "vmm.log"


@attrs.frozen
class VMMIdentity:
    """What the VM record persists so a restarted volantd can find (and verify) its VMM."""

    pid: int
    start_time: int
    marker: str
    kind: str
    serial_socket: str
    control_socket: str
    console_log: str
    #: Size of the console log when this VMM was launched: its boot output starts there,
    #: so a volantd that adopts a VMM still booting waits for the marker of this boot.
    console_offset: int = 0


@attrs.frozen
class ExitInfo:
    """How a VMM ended. ``returncode`` is None when unknown (an adopted non-child)."""

    returncode: int | None
    signal: int | None

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and self.signal is None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitInfo:
        """Popen convention: a negative return code is the number of the killing signal."""
        if returncode < 0:
            return cls(returncode=None, signal=-returncode)
        return cls(returncode=returncode, signal=None)


@attrs.frozen
class MarkedProcess:
    pid: int
    vm_name: str
    start_time: int


class StopStep(enum.StrEnum):
    ALREADY_EXITED = "already-exited"
    POWERDOWN = "powerdown"
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"


@attrs.frozen
class StopResult:
    step: StopStep
    exit: ExitInfo


# --------------------------------------------------------------------------- marker & /proc


def instance_id_for(state_dir: Path) -> str:
    """The id of the volantd that owns ``state_dir``: stable across restarts, distinct per dir."""
    digest = hashlib.sha256(os.fsencode(Path(state_dir).resolve())).hexdigest()
    return digest[:16]


def make_marker(instance_id: str, vm_name: str) -> str:
    if ":" in instance_id or not instance_id:
        raise ValueError(f"instance id must be non-empty and contain no ':': {instance_id!r}")
    return f"{instance_id}:{vm_name}"


def parse_marker(marker: str) -> tuple[str, str] | None:
    """Split ``<instance_id>:<vm name>``; None if it is not one of our markers."""
    instance_id, sep, vm_name = marker.partition(":")
    if not sep or not instance_id or not vm_name:
        return None
    return instance_id, vm_name


def parse_stat(text: str) -> tuple[str, int]:
    """Return (state, start_time) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may contain spaces and parentheses, so fields are counted
    from the last ``)``: state is field 3, start time field 22.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def read_stat(pid: int, proc: Path = PROC) -> tuple[str, int] | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_stat(text)


def read_start_time(pid: int, proc: Path = PROC) -> int | None:
    stat = read_stat(pid, proc)
    return None if stat is None else stat[1]


def marker_from_environ(environ: bytes) -> str | None:
    prefix = MARKER_ENV.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def read_marker(pid: int, proc: Path = PROC) -> str | None:
    """The ``VOLANT_VMM`` value in the process's environment, or None (gone, zombie, not ours)."""
    try:
        environ = (proc / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return marker_from_environ(environ)


def find_marked_processes(instance_id: str, proc: Path = PROC) -> list[MarkedProcess]:
    """Every live process carrying this volantd instance's marker (for the orphan sweep)."""
    needle = f"{MARKER_ENV}={instance_id}:".encode()
    found: list[MarkedProcess] = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if needle not in environ:
            continue
        marker = marker_from_environ(environ)
        parsed = parse_marker(marker) if marker else None
        if parsed is None or parsed[0] != instance_id:
            continue
        pid = int(entry.name)
        stat = read_stat(pid, proc)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        found.append(MarkedProcess(pid=pid, vm_name=parsed[1], start_time=stat[1]))
    found.sort(key=lambda p: p.pid)
    return found


# --------------------------------------------------------------------------- handle


class VMMHandle:
    """A live VMM process: wait for its exit, signal it, ask whether it is alive.

    Holds a pidfd, so signals can never hit a recycled pid and waiting is a readable event
    on the trio loop. ``popen`` is set only for processes we spawned ourselves: those are
    reaped through it, which yields the real exit status and leaves no zombie.
    """

    def __init__(
        self, identity: VMMIdentity, pidfd: int, popen: subprocess.Popen[bytes] | None = None
    ) -> None:
        self.identity = identity
        self._pidfd: int | None = pidfd
        self._popen = popen
        self._exit: ExitInfo | None = None
        self._fd_waiter_active = False
        self._waiter_done = trio.Event()

    @property
    def pid(self) -> int:
        return self.identity.pid

    @property
    def is_child(self) -> bool:
        return self._popen is not None

    @property
    def exit_info(self) -> ExitInfo | None:
        """The exit, once ``wait()`` has observed it."""
        return self._exit

    @property
    def alive(self) -> bool:
        if self._exit is not None or self._pidfd is None:
            return False
        # poll, not select: with a thousand VMs the pidfd numbers exceed select's 1024 limit.
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return not poller.poll(0)

    def send_signal(self, sig: int) -> bool:
        """Signal the process; False if it has already exited."""
        if self._pidfd is None or self._exit is not None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    async def wait(self) -> ExitInfo:
        """Wait for the exit. Several tasks may wait at once (a crash watcher and a stop).

        Only one task can wait on the fd itself; the others wait on an event that is set
        when that task finishes or is cancelled, and then take over if needed.
        """
        while self._exit is None:
            if self._pidfd is None:
                raise RuntimeError("handle is closed")
            if self._fd_waiter_active:
                await self._waiter_done.wait()
                continue
            self._fd_waiter_active = True
            try:
                await trio.lowlevel.wait_readable(self._pidfd)
                self._exit = self._collect()
                self.close()
            finally:
                self._fd_waiter_active = False
                done, self._waiter_done = self._waiter_done, trio.Event()
                done.set()
        return self._exit

    def _collect(self) -> ExitInfo:
        if self._popen is None:
            return ExitInfo(returncode=None, signal=None)
        # The pidfd is readable, so the child has exited: this waitpid does not block.
        return ExitInfo.from_returncode(self._popen.wait())

    def close(self) -> None:
        """Release the pidfd (the process itself is left alone)."""
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
                trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def __del__(self) -> None:
        fd, self._pidfd = getattr(self, "_pidfd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"<VMMHandle {self.identity.kind} pid={self.pid} marker={self.identity.marker}>"


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def adopt_identity(identity: VMMIdentity, kind: str, proc: Path = PROC) -> VMMHandle | None:
    """A handle on the recorded process if it is still the same, live, marked process.

    The pidfd is opened *before* the checks: if the pid were recycled in between, the start
    time read afterwards would belong to the new process and the check would fail, so a
    handle is only returned when the pidfd provably refers to the recorded process.
    """
    if identity.kind != kind:
        return None
    pidfd = open_pidfd(identity.pid)
    if pidfd is None:
        return None
    ok = False
    try:
        stat = read_stat(identity.pid, proc)
        ok = (
            stat is not None
            and stat[0] not in ("Z", "X")
            and stat[1] == identity.start_time
            and read_marker(identity.pid, proc) == identity.marker
        )
    finally:
        if not ok:
            os.close(pidfd)
    if not ok:
        _log.info("adopt_refused", pid=identity.pid, marker=identity.marker)
        return None
    return VMMHandle(identity, pidfd)


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class Launcher(Protocol):
    kind: str

    async def launch(self, spec: LaunchSpec) -> VMMHandle:
        """Start the VMM detached; returns once its control socket accepts connections."""
        ...

    def adopt(self, identity: VMMIdentity) -> VMMHandle | None:
        """A handle on a recorded VMM, or None if it is gone or its pid was reused."""
        ...

    async def request_shutdown(self, handle: VMMHandle) -> bool:
        """Ask through the VMM's own API for a guest power-off; True if it was delivered."""
        ...

    def cleanup(self, identity: VMMIdentity) -> None:
        """Remove the sockets the VMM left behind (call once the process is gone)."""
        ...


def remove_stale(*paths: Path | str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def stop_ladder(
    launcher: Launcher,
    handle: VMMHandle,
    *,
    powerdown_timeout: float = 10.0,
    term_timeout: float = 5.0,
    kill_timeout: float = 5.0,
) -> StopResult:
    """Stop a VMM: its own API, then SIGTERM, then SIGKILL, each bounded by a timeout.

    The VMM's sockets are removed once the process is gone. Raises ``VMMStuckError`` if the
    process outlives SIGKILL's timeout (the handle stays usable for a later ``wait()``).
    """
    result = await _climb_ladder(
        launcher,
        handle,
        powerdown_timeout=powerdown_timeout,
        term_timeout=term_timeout,
        kill_timeout=kill_timeout,
    )
    launcher.cleanup(handle.identity)
    _log.info(
        "vmm_stopped",
        pid=handle.pid,
        marker=handle.identity.marker,
        step=str(result.step),
        returncode=result.exit.returncode,
        signal=result.exit.signal,
    )
    return result


async def _climb_ladder(
    launcher: Launcher,
    handle: VMMHandle,
    *,
    powerdown_timeout: float,
    term_timeout: float,
    kill_timeout: float,
) -> StopResult:
    if not handle.alive:
        return StopResult(StopStep.ALREADY_EXITED, await handle.wait())

    with trio.move_on_after(powerdown_timeout):
        delivered = False
        try:
            delivered = await launcher.request_shutdown(handle)
        except (OSError, UpstreamError) as exc:
            _log.info("vmm_powerdown_failed", pid=handle.pid, error=str(exc))
        if delivered:
            return StopResult(StopStep.POWERDOWN, await handle.wait())
    if not handle.alive:
        # It exited while the request was failing or timing out.
        return StopResult(StopStep.POWERDOWN, await handle.wait())

    for step, sig, timeout in (
        (StopStep.SIGTERM, signal.SIGTERM, term_timeout),
        (StopStep.SIGKILL, signal.SIGKILL, kill_timeout),
    ):
        handle.send_signal(sig)
        with trio.move_on_after(timeout):
            return StopResult(step, await handle.wait())
    raise VMMStuckError(
        f"VMM pid {handle.pid} did not exit within {kill_timeout}s of SIGKILL", pid=handle.pid
    )
